"""The OAuth authorization flow through crmgate, with Salesforce played by the simulator: an HTTP
client stands in for the browser and follows the redirects, keeping cookies, as a browser would."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from conftest import (
    Account,
    Database,
    RunningGateway,
    SalesforceSim,
    create_account,
    loopback_socket,
    make_settings,
    migrate_database,
)
from crmgate.api.app import create_app
from crmgate.settings import Settings
from crmgate.store.db import for_writing

CLIENT_ID = "crmgate-flow-client"
CLIENT_SECRET = "flow-secret-" + secrets.token_hex(8)
DONE = "https://app.example/crm/connected"
APP = "X-API2CRM-APPLICATION-KEY"


@dataclass
class Flow:
    gateway: RunningGateway
    admin: Account
    sim: SalesforceSim
    settings: Settings

    def browser(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=self.sim.ca_file)
        return httpx.Client(trust_env=False, timeout=20, verify=context)

    def walk(self, browser: httpx.Client, url: str) -> httpx.Response:
        """Follow redirects like a browser until one leaves for the client's site."""
        response = browser.get(url)
        for _ in range(10):
            location = response.headers.get("location")
            if response.status_code != 302 or location is None or location.startswith(DONE):
                return response
            response = browser.get(location)
        raise AssertionError("too many redirects")


def fragment(response: httpx.Response) -> dict[str, str]:
    location = response.headers["location"]
    assert location.startswith(DONE + "#"), location
    return {k: v[0] for k, v in parse_qs(location.split("#", 1)[1]).items()}


@pytest.fixture
def flow(tmp_path: Path, database: Database, salesforce: SalesforceSim) -> Iterator[Flow]:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    salesforce.simulator.add_connected_app(
        CLIENT_ID,
        CLIENT_SECRET,
        [f"{base}/authorization/oauth/Salesforce/callback"],
        require_pkce=True,
    )
    settings = make_settings(
        tmp_path / "data",
        database.url,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
        public_url=base,
        oauth_clients={
            "Salesforce": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirects": [DONE],
            }
        },
    )
    migrate_database(settings)
    admin = create_account(settings)
    salesforce.simulator.add_user("owner@acme.example", "pw", name="Olive Owner")
    salesforce.simulator.auto_approve_user = "owner@acme.example"
    with RunningGateway(create_app(settings), bound) as gateway:
        yield Flow(gateway, admin, salesforce, settings)


def test_contract_mode_returns_the_tokens_in_the_fragment_and_they_connect(flow: Flow) -> None:
    with flow.browser() as browser:
        start = browser.get(
            f"{flow.gateway.base_url}/authorization/oauth/Salesforce/authorize",
            params={"redirect": DONE},
        )
        assert start.status_code == 302
        assert start.headers["cache-control"] == "no-store"
        assert start.headers["referrer-policy"] == "no-referrer"
        to_crm = httpx.URL(start.headers["location"])
        assert to_crm.params["code_challenge_method"] == "S256" and to_crm.params["state"]
        assert to_crm.params["prompt"] == "consent"  # no silent approval of someone's link
        cookie = start.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        done = flow.walk(browser, start.headers["location"])
    result = fragment(done)
    assert set(result) == {"instance_url", "access_token", "refresh_token"}
    assert "?" not in done.headers["location"].split("#")[0].removeprefix(DONE)
    body = {"type": "Salesforce", "authorization": "oAuth-internal", "credential": result}
    with flow.gateway.client(flow.admin.key) as client:
        created = client.post("/v1/application", json=body)
        assert created.status_code == 201, created.text
        listed = client.get(
            "/v1/application/entity/user/list", headers={APP: created.json()["key"]}
        )
    assert listed.status_code == 200


def test_application_mode_creates_the_application_and_returns_only_its_key(
    flow: Flow,
) -> None:
    with flow.gateway.client(flow.admin.key) as client:
        session = client.post(
            "/v1/oauth/session",
            json={"type": "Salesforce", "redirect": DONE, "description": "via the flow"},
        )
        assert session.status_code == 201, session.text
        authorize_url = session.json()["authorize_url"]
    with flow.browser() as browser:
        done = flow.walk(browser, authorize_url)
        result = fragment(done)
        assert set(result) == {"application_key"}
        again = browser.get(authorize_url)  # the session is single-use
    assert again.status_code == 400 and "location" not in again.headers
    with flow.gateway.client(flow.admin.key) as client:
        app = client.get(f"/v1/application/{result['application_key']}").json()
        assert app["authorization"] == "oAuth-internal" and app["description"] == "via the flow"
        assert app["me"]["username"] == "owner@acme.example"
        users = client.get(
            "/v1/application/entity/user/count", headers={APP: result["application_key"]}
        )
    assert users.status_code == 200


def test_a_platform_of_one_login_takes_no_instance_url(flow: Flow) -> None:
    with flow.browser() as browser:
        refused = browser.get(
            f"{flow.gateway.base_url}/authorization/oauth/Salesforce/authorize",
            params={"redirect": DONE, "instance_url": "https://x.my.salesforce.com"},
        )
    assert refused.status_code == 400 and "location" not in refused.headers
    assert "instance_url" in refused.text


def test_a_platform_without_scopes_per_entity_takes_no_entities(flow: Flow) -> None:
    with flow.browser() as browser:
        refused = browser.get(
            f"{flow.gateway.base_url}/authorization/oauth/Salesforce/authorize",
            params={"redirect": DONE, "entities": "contact"},
        )
    assert refused.status_code == 400 and "location" not in refused.headers
    assert "entities" in refused.json()["detail"]["message"]


def test_redirects_off_the_allow_list_get_400_and_no_location(flow: Flow) -> None:
    base = f"{flow.gateway.base_url}/authorization/oauth/Salesforce/authorize"
    with flow.browser() as browser:
        for redirect in [
            "https://evil.example/steal",
            DONE + "/",
            DONE + "?x=1",
            DONE.replace("https", "http"),
            DONE.upper(),
            "https://app.example:444/crm/connected",
            "//evil.example",
            "",
        ]:
            refused = browser.get(base, params={"redirect": redirect})
            assert refused.status_code == 400, redirect
            assert "location" not in refused.headers
            assert refused.json()["detail"]["code"] == "NOT_VALID"
        assert browser.get(base).status_code == 400
        unknown = browser.get(
            f"{flow.gateway.base_url}/authorization/oauth/HubSpot/authorize",
            params={"redirect": DONE},
        )
        assert unknown.status_code == 400 and "location" not in unknown.headers


def _to_callback(flow: Flow, browser: httpx.Client) -> str:
    """Start a flow and stop at the CRM's redirect back to crmgate: the callback URL."""
    start = browser.get(
        f"{flow.gateway.base_url}/authorization/oauth/Salesforce/authorize",
        params={"redirect": DONE},
    )
    at_crm = browser.get(start.headers["location"])
    location = at_crm.headers["location"]
    assert "/authorization/oauth/Salesforce/callback" in location
    return str(location)


def test_forged_reused_expired_and_cookieless_states_are_refused(flow: Flow) -> None:
    with flow.browser() as browser:
        callback = _to_callback(flow, browser)
        forged = httpx.URL(callback).copy_set_param("state", secrets.token_urlsafe(32))
        assert browser.get(forged).status_code == 400
        first = browser.get(callback)
        assert first.status_code == 302 and "access_token=" in first.headers["location"]
        reused = browser.get(callback)
        assert reused.status_code == 400 and "location" not in reused.headers

    # a stolen callback URL, in another browser with no cookie or a cookie of its own flow
    with flow.browser() as victim, flow.browser() as attacker:
        callback = _to_callback(flow, victim)
        stolen = attacker.get(callback)
        assert stolen.status_code == 400 and "location" not in stolen.headers
        from crmgate.oauth import cookie_name

        state = httpx.URL(callback).params["state"]  # the URL tells the cookie's name, not value
        attacker.cookies.set(cookie_name(state, False), "planted", path="/authorization/oauth/")
        stolen = attacker.get(callback)
        assert stolen.status_code == 400 and "did not start" in stolen.json()["detail"]["message"]
        # ... and neither attempt spent the victim's flow
        assert "access_token=" in victim.get(callback).headers["location"]

    # too slow: the browser that started it is sent back, told so
    with flow.browser() as browser:
        callback = _to_callback(flow, browser)
        expire_flows(flow)
        late = fragment(browser.get(callback))
        assert late["error"] == "access_denied" and "start again" in late["error_description"]


def expire_flows(flow: Flow) -> None:
    import asyncio
    from datetime import timedelta

    from sqlalchemy import update

    from crmgate.runtime import Services
    from crmgate.store.models import OAuthFlow, utcnow

    async def go() -> None:
        async with Services.open(flow.settings) as services:
            async with for_writing(services.engine).begin() as connection:
                await connection.execute(
                    update(OAuthFlow).values(expires_at=utcnow() - timedelta(seconds=1))
                )

    asyncio.run(go())


def test_a_code_is_exchanged_once(flow: Flow) -> None:
    with flow.browser() as browser:
        callback = _to_callback(flow, browser)
        code = httpx.URL(callback).params["code"]
        assert browser.get(callback).status_code == 302
    # the same code in a fresh flow (state and cookie right): Salesforce refuses it
    with flow.browser() as browser:
        second = httpx.URL(_to_callback(flow, browser)).copy_set_param("code", code)
        answer = browser.get(second)
    result = fragment(answer)
    assert result["error"] == "server_error" and "invalid_grant" in result["error_description"]


def test_a_user_who_denies_gets_the_error_in_the_fragment(flow: Flow) -> None:
    flow.sim.simulator.auto_approve_user = None
    with flow.browser() as browser:
        start = browser.get(
            f"{flow.gateway.base_url}/authorization/oauth/Salesforce/authorize",
            params={"redirect": DONE},
        )
        page = browser.get(start.headers["location"])
        assert page.status_code == 200 and "<form" in page.text
        denied = browser.post(
            str(page.url).split("?")[0], data={"action": "deny", **_hidden(page.text)}
        )
        done = browser.get(denied.headers["location"])
    result = fragment(done)
    assert result["error"] == "access_denied"


def _hidden(html: str) -> dict[str, str]:
    import re

    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def test_a_callback_from_another_issuer_is_refused(flow: Flow) -> None:
    with flow.browser() as browser:
        callback = httpx.URL(_to_callback(flow, browser)).copy_set_param(
            "iss", "https://evil.example"
        )
        result = fragment(browser.get(callback))
    assert result["error"] == "invalid_request" and "issuer" in result["error_description"]


def test_no_code_state_or_token_of_the_flow_reaches_the_logs(
    flow: Flow, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    with flow.browser() as browser:
        callback = _to_callback(flow, browser)
        done = browser.get(callback)
        replay = browser.get(callback)  # refused: logged as a refusal, without its values
    assert replay.status_code == 400
    params = httpx.URL(callback).params
    secrets_seen = [params["code"], params["state"], *fragment(done).values()]
    # The test's own HTTP client, and uvicorn's access log that `crmgate serve` turns off
    # (tests/test_serve.py checks the served process's output for a callback's query).
    harness = ("httpx", "httpcore", "h11", "uvicorn.access")
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(harness)
    )
    assert "/authorization/oauth/{platform}/callback" in logged  # the access log, templated
    for secret in secrets_seen:
        assert secret not in logged


def test_two_flows_in_one_browser_do_not_undo_each_other(flow: Flow) -> None:
    with flow.browser() as browser:
        first = _to_callback(flow, browser)
        second = _to_callback(flow, browser)
        assert "access_token=" in browser.get(first).headers["location"]
        assert "access_token=" in browser.get(second).headers["location"]


def test_flow_cookies_are_host_only_over_https() -> None:
    from crmgate.oauth import cookie_name

    assert cookie_name("s", True).startswith("__Host-crmgate_oauth_")
    assert cookie_name("s", False).startswith("crmgate_oauth_")
    assert cookie_name("s", False) != cookie_name("t", False)


def test_redirect_urls_are_checked_when_configured() -> None:
    from pydantic import ValidationError

    from crmgate.settings import OAuthClient

    for bad in ["javascript:alert(1)", "/relative", "https://app.example/x#frag", "ftp://x/y"]:
        with pytest.raises(ValidationError):
            OAuthClient(client_id="c", redirects=(bad,))
    assert OAuthClient(client_id="c", redirects=(DONE,)).redirects == (DONE,)


def test_application_mode_authorizes_an_existing_application_again(flow: Flow) -> None:
    def session(**extra: str) -> str:
        with flow.gateway.client(flow.admin.key) as client:
            made = client.post(
                "/v1/oauth/session", json={"type": "Salesforce", "redirect": DONE, **extra}
            )
            assert made.status_code == 201, made.text
            return str(made.json()["authorize_url"])

    with flow.browser() as browser:
        key = fragment(flow.walk(browser, session()))["application_key"]
    flow.sim.simulator.refresh_tokens.clear()  # the grant is revoked at the CRM
    flow.sim.simulator.expire_sessions()
    with flow.gateway.client(flow.admin.key) as client:
        broken = client.get("/v1/application/entity/user/count", headers={APP: key})
        assert broken.status_code == 401
        assert client.get(f"/v1/application/{key}").json()["is_authorized"] is False
    with flow.browser() as browser:
        again = fragment(flow.walk(browser, session(application_key=key)))
    assert again == {"application_key": key}
    with flow.gateway.client(flow.admin.key) as client:
        assert client.get(f"/v1/application/{key}").json()["is_authorized"] is True
        assert (
            client.get("/v1/application/entity/user/count", headers={APP: key}).status_code == 200
        )
        assert client.get("/v1/application/count").json() == {"total": 1}
        unknown = client.post(
            "/v1/oauth/session",
            json={"type": "Salesforce", "redirect": DONE, "application_key": "0" * 40},
        )
        assert unknown.status_code == 404


def test_a_session_of_an_admin_who_lost_the_role_creates_nothing(flow: Flow) -> None:
    with flow.gateway.client(flow.admin.key) as client:
        url = client.post(
            "/v1/oauth/session", json={"type": "Salesforce", "redirect": DONE}
        ).json()["authorize_url"]
        member = client.post(
            "/v1/user", json={"name": "Second", "email": "second@acme.example", "roles": ["admin"]}
        )
        assert member.status_code == 201, member.text
        demoted = client.put(f"/v1/user/{flow.admin.user_id}", json={"roles": ["member"]})
        assert demoted.status_code == 200, demoted.text
    with flow.browser() as browser:
        result = fragment(flow.walk(browser, url))
    assert result["error"] == "server_error" and "admin" in result["error_description"]
    revoked_tokens = [c for c in flow.sim.simulator.calls if c[1] == "/services/oauth2/revoke"]
    assert revoked_tokens  # the tokens obtained for nothing were revoked


def test_too_many_flows_in_progress_are_refused(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crmgate.oauth.MAX_PENDING_FLOWS", 2)
    base = f"{flow.gateway.base_url}/authorization/oauth/Salesforce/authorize"
    with flow.browser() as browser:
        assert browser.get(base, params={"redirect": DONE}).status_code == 302
        assert browser.get(base, params={"redirect": DONE}).status_code == 302
        refused = browser.get(base, params={"redirect": DONE})
    assert refused.status_code == 429 and "location" not in refused.headers


def test_an_instance_scoped_flow_consents_on_the_instance_its_authorize_url_names(
    tmp_path: Path, database: Database
) -> None:
    """``{instance}`` in a descriptor's authorize_url (Bitrix24: each portal shows its own
    consent page) is the flow's instance_url; a flow without one is refused."""
    bound = loopback_socket()
    settings = make_settings(
        tmp_path / "data",
        database.url,
        public_url=f"http://127.0.0.1:{bound.getsockname()[1]}",
        oauth_clients={
            "Bitrix24": {"client_id": "local.b24", "client_secret": "s", "redirects": [DONE]}
        },
    )
    migrate_database(settings)
    with RunningGateway(create_app(settings), bound) as gateway, httpx.Client() as browser:
        start = f"{gateway.base_url}/authorization/oauth/Bitrix24/authorize"
        locations = [
            browser.get(start, params={"redirect": DONE, "instance_url": portal})
            for portal in ("https://acme.bitrix24.com/", "https://other.bitrix24.de")
        ]
        unnamed = browser.get(start, params={"redirect": DONE})
    acme, other = (httpx.URL(answer.headers["location"]) for answer in locations)
    assert str(acme.copy_with(query=None)) == "https://acme.bitrix24.com/oauth/authorize/"
    assert str(other.copy_with(query=None)) == "https://other.bitrix24.de/oauth/authorize/"
    assert acme.params["client_id"] == "local.b24" and acme.params["state"]
    assert unnamed.status_code == 400 and "location" not in unnamed.headers
