"""Campaign attribution: our callback URL's ``campaign`` and ``tag`` reach the reply."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.unit.test_ingress_security import (  # the in-memory ingress of the security tests
    CALLBACK,
    MemoryPublisher,
    assert_json_error,
    publisher,
    serve,
    signed,
)

from sms_replies.bounds import Bounds, check_part
from sms_replies.errors import InvalidCallback
from sms_replies.ingest.app import CALLBACK_PATH
from sms_replies.ingest.parsing import Attribution, parse_attribution, parse_callback
from sms_replies.records import RawPart, RecordDecodeError
from sms_replies.streams.reassembly import accept

__all__ = ["publisher", "serve"]  # fixtures, re-exported for pytest

NOW = 1_764_000_000_000


def test_campaign_and_tag_are_read_from_the_query() -> None:
    query = [("token", "t"), ("campaign", "spring-A"), ("tag", " wave 2 ")]
    assert parse_attribution(query) == Attribution(campaign="spring-A", tag="wave 2")
    assert parse_attribution([("token", "t")]) == Attribution()
    assert parse_attribution([("campaign", ""), ("tag", "   ")]) == Attribution()
    assert parse_attribution([("campaign", "x" * 64)]).campaign == "x" * 64


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ([("campaign", "x" * 65)], "campaign"),
        ([("tag", "a\x00b")], "tag"),
        ([("campaign", "spring\nA")], "campaign"),
        ([("campaign", "été")], "campaign"),
        ([("tag", "a\u202eb")], "tag"),  # a bidi override: not printable ASCII
        ([("campaign", "a"), ("campaign", "b")], "campaign"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(
    query: list[tuple[str, str]], problem: str
) -> None:
    with pytest.raises(InvalidCallback) as info:
        parse_attribution(query)
    assert info.value.status == 400
    assert list(info.value.problems) == [problem]


def test_the_part_carries_the_attribution_and_the_provider_fields_do_not() -> None:
    part = parse_callback(CALLBACK, NOW, attribution=Attribution("spring-A", "t1"))
    assert (part.campaign, part.tag) == ("spring-A", "t1")
    # A provider field of the same name (in its body) is not ours: ignored.
    part = parse_callback({**CALLBACK, "campaign": "theirs", "tag": "theirs"}, NOW)
    assert (part.campaign, part.tag) == (None, None)


def _long_parts(attributions: list[Attribution]) -> list[RawPart]:
    total = len(attributions)
    return [
        parse_callback(
            {
                **CALLBACK,
                "messageId": f"m-{n}",
                "concat": "true",
                "concat-ref": "5",
                "concat-total": str(total),
                "concat-part": str(n),
            },
            NOW + n,
            attribution=attribution,
        )
        for n, attribution in enumerate(attributions, start=1)
    ]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_a_long_reply_takes_them_from_its_first_part(order: tuple[int, ...]) -> None:
    parts = _long_parts(
        [Attribution("spring-A", "t1"), Attribution("spring-A", "t1"), Attribution("other", None)]
    )
    pending = None
    replies = []
    for i in order:
        step = accept(pending, parts[i])
        pending, replies = step.pending, [*replies, *step.replies]
    (reply,) = replies
    assert (reply.campaign, reply.tag) == ("spring-A", "t1")


def test_the_attribution_is_not_part_of_the_reply_identity() -> None:
    (plain,) = accept(None, parse_callback(CALLBACK, NOW)).replies
    (attributed,) = accept(
        None, parse_callback(CALLBACK, NOW, attribution=Attribution("spring-A"))
    ).replies
    assert plain.reply_id == attributed.reply_id
    assert attributed.campaign == "spring-A"


def test_the_worker_checks_raw_records_again() -> None:
    part = parse_callback(CALLBACK, NOW)
    check_part(dataclasses.replace(part, campaign="spring-A", tag="x"), Bounds())
    for bad in ("x" * 65, "a\x00b", "été"):
        with pytest.raises(RecordDecodeError, match="campaign"):
            check_part(dataclasses.replace(part, campaign=bad), Bounds())


# -- through the ingress -------------------------------------------------------


async def test_the_ingress_keeps_campaign_and_tag_of_its_url(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve()
    ours = {"campaign": "spring-A", "tag": "wave-2"}
    assert (await client.get(CALLBACK_PATH, params={**CALLBACK, **ours})).status == 200
    # POST: ours in the URL; the provider's body may hold fields of the same name.
    response = await client.post(
        CALLBACK_PATH, params=ours, json={**CALLBACK, "messageId": "m-2", "tag": "provider's"}
    )
    assert response.status == 200
    assert (await client.post(CALLBACK_PATH, json={**CALLBACK, "messageId": "m-3"})).status == 200
    assert [(p.campaign, p.tag) for p in publisher.parts] == [
        ("spring-A", "wave-2"),
        ("spring-A", "wave-2"),
        (None, None),
    ]


async def test_a_bad_campaign_is_a_400_naming_it_and_is_audited(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve()
    response = await client.get(CALLBACK_PATH, params={**CALLBACK, "campaign": "x" * 65})
    body = await assert_json_error(response, 400)
    assert list(body["problems"]) == ["campaign"]
    assert not publisher.parts
    assert [r["status"] for r in publisher.rejects] == [400]


async def test_campaign_and_tag_are_outside_the_signed_set(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve(signature_secret="sig-secret", signature_method="sha256")
    params = signed({**CALLBACK, "timestamp": str(int(time.time()))})  # the provider's fields
    ours = {"token": "x", "campaign": "spring-A", "tag": "t"}
    assert (await client.get(CALLBACK_PATH, params={**params, **ours})).status == 200
    assert (await client.post(CALLBACK_PATH, params=ours, data=params)).status == 200
    # A provider's own 'tag' field is signed like any other field it sends.
    theirs = signed({**CALLBACK, "tag": "p", "timestamp": str(int(time.time()))})
    assert (await client.post(CALLBACK_PATH, params=ours, json=theirs)).status == 200
    tampered = {**theirs, "tag": "changed"}
    await assert_json_error(await client.post(CALLBACK_PATH, params=ours, json=tampered), 401)
    assert [p.campaign for p in publisher.parts] == ["spring-A"] * 3
