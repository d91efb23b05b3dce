"""The outbound guard (SSRF): crmgate calls only public addresses, or the networks an operator
allows, and connects to the address it checked. Each attack is sent as a client would send it,
with a listener on the target proving that nothing reached it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from yarl import URL

from conftest import (
    Database,
    RunningGateway,
    SalesforceSim,
    create_account,
    make_settings,
    migrate_database,
)
from crmgate.api.app import create_app
from crmgate.outbound import Outbound, OutboundRefused, address_allowed
from crmsim.salesforce import platform_overrides
from crmsim.server import RunningSimulator

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # CGNAT
        ("0.0.0.0", False),  # noqa: S104
        ("224.0.0.1", False),
        ("192.0.2.1", False),  # documentation
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:169.254.169.254", False),
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("not an address", False),
        ("168.63.129.16", False),  # Azure's host services
        ("192.0.0.192", False),  # Oracle Cloud's metadata
        ("fec0::1", False),
        ("3fff::1", False),
        ("64:ff9b::a9fe:a9fe", False),  # DNS64 for 169.254.169.254
        ("64:ff9b::808:808", True),  # DNS64 for 8.8.8.8: an IPv6-only host reaches CRMs
        ("8.8.8.8", True),
        ("::ffff:8.8.8.8", True),
        ("2001:4860:4860::8888", True),
    ],
)
def test_only_public_addresses_are_called(address: str, public: bool) -> None:
    assert address_allowed(address) is public


def test_the_operators_networks_are_allowed_and_nothing_more() -> None:
    assert address_allowed("127.0.0.1", LOOPBACK) and address_allowed("::ffff:127.0.0.2", LOOPBACK)
    assert not address_allowed("10.0.0.1", LOOPBACK) and not address_allowed("::1", LOOPBACK)


class Listener:
    """A TCP port on loopback that counts the connections made to it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.close()


def test_instance_urls_aimed_inward_are_refused_and_nothing_is_reached(
    tmp_path: Path, database: Database, salesforce: SalesforceSim, listener: Listener
) -> None:
    """The operator lets Salesforce's hosts include loopback names (a misconfiguration, or a
    self-hosted CRM's), but allows no private network: every address form of loopback is refused
    before a connection is made."""
    port = listener.port
    overrides = platform_overrides(salesforce.base_url)
    hosts = [
        f"127.0.0.1:{port}",
        f"localhost:{port}",  # a name that resolves to loopback
        f"2130706433:{port}",  # 127.0.0.1 in decimal
        f"0x7f.1:{port}",
        f"127.1:{port}",
    ]
    overrides["Salesforce"]["instance_hosts"] = [*overrides["Salesforce"]["instance_hosts"], *hosts]
    settings = make_settings(
        tmp_path / "guard",
        database.url,
        platform_overrides=overrides,
        outbound_ca_file=salesforce.ca_file,
        outbound_allowed_networks=[],
    )
    migrate_database(settings)
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        for host in hosts:
            refused = client.post(
                "/v1/application",
                json={
                    "type": "Salesforce",
                    "authorization": "oAuth-external-refresh",
                    "credential": {"instance_url": f"https://{host}", "access_token": "t"},
                },
            )
            assert refused.status_code in (403, 422), (host, refused.text)
            reason = refused.json()["detail"]["message"]
            assert "may not call" in reason or "dotted decimal" in reason, reason
    assert listener.connections == 0


def test_a_stored_application_whose_address_is_no_longer_allowed_is_refused_at_every_call(
    tmp_path: Path, database: Database, salesforce: SalesforceSim
) -> None:
    settings = make_settings(
        tmp_path / "stored",
        database.url,
        platform_overrides=platform_overrides(salesforce.base_url),
        outbound_ca_file=salesforce.ca_file,
    )
    migrate_database(settings)
    admin = create_account(settings)
    user = salesforce.simulator.add_user("guard@acme.example", "pw", name="Gia Guard")
    credential = {
        "instance_url": salesforce.base_url,
        "access_token": salesforce.simulator.issue_session(user),
    }
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = client.post(
            "/v1/application",
            json={
                "type": "Salesforce",
                "authorization": "oAuth-external-refresh",
                "credential": credential,
            },
        ).json()["key"]
    # the operator stops allowing loopback: the application now points at a refused address
    narrowed = settings.model_copy(update={"outbound_allowed_networks": []})
    calls = len(salesforce.simulator.calls) if hasattr(salesforce.simulator, "calls") else None
    with RunningGateway(create_app(narrowed)) as gateway, gateway.client(admin.key) as client:
        listed = client.get(
            "/v1/application/entity/contact/list", headers={"X-API2CRM-APPLICATION-KEY": key}
        )
    assert listed.status_code == 403 and listed.json()["detail"]["code"] == "NOT_ALLOWED"
    assert "may not call" in listed.json()["detail"]["message"]
    if calls is not None:
        assert len(salesforce.simulator.calls) == calls


def test_redirects_are_never_followed(listener: Listener, certificates: object) -> None:
    """An allowed host that answers with a redirect inward: the answer is the redirect itself."""

    async def inward(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"https://127.0.0.1:{listener.port}/latest/meta-data/")

    app = web.Application()
    app.router.add_get("/{tail:.*}", inward)

    async def call(base: str, ca_file: str) -> int:
        outbound = Outbound(ca_file=ca_file, allowed_networks=["127.0.0.0/8"])
        try:
            return (await outbound.request("GET", URL(base) / "x")).status
        finally:
            await outbound.close()

    from crmsim.tls import Certificates

    assert isinstance(certificates, Certificates)
    with RunningSimulator(app, certificates) as running:
        status = asyncio.run(call(running.base_url, str(certificates.ca_file)))
    assert status == 302 and listener.connections == 0


def test_an_address_in_the_url_is_checked_without_resolving() -> None:
    async def call(url: str) -> None:
        outbound = Outbound()
        try:
            await outbound.request("GET", URL(url))
        finally:
            await outbound.close()

    for url in ("https://127.0.0.1/", "https://[::1]/", "https://169.254.169.254/latest/"):
        with pytest.raises(OutboundRefused):
            asyncio.run(call(url))
