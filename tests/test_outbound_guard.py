"""The outbound guard (SSRF): crmgate calls only public addresses, or the networks an operator
allows, and connects to the address it checked. Each attack is sent as a client would send it,
with a listener on the target proving that nothing reached it."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import ValidationError
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
from crmgate.connectors.catalogue import Catalogue
from crmgate.connectors.salesforce import SalesforceConnector
from crmgate.outbound import (
    Outbound,
    OutboundFailed,
    OutboundRefused,
    address_allowed,
    check_url,
    plain_http_host,
)
from crmgate.settings import Settings
from crmsim.salesforce import SalesforceSimulator, platform_overrides
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


# ---- plain http, to the hosts an operator lists ------------------------------------------------

CLIENT_ID, CLIENT_SECRET = "plain-http-client", "plain-http-secret"
APP = "X-API2CRM-APPLICATION-KEY"


@dataclass
class PlainSim:
    """A Salesforce simulator served over plain http on loopback (no TLS at all)."""

    simulator: SalesforceSimulator
    base_url: str  # http://127.0.0.1:PORT

    @property
    def host(self) -> str:
        return URL(self.base_url).raw_authority

    def settings(
        self,
        directory: Path,
        database: Database,
        plain: list[str],
        extra_hosts: tuple[str, ...] = (),
        **extra: Any,
    ) -> Settings:
        """Settings with Salesforce pointed at this simulator over http, ``plain`` the
        operator's plain-http hosts and ``extra_hosts`` more hosts Salesforce may have."""
        oauth = {"token_url": f"{self.base_url}/services/oauth2/token"}
        entry = {
            "login_url": self.base_url,
            "instance_hosts": [self.host, *extra_hosts],
            "oauth": oauth,
        }
        result = make_settings(
            directory,
            database.url,
            platform_overrides={"Salesforce": entry},
            outbound_plain_http_hosts=plain,
            oauth_clients={"Salesforce": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}},
            **extra,
        )
        migrate_database(result)
        return result

    def credential(self, *, refresh: bool = False) -> dict[str, str]:
        user = self.simulator.add_user(f"u{len(self.simulator.users)}@acme.example", "pw")
        credential = {
            "instance_url": self.base_url,
            "access_token": self.simulator.issue_session(user),
        }
        if refresh:
            credential["refresh_token"] = self.simulator.issue_refresh_token(user)
        return credential


@pytest.fixture
def plain_sim() -> Iterator[PlainSim]:
    simulator = SalesforceSimulator(org_name="Plain Corp (sim)")
    with RunningSimulator(simulator.app(), None) as running:
        assert running.base_url.startswith("http://")
        yield PlainSim(simulator, running.base_url)


@pytest.fixture
def other_listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.close()


def connect(
    client: httpx.Client, credential: dict[str, str], authorization: str = "oAuth-external-refresh"
) -> httpx.Response:
    return client.post(
        "/v1/application",
        json={"type": "Salesforce", "authorization": authorization, "credential": credential},
    )


def test_a_crm_over_plain_http_is_reached_when_the_operator_lists_its_host(
    tmp_path: Path, database: Database, plain_sim: PlainSim
) -> None:
    settings = plain_sim.settings(tmp_path / "plain", database, plain=[plain_sim.host])
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = connect(client, plain_sim.credential())
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        shown = client.get(f"/v1/application/{key}").json()
        assert shown["credential"]["instance_url"] == plain_sim.base_url  # the scheme is kept
        listed = client.get("/v1/application/entity/contact/list", headers={APP: key})
        assert listed.status_code == 200, listed.text
        passthrough = client.post(
            "/v1/application/request",
            headers={APP: key},
            json={"method": "GET", "path": "sobjects/Contact/describe"},
        )
        assert passthrough.json()["status_code"] == 200, passthrough.text[:200]
    paths = [path for _, path in plain_sim.simulator.calls]
    assert any(path.endswith("/query") for path in paths), paths
    assert any(path.endswith("/sobjects/Contact/describe") for path in paths), paths


def test_a_token_endpoint_over_plain_http_refreshes_when_its_host_is_listed(
    tmp_path: Path, database: Database, plain_sim: PlainSim
) -> None:
    settings = plain_sim.settings(tmp_path / "plain", database, plain=[plain_sim.host])
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = connect(client, plain_sim.credential(refresh=True), "oAuth-internal")
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        plain_sim.simulator.expire_sessions()
        counted = client.get("/v1/application/entity/contact/count", headers={APP: key})
        assert counted.status_code == 200, counted.text
        # the token answer's instance_url is http too, and kept so
        shown = client.get(f"/v1/application/{key}").json()
        assert shown["credential"]["instance_url"] == plain_sim.base_url
    assert ("POST", "/services/oauth2/token") in plain_sim.simulator.calls


def test_plain_http_is_refused_unless_the_exact_host_and_port_are_listed(
    tmp_path: Path,
    database: Database,
    plain_sim: PlainSim,
    listener: Listener,
    other_listener: Listener,
) -> None:
    """Salesforce may have every host below (so only the plain-http list decides), the listed
    ones are 127.0.0.1 on the simulator's and the listener's ports: nothing else goes."""
    port, other = listener.port, other_listener.port
    refused = {
        f"http://127.0.0.1:{other}": "plain http",  # the host is listed, not with this port
        f"http://localhost:{port}": "plain http",  # the same machine by another name
        f"http://127.0.0.1.evil.test:{port}": "plain http",  # a look-alike
        f"http://crm.internal.evil.test:{port}": "plain http",  # a look-alike of a listed name
        f"http://xcrm.internal:{port}": "plain http",
        f"http://user:pw@127.0.0.1:{port}": "credentials",  # userinfo, on a listed host
        f"http://127.0.0.1:{port}@crm.internal:{port}": "credentials",
        f"ftp://127.0.0.1:{port}": "only https",
    }
    settings = plain_sim.settings(
        tmp_path / "plain",
        database,
        plain=[plain_sim.host, f"127.0.0.1:{port}", f"crm.internal:{port}"],
        extra_hosts=(
            f"127.0.0.1:{other}",
            f"localhost:{port}",
            f"127.0.0.1.evil.test:{port}",
            f"crm.internal.evil.test:{port}",
            f"xcrm.internal:{port}",
            f"127.0.0.1:{port}",
            f"crm.internal:{port}",
        ),
    )
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        for url, reason in refused.items():
            answer = connect(client, {**plain_sim.credential(), "instance_url": url})
            assert answer.status_code == 422, (url, answer.text)
            detail = answer.json()["detail"]
            assert detail["code"] == "NOT_VALID" and reason in detail["message"], (url, detail)
        assert not plain_sim.simulator.calls
        # the listed simulator, on the same gateway, is reached
        assert connect(client, plain_sim.credential()).status_code == 201
    assert listener.connections == 0 and other_listener.connections == 0
    assert list(plain_sim.simulator.calls) == [("GET", "/services/oauth2/userinfo")]


def test_a_listed_host_still_needs_its_network_allowed(
    tmp_path: Path, database: Database, plain_sim: PlainSim
) -> None:
    settings = plain_sim.settings(
        tmp_path / "plain", database, plain=[plain_sim.host], outbound_allowed_networks=[]
    )
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        refused = connect(client, plain_sim.credential())
    assert refused.status_code == 403, refused.text
    assert "may not call" in refused.json()["detail"]["message"]
    assert not plain_sim.simulator.calls


@pytest.mark.parametrize(
    "plain",
    [[], ["127.0.0.1"], ["127.0.0.1:1"]],
    ids=["no-longer-listed", "host-without-port", "another-port"],
)
def test_a_stored_http_application_whose_host_is_no_longer_listed_is_refused_at_every_call(
    tmp_path: Path, database: Database, plain_sim: PlainSim, plain: list[str]
) -> None:
    settings = plain_sim.settings(tmp_path / "plain", database, plain=[plain_sim.host])
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = connect(client, plain_sim.credential()).json()["key"]
    calls = len(plain_sim.simulator.calls)
    narrowed = settings.model_copy(update={"outbound_plain_http_hosts": plain})
    with RunningGateway(create_app(narrowed)) as gateway, gateway.client(admin.key) as client:
        answers = [
            client.get("/v1/application/entity/contact/list", headers={APP: key}),
            client.get("/v1/application/entity/contact/count", headers={APP: key}),
            client.post(
                "/v1/application/request",
                headers={APP: key},
                json={"method": "GET", "path": "sobjects/Contact/describe"},
            ),
        ]
    for answer in answers:  # as for any instance URL the operator no longer allows
        assert answer.status_code == 401, answer.text
        detail = answer.json()["detail"]
        assert detail["code"] == "UNAUTHORIZED" and "plain http" in detail["message"], detail
        assert "PUT /v1/application/" in detail["message"]
    assert len(plain_sim.simulator.calls) == calls


def test_the_client_itself_refuses_plain_http_to_a_host_not_listed(
    listener: Listener, other_listener: Listener
) -> None:
    """``Outbound.request``, where every call passes, checks the scheme again: a URL that never
    went through ``check_url`` still goes nowhere in clear text."""

    async def call(url: str) -> str:
        outbound = Outbound(
            allowed_networks=["127.0.0.0/8"], plain_http_hosts=[f"127.0.0.1:{listener.port}"]
        )
        try:
            await outbound.request("GET", URL(url))
        except (OutboundRefused, OutboundFailed) as error:
            return type(error).__name__
        finally:
            await outbound.close()
        return "answered"

    assert asyncio.run(call(f"http://127.0.0.1:{other_listener.port}/")) == "OutboundRefused"
    assert asyncio.run(call(f"http://localhost:{listener.port}/")) == "OutboundRefused"
    assert asyncio.run(call(f"ws://127.0.0.1:{listener.port}/")) == "OutboundRefused"
    assert other_listener.connections == 0 and listener.connections == 0
    # the listed host and port is called (the listener hangs up: a failure, after connecting;
    # aiohttp tries a GET once more on a fresh connection)
    assert asyncio.run(call(f"http://127.0.0.1:{listener.port}/")) == "OutboundFailed"
    assert listener.connections >= 1


def test_check_url_takes_http_only_for_a_listed_host_and_port() -> None:
    plain = {plain_http_host("crm.internal"), plain_http_host("[fd00::5]:8080")}
    patterns = ["crm.internal", "crm.internal:8080", "[fd00::5]:8080", "*.example.com"]
    assert check_url("http://crm.internal/", patterns, plain).port == 80
    assert check_url("http://CRM.Internal./", patterns, plain).scheme == "http"
    assert check_url("https://crm.internal/", patterns, plain).port == 443  # https still goes
    for refused, listed in (
        ("http://crm.internal:8080/", plain),  # listed without a port: 80 only
        ("http://a.example.com/", plain),  # fits the platform's hosts, not the list
        ("http://crm.internal/", set()),  # nothing listed: https only
    ):
        with pytest.raises(OutboundRefused, match="plain http"):
            check_url(refused, patterns, listed)


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("http://crm.internal", "not a URL or a path"),
        ("crm.internal/api", "not a URL or a path"),
        ("*.internal", "no *"),
        ("crm.*.internal", "no *"),
        ("user@crm.internal", "a host or host:port"),
        ("crm.internal:0", "a port from 1 to 65535"),
        ("crm.internal:65536", "a port from 1 to 65535"),
        ("crm.internal:http", "a host or host:port"),
        ("fd00::5", "a host or host:port (an IPv6 address in brackets)"),
        ("[crm.internal]", "only an IPv6 address goes in brackets"),
        ("2130706433", "dotted decimal"),
        ("crm internal", "not a host name"),
        ("", "a host or host:port"),
    ],
)
def test_a_wrong_plain_http_host_stops_the_gateway_at_start(
    monkeypatch: pytest.MonkeyPatch, entry: str, complaint: str
) -> None:
    monkeypatch.setenv("CRMGATE_OUTBOUND_PLAIN_HTTP_HOSTS", json.dumps([entry]))
    with pytest.raises(ValidationError, match=re.escape(complaint)) as raised:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "outbound_plain_http_hosts" in str(raised.value)


def test_plain_http_hosts_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = ["crm.internal", "10.20.0.5:8080", "[fd00::5]:8080"]
    monkeypatch.setenv("CRMGATE_OUTBOUND_PLAIN_HTTP_HOSTS", json.dumps(entries))
    assert Settings(_env_file=None).outbound_plain_http_hosts == entries  # type: ignore[call-arg]
    assert Settings(_env_file=None, outbound_plain_http_hosts=[]).outbound_plain_http_hosts == []  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://crm.internal.example", "http://crm.internal.example"),
        ("HTTP://CRM.Internal.Example.:80/", "http://crm.internal.example"),
        ("http://crm.internal.example:8080", "http://crm.internal.example:8080"),
        ("https://crm.internal.example:8080", "https://crm.internal.example:8080"),
        ("http://[fd00::5]:8080", "http://[fd00::5]:8080"),
        ("https://[fd00::5]:8443/", "https://[fd00::5]:8443"),
    ],
)
def test_an_instance_url_keeps_its_scheme_and_only_its_address(url: str, kept: str) -> None:
    patterns = [
        "crm.internal.example",
        "crm.internal.example:8080",
        "[fd00::5]:8080",
        "[fd00::5]:8443",
    ]
    overrides = {"Salesforce": {"instance_hosts": patterns}}
    platform = Catalogue.load(["salesforce"], overrides).get("Salesforce")
    assert platform is not None
    plain = ["crm.internal.example", "crm.internal.example:8080", "[fd00::5]:8080"]
    connector = SalesforceConnector(platform, Outbound(plain_http_hosts=plain))
    assert str(connector.instance_url(url)) == kept
