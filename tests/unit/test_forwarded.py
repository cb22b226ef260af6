"""Which client address the ingress records behind a reverse proxy."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from sms_replies.ingest.forwarded import client_address
from sms_replies.settings import Settings

PROXY = (ip_network("172.28.0.10/32"),)


def test_a_direct_peer_keeps_its_address_whatever_it_claims() -> None:
    assert client_address("203.0.113.7", "198.51.100.1", PROXY) == "203.0.113.7"


def test_the_proxy_s_last_entry_is_the_client() -> None:
    # Everything left of the last entry was written by the client itself.
    forwarded = "6.6.6.6, 198.51.100.1"
    assert client_address("172.28.0.10", forwarded, PROXY) == "198.51.100.1"


def test_no_trusted_proxy_means_the_header_is_never_believed() -> None:
    assert client_address("172.28.0.10", "198.51.100.1", ()) == "172.28.0.10"


def test_a_garbled_header_from_the_proxy_falls_back_to_the_peer() -> None:
    assert client_address("172.28.0.10", "not-an-address", PROXY) == "172.28.0.10"


def test_trusted_proxies_setting_names_a_bad_entry() -> None:
    with pytest.raises(ValueError, match="not-a-network"):
        Settings.load(trusted_proxies="10.0.0.1,not-a-network")
    settings = Settings.load(trusted_proxies="10.0.0.1, 172.28.0.0/24")
    assert settings.trusted_proxies == ["10.0.0.1", "172.28.0.0/24"]
