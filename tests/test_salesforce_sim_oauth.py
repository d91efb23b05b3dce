"""The Salesforce simulator's OAuth 2.0 web server flow (authorization code grant, with and without
PKCE), over real HTTPS on loopback, as Salesforce documents it: "OAuth 2.0 Web Server Flow for Web
App Integration", "Proof Key for Code Exchange (PKCE) Extension", "OAuth 2.0 Authorization
Errors" and "OAuth 2.0 Refresh Token Flow for Renewed Sessions"."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conftest import SalesforceSim
from crmsim.salesforce import ConnectedApp, SfUser

CALLBACK = "https://app.example/oauth/callback"
CLIENT_ID = "3MVG9simulatedConsumerKey"
CLIENT_SECRET = "simulated-consumer-secret"


@pytest.fixture
def http(salesforce: SalesforceSim) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=salesforce.base_url,
        verify=ssl.create_default_context(cafile=salesforce.ca_file),
        trust_env=False,
        follow_redirects=False,
        timeout=20,
    ) as client:
        yield client


@pytest.fixture
def user(salesforce: SalesforceSim) -> SfUser:
    return salesforce.simulator.add_user("ada@acme.example", "s3cret pw", name="Ada Lovelace")


@pytest.fixture
def app(salesforce: SalesforceSim) -> ConnectedApp:
    return salesforce.simulator.add_connected_app(
        CLIENT_ID, CLIENT_SECRET, [CALLBACK, "https://app.example/other?tenant=7"]
    )


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize(http: httpx.Client, **params: str) -> httpx.Response:
    query = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": CALLBACK}
    query.update(params)
    return http.get("/services/oauth2/authorize", params=query)


def callback(response: httpx.Response, redirect_uri: str = CALLBACK) -> dict[str, str]:
    """The query of a 302 to ``redirect_uri``, one value a name."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.split("?", 1)[0] == redirect_uri.split("?", 1)[0]
    query = parse_qs(urlsplit(location).query, keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in query.values())
    return {name: values[0] for name, values in query.items()}


def exchange(http: httpx.Client, code: str, **params: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": CALLBACK,
    }
    form.update(params)
    return http.post("/services/oauth2/token", data=form)


def oauth_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def hidden_request(page: str) -> str:
    found = re.search(r'name="request" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def auto_approved_code(sim: SalesforceSim, http: httpx.Client, **params: str) -> str:
    sim.simulator.auto_approve_user = "ada@acme.example"
    return callback(authorize(http, **params))["code"]


# ---- the whole flow --------------------------------------------------------------------------


@pytest.mark.usefixtures("app")
def test_auto_approved_code_flow_tokens_work_and_refresh(
    salesforce: SalesforceSim, http: httpx.Client, user: SfUser
) -> None:
    salesforce.simulator.auto_approve_user = user.username
    query = callback(authorize(http, state="xyz/+= 1", scope="api refresh_token"))
    assert query["state"] == "xyz/+= 1"
    assert set(query) == {"code", "state"}

    response = exchange(http, query["code"])
    assert response.status_code == 200, response.text
    token = response.json()
    assert set(token) == {
        "access_token",
        "refresh_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
        "scope",
    }
    assert token["token_type"] == "Bearer"
    assert token["instance_url"] == salesforce.base_url
    assert token["id"] == f"{salesforce.base_url}/id/{salesforce.simulator.org_id}/{user.id}"
    assert token["scope"] == "api refresh_token"
    assert token["issued_at"].isdigit()

    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    described = http.get("/services/data/v60.0/sobjects", headers=bearer)
    assert described.status_code == 200
    assert "Account" in {o["name"] for o in described.json()["sobjects"]}
    info = http.get("/services/oauth2/userinfo", headers=bearer).json()
    assert (info["user_id"], info["preferred_username"]) == (user.id, "ada@acme.example")

    refreshed = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert "refresh_token" not in renewed  # no rotation unless the org asks for it
    assert renewed["scope"] == "api refresh_token"
    assert renewed["access_token"] != token["access_token"]
    again = http.get(
        "/services/oauth2/userinfo",
        headers={"Authorization": f"Bearer {renewed['access_token']}"},
    )
    assert again.status_code == 200


@pytest.mark.usefixtures("app")
def test_login_page_flow(salesforce: SalesforceSim, http: httpx.Client, user: SfUser) -> None:
    page = authorize(http, state="s-1", login_hint="ada@acme.example")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "location" not in page.headers
    html = page.text
    assert '<form method="post"' in html
    assert 'name="username"' in html and 'type="password"' in html
    assert 'value="ada@acme.example"' in html  # login_hint pre-fills the user name
    assert '"deny"' in html.lower()
    for external in ("<script", "<link", "<img", "src=", "href=", "@import", "url("):
        assert external not in html.lower()

    request = hidden_request(html)
    wrong = http.post(
        "/services/oauth2/authorize",
        data={"request": request, "username": user.username, "password": "nope", "action": "allow"},
    )
    assert wrong.status_code == 200 and "location" not in wrong.headers
    assert "check your username and password" in wrong.text
    # A UI login takes the password alone, never password + security token.
    with_token = http.post(
        "/services/oauth2/authorize",
        data={
            "request": request,
            "username": user.username,
            "password": user.password + user.security_token,
            "action": "allow",
        },
    )
    assert with_token.status_code == 200 and "location" not in with_token.headers

    allowed = http.post(
        "/services/oauth2/authorize",
        data={
            "request": request,
            "username": user.username,
            "password": user.password,
            "action": "allow",
        },
    )
    query = callback(allowed)
    assert query["state"] == "s-1"
    response = exchange(http, query["code"])
    assert response.status_code == 200, response.text
    bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert http.get("/services/data/v60.0/sobjects", headers=bearer).status_code == 200

    # The login page's request is used up.
    replay = http.post(
        "/services/oauth2/authorize",
        data={
            "request": request,
            "username": user.username,
            "password": user.password,
            "action": "allow",
        },
    )
    assert replay.status_code == 400 and "location" not in replay.headers


@pytest.mark.usefixtures("app", "user")
def test_deny_redirects_with_access_denied(http: httpx.Client) -> None:
    page = authorize(http, state="keep me")
    denied = http.post(
        "/services/oauth2/authorize", data={"request": hidden_request(page.text), "action": "deny"}
    )
    assert callback(denied) == {
        "error": "access_denied",
        "error_description": "end-user denied authorization",
        "state": "keep me",
    }
    assert "error_description=end-user+denied+authorization" in denied.headers["location"]


@pytest.mark.usefixtures("app", "user")
def test_callback_url_with_a_query_keeps_it(salesforce: SalesforceSim, http: httpx.Client) -> None:
    other = "https://app.example/other?tenant=7"
    salesforce.simulator.auto_approve_user = "ada@acme.example"
    query = callback(authorize(http, redirect_uri=other, state="s"), other)
    assert query["tenant"] == "7" and query["state"] == "s"
    assert exchange(http, query["code"], redirect_uri=other).status_code == 200


# ---- the authorize endpoint's checks ----------------------------------------------------------


@pytest.mark.usefixtures("app", "user")
@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"client_id": "3MVG9unknown"}, "invalid_client_id"),
        ({"client_id": ""}, "invalid_client_id"),
        ({"redirect_uri": "https://evil.example/oauth/callback"}, "redirect_uri_mismatch"),
        ({"redirect_uri": CALLBACK + "/"}, "redirect_uri_mismatch"),  # exact match only
        ({"redirect_uri": CALLBACK.upper()}, "redirect_uri_mismatch"),
        ({"redirect_uri": ""}, "redirect_uri_mismatch"),
    ],
)
def test_unknown_client_or_callback_gets_an_error_page_and_no_redirect(
    salesforce: SalesforceSim, http: httpx.Client, params: dict[str, str], error: str
) -> None:
    salesforce.simulator.auto_approve_user = "ada@acme.example"  # even so: no code
    response = authorize(http, state="s", **params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert f"error={error}" in response.text
    assert not salesforce.simulator.codes


@pytest.mark.usefixtures("app", "user")
@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": ""}, "unsupported_response_type"),
        ({"scope": "api full"}, "invalid_scope"),  # the app's scopes are api and refresh_token
        ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
    ],
)
def test_bad_requests_for_a_known_callback_redirect_with_an_error(
    salesforce: SalesforceSim, http: httpx.Client, params: dict[str, str], error: str
) -> None:
    salesforce.simulator.auto_approve_user = "ada@acme.example"
    query = callback(authorize(http, state="st", **params))
    assert query["error"] == error and query["state"] == "st" and query["error_description"]
    assert "code" not in query


# ---- the token endpoint's checks --------------------------------------------------------------


@pytest.mark.usefixtures("app", "user")
def test_a_code_is_single_use(salesforce: SalesforceSim, http: httpx.Client) -> None:
    code = auto_approved_code(salesforce, http)
    assert exchange(http, code).status_code == 200
    assert oauth_error(exchange(http, code)) == {
        "error": "invalid_grant",
        "error_description": "invalid authorization code",
    }
    assert oauth_error(exchange(http, "aPrxmadeup==")) == {
        "error": "invalid_grant",
        "error_description": "invalid authorization code",
    }


@pytest.mark.usefixtures("app", "user")
def test_codes_expire(salesforce: SalesforceSim, http: httpx.Client) -> None:
    assert salesforce.simulator.tokens.code_lifetime == 900  # Salesforce: 15 minutes
    salesforce.simulator.tokens.code_lifetime = 0
    code = auto_approved_code(salesforce, http)
    assert oauth_error(exchange(http, code)) == {
        "error": "invalid_grant",
        "error_description": "expired authorization code",
    }


@pytest.mark.usefixtures("app", "user")
def test_client_authentication(salesforce: SalesforceSim, http: httpx.Client) -> None:
    code = auto_approved_code(salesforce, http)
    assert oauth_error(exchange(http, code, client_secret="wrong")) == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }
    missing = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_ID,
            "redirect_uri": CALLBACK,
        },
    )
    assert oauth_error(missing)["error"] == "invalid_client"  # Require Secret for Web Server Flow
    assert oauth_error(exchange(http, code, client_id="3MVG9unknown")) == {
        "error": "invalid_client_id",
        "error_description": "client identifier invalid",
    }


@pytest.mark.usefixtures("app", "user")
def test_a_code_is_bound_to_its_client_and_redirect_uri(
    salesforce: SalesforceSim, http: httpx.Client
) -> None:
    salesforce.simulator.add_connected_app("3MVG9other", "other-secret", [CALLBACK])
    code = auto_approved_code(salesforce, http)
    stolen = exchange(http, code, client_id="3MVG9other", client_secret="other-secret")
    assert oauth_error(stolen)["error"] == "invalid_grant"
    moved = exchange(http, code, redirect_uri="https://app.example/other?tenant=7")
    assert oauth_error(moved) == {
        "error": "redirect_uri_mismatch",
        "error_description": "redirect_uri must match configuration",
    }
    assert oauth_error(exchange(http, code))["error"] == "invalid_grant"  # used up


# ---- PKCE -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("user")
def test_pkce_public_client(salesforce: SalesforceSim, http: httpx.Client) -> None:
    salesforce.simulator.add_connected_app(
        CLIENT_ID, CLIENT_SECRET, [CALLBACK], require_pkce=True, require_secret=False
    )
    salesforce.simulator.auto_approve_user = "ada@acme.example"
    # An app that requires PKCE refuses an authorize request without a code challenge.
    refused = callback(authorize(http, state="p"))
    assert refused["error"] == "invalid_request" and refused["state"] == "p"

    verifier = secrets.token_urlsafe(64)
    challenge = s256(verifier)
    assert len(challenge) == 43 and "=" not in challenge
    code = callback(authorize(http, code_challenge=challenge, code_challenge_method="S256"))["code"]
    response = exchange(http, code, client_secret="", code_verifier=verifier)
    assert response.status_code == 200, response.text
    token = response.json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert http.get("/services/data/v60.0/sobjects", headers=bearer).status_code == 200
    # The refresh token of a public client renews without a secret, with its client id.
    renewed = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": CLIENT_ID,
        },
    )
    assert renewed.status_code == 200, renewed.text


@pytest.mark.usefixtures("app", "user")
def test_pkce_mismatch_and_missing_verifier(salesforce: SalesforceSim, http: httpx.Client) -> None:
    verifier = secrets.token_urlsafe(64)
    code = auto_approved_code(salesforce, http, code_challenge=s256(verifier))
    assert oauth_error(exchange(http, code, code_verifier=verifier + "x")) == {
        "error": "invalid_grant",
        "error_description": "invalid code verifier",
    }
    # A failed exchange burns the code, so verifiers cannot be guessed one after another.
    assert oauth_error(exchange(http, code, code_verifier=verifier)) == {
        "error": "invalid_grant",
        "error_description": "invalid authorization code",
    }
    code = auto_approved_code(salesforce, http, code_challenge=s256(verifier))
    assert oauth_error(exchange(http, code))["error"] == "invalid_grant"  # no verifier
    # The challenge is base64url(sha256(verifier)), not the hex digest nor the verifier itself.
    hex_challenge = hashlib.sha256(verifier.encode()).hexdigest()
    code = auto_approved_code(salesforce, http, code_challenge=hex_challenge)
    assert oauth_error(exchange(http, code, code_verifier=verifier))["error"] == "invalid_grant"
    # A confidential app with PKCE still needs its secret as well as the verifier.
    code = auto_approved_code(salesforce, http, code_challenge=s256(verifier))
    assert exchange(http, code, code_verifier=verifier, client_secret="").status_code == 400
    code = auto_approved_code(salesforce, http, code_challenge=s256(verifier))
    assert exchange(http, code, code_verifier=verifier).status_code == 200


# ---- scopes and refresh tokens ----------------------------------------------------------------


@pytest.mark.usefixtures("app", "user")
def test_no_refresh_token_without_the_refresh_token_scope(
    salesforce: SalesforceSim, http: httpx.Client
) -> None:
    code = auto_approved_code(salesforce, http, scope="api")
    token = exchange(http, code).json()
    assert token["scope"] == "api" and "refresh_token" not in token


@pytest.mark.usefixtures("app", "user")
def test_refresh_tokens_are_bound_to_their_app(
    salesforce: SalesforceSim, http: httpx.Client
) -> None:
    salesforce.simulator.add_connected_app("3MVG9other", "other-secret", [CALLBACK])
    refresh = exchange(http, auto_approved_code(salesforce, http)).json()["refresh_token"]

    def renew(**form: str) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh}
        data.update(form)
        return http.post("/services/oauth2/token", data=data)

    assert oauth_error(renew(client_id=CLIENT_ID, client_secret="wrong")) == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }
    assert oauth_error(renew(client_id=CLIENT_ID))["error"] == "invalid_client"  # secret required
    assert oauth_error(renew())["error"] == "invalid_client_id"
    other = renew(client_id="3MVG9other", client_secret="other-secret")
    assert oauth_error(other)["error"] == "invalid_grant"
    assert renew(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).status_code == 200


@pytest.mark.usefixtures("app", "user")
def test_rotated_refresh_tokens_stay_bound(salesforce: SalesforceSim, http: httpx.Client) -> None:
    salesforce.simulator.rotate_refresh_tokens = True
    first = exchange(http, auto_approved_code(salesforce, http)).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    rotated = http.post("/services/oauth2/token", data={**form, "refresh_token": first})
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert second != first
    stale = http.post("/services/oauth2/token", data={**form, "refresh_token": first})
    assert oauth_error(stale)["error"] == "invalid_grant"
    wrong = http.post(
        "/services/oauth2/token",
        data={**form, "client_secret": "wrong", "refresh_token": second},
    )
    assert oauth_error(wrong)["error"] == "invalid_client"
    again = http.post("/services/oauth2/token", data={**form, "refresh_token": second})
    assert again.status_code == 200


@pytest.mark.usefixtures("app", "user")
def test_session_lifetime_applies_to_code_flow_tokens(
    salesforce: SalesforceSim, http: httpx.Client
) -> None:
    salesforce.simulator.tokens.access_lifetime = -1  # issued already expired
    token = exchange(http, auto_approved_code(salesforce, http)).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    expired = http.get("/services/data/v60.0/sobjects", headers=bearer)
    assert expired.status_code == 401
    assert expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    assert http.get("/services/oauth2/userinfo", headers=bearer).status_code == 403


@pytest.mark.usefixtures("app")
def test_inactive_users_cannot_log_in(
    salesforce: SalesforceSim, http: httpx.Client, user: SfUser
) -> None:
    user.active = False
    page = authorize(http)
    login = http.post(
        "/services/oauth2/authorize",
        data={
            "request": hidden_request(page.text),
            "username": user.username,
            "password": user.password,
            "action": "allow",
        },
    )
    assert login.status_code == 200 and "location" not in login.headers
    salesforce.simulator.auto_approve_user = user.username  # no auto-approval either
    assert authorize(http).status_code == 200
