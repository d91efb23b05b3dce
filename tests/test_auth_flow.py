"""The one authenticated call path (connectors/auth.py, ``Records.send``): each outbound call
carries the credential where the platform's scheme says, and on the CRM's "session expired"
renews once and sends that call again, so that multi-call operations, bulk and the passthrough
never redo work already done. The HTTP layer holds no renewal of its own."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from yarl import URL

from conftest import SalesforceSim
from crmgate.connectors.auth import Access, AuthScheme
from crmgate.connectors.errors import SessionExpired
from crmgate.connectors.salesforce import SalesforceConnector
from test_salesforce_records import run

SRC = Path(__file__).resolve().parents[1] / "src" / "crmgate"


def session_of(sim: SalesforceSim) -> str:
    user = sim.simulator.add_user(f"flow{len(sim.simulator.users)}@acme.example", "pw")
    return sim.simulator.issue_session(user)


def test_each_scheme_puts_the_token_where_it_says() -> None:
    url = URL("https://crm.example/v1/deals?start=0")
    assert AuthScheme().apply("t", url, {})[1] == {"Authorization": "Bearer t"}
    zoho = AuthScheme(scheme="Zoho-oauthtoken")
    assert zoho.apply("t", url, {})[1]["Authorization"] == "Zoho-oauthtoken t"
    header = AuthScheme(kind="header", name="x-api-token")
    assert header.apply("t", url, {"Accept": "x"})[1] == {"Accept": "x", "x-api-token": "t"}
    assert header.header_names() == {"authorization", "x-api-token"}
    basic = AuthScheme(kind="basic").apply("key_1", url, {})[1]["Authorization"]
    assert base64.b64decode(basic.removeprefix("Basic ")) == b"key_1:"
    query_url, headers = AuthScheme(kind="query", name="api_token").apply("t", url, {})
    assert query_url.query == {"start": "0", "api_token": "t"} and headers == {}
    with pytest.raises(ValueError, match="needs a name"):
        AuthScheme(kind="header")


def test_a_path_scheme_puts_the_token_as_segments_after_its_prefix() -> None:
    """A webhook whose secret is in its path (Bitrix24: /rest/<user>/<code>/<method>)."""
    scheme = AuthScheme(kind="path", name="/rest/")
    url = URL("https://acme.example/rest/crm.contact.list?start=50")
    sent, headers = scheme.apply("1/s3cr3t", url, {"Accept": "x"})
    assert str(sent) == "https://acme.example/rest/1/s3cr3t/crm.contact.list?start=50"
    assert headers == {"Accept": "x"} and "Authorization" not in headers
    assert str(scheme.apply("/1/s3cr3t/", URL("https://acme.example/rest/m"), {})[0]).endswith(
        "/rest/1/s3cr3t/m"
    )
    elsewhere = URL("https://acme.example/oauth/token/")  # a path outside the prefix: as it is
    assert scheme.apply("1/s3cr3t", elsewhere, {})[0] == elsewhere
    with pytest.raises(ValueError, match="needs a name"):
        AuthScheme(kind="path")


def test_an_expired_session_is_renewed_once_for_all_calls_of_a_request(
    salesforce: SalesforceSim,
) -> None:
    renewals: list[str] = []

    async def work(connector: SalesforceConnector) -> list[int]:
        contact = connector.platform.entities["contact"]

        async def renewal() -> Access:
            renewals.append("renewed")
            return Access(URL(salesforce.base_url), session_of(salesforce))

        access = connector.session(
            "oAuth-internal",
            {"instance_url": salesforce.base_url, "access_token": session_of(salesforce)},
            {},
            renewal,
        )
        salesforce.simulator.expire_sessions()
        # five calls of one request notice the expiry at once: one renewal serves them all
        counts = await asyncio.gather(*(connector.records.count(access, contact) for _ in range(5)))
        counts.append(await connector.records.count(access, contact))  # the new token is kept
        return counts

    counts = run(salesforce, work)
    assert len(set(counts)) == 1
    assert renewals == ["renewed"]


def test_a_session_renewed_in_vain_is_the_crms_last_word(salesforce: SalesforceSim) -> None:
    renewals: list[str] = []

    async def work(connector: SalesforceConnector) -> None:
        async def renewal() -> Access:
            renewals.append("renewed")
            stale = session_of(salesforce)
            salesforce.simulator.expire_sessions()  # the new token is refused too
            return Access(URL(salesforce.base_url), stale)

        access = connector.session(
            "oAuth-internal",
            {"instance_url": salesforce.base_url, "access_token": session_of(salesforce)},
            {},
            renewal,
        )
        salesforce.simulator.expire_sessions()
        contact = connector.platform.entities["contact"]
        with pytest.raises(SessionExpired):
            await connector.records.count(access, contact)
        with pytest.raises(SessionExpired):  # and later calls do not renew again
            await connector.records.count(access, contact)

    run(salesforce, work)
    assert renewals == ["renewed"]


def test_without_a_renewal_an_expired_session_is_unauthorized(salesforce: SalesforceSim) -> None:
    async def work(connector: SalesforceConnector) -> None:
        access = connector.session(
            "oAuth-external-refresh",
            {"instance_url": salesforce.base_url, "access_token": session_of(salesforce)},
            {},
        )
        salesforce.simulator.expire_sessions()
        with pytest.raises(SessionExpired):
            await connector.records.count(access, connector.platform.entities["contact"])

    run(salesforce, work)


def test_the_passthrough_renews_per_call_and_sends_the_clients_request_again(
    salesforce: SalesforceSim,
) -> None:
    async def work(connector: SalesforceConnector) -> int:
        async def renewal() -> Access:
            return Access(URL(salesforce.base_url), session_of(salesforce))

        access = connector.session(
            "oAuth-internal",
            {"instance_url": salesforce.base_url, "access_token": session_of(salesforce)},
            {},
            renewal,
        )
        salesforce.simulator.expire_sessions()
        answer = await connector.records.passthrough(
            access, "GET", "sobjects", [("Authorization", "Bearer the-clients-own")], None
        )
        return answer.status

    assert run(salesforce, work) == 200


def test_the_http_layer_knows_no_session_renewal() -> None:
    for path in (SRC / "api").rglob("*.py"):
        text = path.read_text()
        for word in ("SessionExpired", "renew(", ".renew", "refresh("):
            assert word not in text, f"{path.relative_to(SRC)} holds {word!r}"


def test_a_credential_the_crm_echoes_in_its_refusal_is_not_repeated() -> None:
    from aiohttp import web

    from crmgate.connectors.base import Connector
    from crmgate.connectors.catalogue import load_descriptors
    from crmgate.connectors.errors import CredentialsRejected
    from crmgate.outbound import Outbound
    from test_paging import _free_port

    canary = "canary-token-0123456789"

    async def refuse(request: web.Request) -> web.Response:
        said = request.headers["Authorization"].removeprefix("Bearer ")
        return web.Response(status=401, text=f"invalid token {said}")

    async def go() -> str:
        port = _free_port()
        app = web.Application()
        app.router.add_get("/me", refuse)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        platform = next(p for p in load_descriptors() if p.type == "HubSpot")
        outbound = Outbound(
            allowed_networks=["127.0.0.0/8"], plain_http_hosts=[f"127.0.0.1:{port}"]
        )
        base = URL(f"http://127.0.0.1:{port}")
        try:
            await Connector(platform, outbound).checked(Access(base, canary), base / "me")
        except CredentialsRejected as refused:
            return refused.message
        finally:
            await outbound.close()
            await runner.cleanup()
        raise AssertionError("not refused")

    message = asyncio.run(go())
    assert "invalid token" in message and canary not in message
