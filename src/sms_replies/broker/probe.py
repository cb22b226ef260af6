"""Is the broker there? One metadata round trip, with a short timeout."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from sms_replies.errors import BrokerUnavailable

#: A broker that answers later than this is down for a health check.
PROBE_TIMEOUT_S = 2.0


async def metadata_round_trip(client: AIOKafkaClient, within: float = PROBE_TIMEOUT_S) -> None:
    """Ask the cluster's metadata over ``client``; :class:`BrokerUnavailable` if no answer."""
    try:
        # Every topic: asking for one topic would create it on Tansu.
        await asyncio.wait_for(client.fetch_all_metadata(), within)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"no metadata from the broker: {exc!r}") from None


async def check_broker(bootstrap: str) -> None:
    """A fresh connection to ``bootstrap`` and one metadata round trip."""
    within = PROBE_TIMEOUT_S
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(within * 1000))
    try:
        try:
            await asyncio.wait_for(client.bootstrap(), within)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"broker {bootstrap} unreachable: {exc!r}") from None
        await metadata_round_trip(client, within)
    finally:
        await client.close()
