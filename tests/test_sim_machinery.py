"""The simulators' shared machinery by the standards' own cases: the authorization server
(RFC 6749 code and refresh grants, RFC 7636 PKCE, RFC 7009 revocation), the guard's rate window
and the fault queue, over real HTTP on loopback against a minimal CRM built from them."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from crmsim.faults import Fault, Faults
from crmsim.guard import Guard, RateWindow, basic_user, bearer
from crmsim.oauth import AuthorizationServer
from crmsim.server import RunningSimulator
from crmsim.tokens import AccessToken, TokenStore

REDIRECT = "https://app.example/callback"


class Crm:
    def __init__(self, rotation: str = "keep") -> None:
        self.tokens: TokenStore[str] = TokenStore()
        self.tokens.add_client("app", "secret", (REDIRECT,))
        self.oauth: AuthorizationServer[str] = AuthorizationServer(self.tokens, lambda: "admin")
        self.oauth.refresh_rotation = rotation  # type: ignore[assignment]
        self.limit = 100
        self.faults = Faults()
        found = [bearer(), basic_user()]
        self.guard = Guard(self.tokens, found, RateWindow(lambda: self.limit, 10), self.faults)

    def app(self) -> web.Application:
        async def me(request: web.Request, token: AccessToken[str]) -> web.Response:
            return web.json_response({"subject": token.subject})

        application = web.Application()
        application.router.add_get("/authorize", self.oauth.authorize)
        application.router.add_post("/token", self.oauth.token)
        application.router.add_post("/revoke", self.oauth.revoke)
        application.router.add_get("/me", self.guard(me))
        return application


@pytest.fixture
def crm() -> Iterator[tuple[Crm, httpx.Client]]:
    sim = Crm()
    with RunningSimulator(sim.app(), None) as running, httpx.Client(base_url=running.base_url) as c:
        yield sim, c


def authorize(client: httpx.Client, **extra: str) -> httpx.Response:
    params = {"client_id": "app", "redirect_uri": REDIRECT, "response_type": "code", **extra}
    return client.get("/authorize", params={**params, "state": "s1"})


def code_of(answer: httpx.Response) -> str:
    assert answer.status_code == 302, answer.text
    location = httpx.URL(answer.headers["Location"])
    assert location.params["state"] == "s1"
    return location.params["code"]


def exchange(client: httpx.Client, code: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    return client.post(
        "/token", data={**form, "client_id": "app", "client_secret": "secret", **extra}
    )


def test_a_code_is_exchanged_once_for_tokens(crm: tuple[Crm, httpx.Client]) -> None:
    _, client = crm
    code = code_of(authorize(client))
    answer = exchange(client, code)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    me = client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json() == {"subject": "admin"}
    again = exchange(client, code)  # RFC 6749 §4.1.2: a code works once
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_an_unknown_redirect_uri_is_an_error_page_never_a_redirect(
    crm: tuple[Crm, httpx.Client],
) -> None:
    _, client = crm
    answer = authorize(client, redirect_uri="https://evil.example/")
    assert answer.status_code == 400 and "Location" not in answer.headers


def test_pkce_s256_needs_the_verifier_of_the_challenge(crm: tuple[Crm, httpx.Client]) -> None:
    _, client = crm
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    pkce = {"code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256"}
    assert pkce["code_challenge"] == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    wrong = exchange(client, code_of(authorize(client, **pkce)), code_verifier="x" * 43)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right = exchange(client, code_of(authorize(client, **pkce)), code_verifier=verifier)
    assert right.status_code == 200, right.text


def test_a_wrong_client_secret_is_invalid_client(crm: tuple[Crm, httpx.Client]) -> None:
    _, client = crm
    answer = exchange(client, code_of(authorize(client)), client_secret="nope")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client"


def test_a_rotated_refresh_token_replaces_the_old_one() -> None:
    sim = Crm(rotation="rotate")
    refresh = sim.tokens.issue_refresh("app", "admin")
    form = {"grant_type": "refresh_token", "client_id": "app", "client_secret": "secret"}
    with RunningSimulator(sim.app(), None) as running, httpx.Client(base_url=running.base_url) as c:
        first = c.post("/token", data={**form, "refresh_token": refresh}).json()
        assert first["refresh_token"] != refresh
        old = c.post("/token", data={**form, "refresh_token": refresh})
        assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
        assert c.post("/token", data={**form, "refresh_token": first["refresh_token"]}).is_success


def test_revoking_a_refresh_token_revokes_its_access_tokens(
    crm: tuple[Crm, httpx.Client],
) -> None:
    sim, client = crm
    tokens = exchange(client, code_of(authorize(client))).json()
    revoked = client.post(
        "/revoke",
        data={"token": tokens["refresh_token"], "client_id": "app", "client_secret": "secret"},
    )
    assert revoked.status_code == 200  # RFC 7009 §2.2
    me = client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 401
    assert not sim.tokens.refresh


def test_a_key_as_the_basic_user_name_authenticates(crm: tuple[Crm, httpx.Client]) -> None:
    sim, client = crm
    key = sim.tokens.issue_key("key-owner")
    assert client.get("/me", auth=(key, "")).json() == {"subject": "key-owner"}
    assert client.get("/me", auth=("unknown", "")).status_code == 401


def test_an_expired_token_is_refused(crm: tuple[Crm, httpx.Client]) -> None:
    sim, client = crm
    token = sim.tokens.issue_access("admin")
    sim.tokens.expire_all()
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_the_rate_window_answers_429_with_retry_after(crm: tuple[Crm, httpx.Client]) -> None:
    sim, client = crm
    sim.limit = 2
    headers = {"Authorization": f"Bearer {sim.tokens.issue_key('admin')}"}
    assert [client.get("/me", headers=headers).status_code for _ in range(3)] == [200, 200, 429]
    assert 1 <= int(client.get("/me", headers=headers).headers["Retry-After"]) <= 11


def test_faults_are_played_in_order_for_their_paths(crm: tuple[Crm, httpx.Client]) -> None:
    sim, client = crm
    headers = {"Authorization": f"Bearer {sim.tokens.issue_key('admin')}"}
    sim.faults.add(Fault(503, "busy", headers={"Retry-After": "1"}), times=2)
    sim.faults.add(Fault(500, path="/elsewhere"))
    first, second = (client.get("/me", headers=headers) for _ in range(2))
    assert (first.status_code, first.text, first.headers["Retry-After"]) == (503, "busy", "1")
    assert second.status_code == 503
    assert client.get("/me", headers=headers).status_code == 200  # /elsewhere's waits
    assert len(sim.faults) == 1


def test_a_delay_fault_answers_late_and_a_reset_fault_cuts_the_connection(
    crm: tuple[Crm, httpx.Client],
) -> None:
    sim, client = crm
    headers = {"Authorization": f"Bearer {sim.tokens.issue_key('admin')}"}
    sim.faults.add(Fault(delay=0.3))
    started = time.monotonic()
    assert client.get("/me", headers=headers).status_code == 200
    assert time.monotonic() - started >= 0.3
    sim.faults.add(Fault(reset=True))
    with pytest.raises(httpx.TransportError):
        client.get("/me", headers=headers)
    assert client.get("/me", headers=headers).status_code == 200
