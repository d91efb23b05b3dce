"""Passkeys (WebAuthn) as the portal's second factor, over real HTTP: a software authenticator
(an ES256 key, "none" attestation, as a browser's platform authenticator answers) registers a
passkey on the Security page and signs in with it; the refusals: a wrong origin, a challenge used
twice, an assertion replayed into a later sign-in, an unknown or another user's credential, a
counter going backwards, options without the CSRF header; a fresh sign-in asks passkey-only
users for their passkey; the relying party a request speaks to."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import bytes_to_base64url

from conftest import RunningGateway, make_settings, migrate_database
from crmgate.api.app import create_app
from crmgate.portal.passkeys import PasskeyError, relying_party

PASSWORD = "correct horse battery staple"
SECURITY = "/portal/security"


def b64(data: bytes) -> str:
    return bytes_to_base64url(data)


@dataclass
class Authenticator:
    """A software authenticator: one ES256 credential, with a signature counter."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    sign_count: int = 0

    def _public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    @staticmethod
    def _client_data(kind: str, options: dict[str, Any], origin: str) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": options["challenge"],
                "origin": origin,
                "crossOrigin": False,
            }
        ).encode()

    def create(self, options: dict[str, Any], origin: str) -> str:
        """navigator.credentials.create(), as JSON: what the page's script posts."""
        rp_hash = hashlib.sha256(options["rp"]["id"].encode()).digest()
        attested = (
            bytes(16)  # AAGUID
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + self._public_key()
        )
        auth_data = rp_hash + bytes([0x45]) + self.sign_count.to_bytes(4, "big") + attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps(
            {
                "id": b64(self.credential_id),
                "rawId": b64(self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64(self._client_data("webauthn.create", options, origin)),
                    "attestationObject": b64(attestation),
                    "transports": ["internal"],
                },
            }
        )

    def get(self, options: dict[str, Any], origin: str, count: int | None = None) -> str:
        """navigator.credentials.get(), as JSON; the counter grows by one unless ``count``."""
        self.sign_count = self.sign_count + 1 if count is None else count
        rp_hash = hashlib.sha256(options["rpId"].encode()).digest()
        auth_data = rp_hash + bytes([0x05]) + self.sign_count.to_bytes(4, "big")
        client_data = self._client_data("webauthn.get", options, origin)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return json.dumps(
            {
                "id": b64(self.credential_id),
                "rawId": b64(self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64(client_data),
                    "authenticatorData": b64(auth_data),
                    "signature": b64(signature),
                },
            }
        )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def alert(html: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', html)
    assert found, html[:2000]
    return found.group(1).replace("&#39;", "'")


@dataclass
class Browser:
    """A browser on the portal at http://localhost:<port> (WebAuthn needs a host name; the
    connection goes to 127.0.0.1), keeping its cookies."""

    client: httpx.Client
    origin: str
    email: str
    key: str = ""

    def csrf(self, path: str = SECURITY) -> str:
        return csrf_of(self.client.get(path).text)

    def options(self, path: str, token: str | None = None) -> httpx.Response:
        return self.client.post(path, headers={"X-CSRF-Token": token or self.csrf()})

    def post(self, path: str, token: str, **fields: str) -> httpx.Response:
        return self.client.post(path, data={"csrf": token, **fields})

    def register(self, authenticator: Authenticator, name: str = "Laptop") -> httpx.Response:
        token = self.csrf()
        options = self.options("/portal/security/passkeys/options", token)
        assert options.status_code == 200, options.text
        answer = authenticator.create(options.json(), self.origin)
        return self.post("/portal/security/passkeys", token, name=name, credential=answer)

    def passkeys(self) -> int:
        found = re.search(r'<dd id="passkey-count">(\d+)</dd>', self.client.get(SECURITY).text)
        assert found
        return int(found.group(1))

    def sign_out(self) -> None:
        self.post("/portal/sign-out", self.csrf("/portal/"))

    def sign_in_password(self, password: str = PASSWORD) -> str:
        """The password step; the second-factor page's token."""
        token = self.csrf("/portal/sign-in")
        answer = self.post(
            "/portal/sign-in", token, email=self.email, password=password, next="/portal/security"
        )
        assert answer.status_code == 303 and "/sign-in/code" in answer.headers["location"]
        page = self.client.get(answer.headers["location"])
        assert 'id="use-passkey"' in page.text
        return csrf_of(page.text)

    def sign_in_options(self, token: str) -> dict[str, Any]:
        answer = self.options("/portal/sign-in/passkey/options", token)
        assert answer.status_code == 200, answer.text
        options: dict[str, Any] = answer.json()
        return options

    def events(self, name: str) -> list[dict[str, Any]]:
        """This organisation's audit events of one kind (written a moment after the request)."""
        deadline = time.monotonic() + 5
        with httpx.Client(
            base_url=str(self.client.base_url),
            headers={"X-API2CRM-USER-KEY": self.key},
            trust_env=False,
        ) as api:
            while True:
                found = api.get(
                    "/v1/audit/list", params={"page_size": 100, "filter": f"event eq '{name}'"}
                )
                assert found.status_code == 200, found.text
                if found.json() or time.monotonic() > deadline:
                    return list(found.json())
                time.sleep(0.1)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    settings = make_settings(
        tmp_path,
        portal_signup="open",
        portal_argon2_memory_kib=8192,
        portal_argon2_time_cost=1,
    )
    migrate_database(settings)
    with RunningGateway(create_app(settings)) as running:
        yield running


def open_browser(gateway: RunningGateway, host: str = "localhost") -> httpx.Client:
    origin = f"http://{host}:{gateway.port}"
    return httpx.Client(
        base_url=gateway.base_url,
        headers={"Host": origin.split("//")[1]},
        timeout=20,
        trust_env=False,
    )


def sign_up(gateway: RunningGateway, email: str = "ann@acme.example") -> Browser:
    client = open_browser(gateway)
    form = client.get("/portal/sign-up")
    done = client.post(
        "/portal/sign-up",
        data={
            "csrf": csrf_of(form.text),
            "organisation": "Acme",
            "name": "Ann",
            "email": email,
            "password": PASSWORD,
        },
    )
    assert done.status_code == 200, done.text
    key = re.search(r"(cgu_\w+)", done.text)
    assert key
    return Browser(client, f"http://localhost:{gateway.port}", email, key.group(1))


@pytest.fixture
def ann(gateway: RunningGateway) -> Iterator[Browser]:
    browser = sign_up(gateway)
    yield browser
    browser.client.close()


@pytest.fixture
def ann_with_passkey(ann: Browser) -> tuple[Browser, Authenticator]:
    authenticator = Authenticator()
    assert ann.register(authenticator).status_code == 200
    return ann, authenticator


# ---- registration ------------------------------------------------------------------------------


def test_a_first_passkey_is_stored_and_recovery_codes_are_shown_once(ann: Browser) -> None:
    page = ann.register(Authenticator(), name="Work laptop")
    assert page.status_code == 200, page.text
    assert len(re.findall(r"<li><code>", page.text)) == 10
    assert ann.passkeys() == 1
    assert "Work laptop" in ann.client.get(SECURITY).text
    assert ann.events("portal.passkey_added")[0]["details"]["name"] == "Work laptop"
    # a second one: no new codes (the first set still stands)
    again = ann.register(Authenticator(), name="Phone")
    assert again.status_code == 303 and again.headers["location"] == SECURITY
    assert ann.passkeys() == 2


def test_registration_from_another_origin_is_refused(ann: Browser) -> None:
    token = ann.csrf()
    options = ann.options("/portal/security/passkeys/options", token).json()
    forged = Authenticator().create(options, "http://evil.example")
    page = ann.post("/portal/security/passkeys", token, name="x", credential=forged)
    assert page.status_code == 400 and "could not be verified" in alert(page.text)
    assert ann.passkeys() == 0


def test_a_registration_challenge_is_used_once(ann: Browser) -> None:
    token = ann.csrf()
    options = ann.options("/portal/security/passkeys/options", token).json()
    first = Authenticator().create(options, ann.origin)
    second = Authenticator().create(options, ann.origin)
    assert ann.post("/portal/security/passkeys", token, credential=first).status_code == 200
    page = ann.post("/portal/security/passkeys", token, credential=second)
    assert page.status_code == 400 and "expired or was already used" in alert(page.text)
    assert ann.passkeys() == 1


def test_the_same_authenticator_cannot_register_twice(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, authenticator = ann_with_passkey
    page = ann.register(authenticator)
    assert page.status_code == 400 and "already registered" in alert(page.text)
    # and the options name it, so that the browser says so before asking
    token = ann.csrf()
    options = ann.options("/portal/security/passkeys/options", token).json()
    assert [c["id"] for c in options["excludeCredentials"]] == [b64(authenticator.credential_id)]


def test_options_need_the_csrf_header_and_the_portals_origin(ann: Browser) -> None:
    path = "/portal/security/passkeys/options"
    assert ann.client.post(path).status_code == 403
    assert ann.client.post(path, headers={"X-CSRF-Token": "guess"}).status_code == 403
    cross = ann.client.post(
        path, headers={"X-CSRF-Token": ann.csrf(), "Origin": "http://evil.example"}
    )
    assert cross.status_code == 403


def test_an_ip_address_gets_a_clear_refusal(gateway: RunningGateway, ann: Browser) -> None:
    by_address = open_browser(gateway, host="127.0.0.1")
    by_address.cookies = ann.client.cookies
    token = csrf_of(by_address.get(SECURITY).text)
    answer = by_address.post("/portal/security/passkeys/options", headers={"X-CSRF-Token": token})
    assert answer.status_code == 400
    assert answer.json()["error"].endswith(f"http://localhost:{gateway.port}/portal/")


def test_adding_a_passkey_needs_a_fresh_sign_in(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        portal_signup="open",
        portal_argon2_memory_kib=8192,
        portal_argon2_time_cost=1,
        portal_fresh_sign_in=1,
    )
    migrate_database(settings)
    with RunningGateway(create_app(settings)) as gateway:
        ann = sign_up(gateway)
        token = ann.csrf()
        time.sleep(2.1)  # whole seconds: utcnow() drops the fraction
        answer = ann.options("/portal/security/passkeys/options", token)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/portal/reauthenticate?next=")


# ---- removal ------------------------------------------------------------------------------------


def test_removing_the_last_passkey_turns_two_factor_off(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, _ = ann_with_passkey
    page = ann.client.get(SECURITY).text
    found = re.search(r'action="/portal/security/passkeys/(pky_\w+)/delete"', page)
    assert found
    token = csrf_of(page)
    assert ann.post("/portal/security/passkeys/pky_unknown/delete", token).status_code == 404
    answer = ann.post(f"/portal/security/passkeys/{found.group(1)}/delete", token)
    assert answer.status_code == 303
    assert ann.passkeys() == 0
    assert '<dd id="recovery-left">0</dd>' in ann.client.get(SECURITY).text
    assert ann.events("portal.passkey_removed")
    ann.sign_out()
    token = ann.csrf("/portal/sign-in")
    signed = ann.post("/portal/sign-in", token, email=ann.email, password=PASSWORD, next="/portal/")
    assert signed.headers["location"] == "/portal/"  # no second factor left


def test_one_user_cannot_remove_anothers_passkey(
    gateway: RunningGateway, ann_with_passkey: tuple[Browser, Authenticator]
) -> None:
    ann, _ = ann_with_passkey
    found = re.search(r"/portal/security/passkeys/(pky_\w+)/delete", ann.client.get(SECURITY).text)
    assert found
    bob = sign_up(gateway, "bob@other.example")
    answer = bob.post(f"/portal/security/passkeys/{found.group(1)}/delete", bob.csrf())
    assert answer.status_code == 404
    assert ann.passkeys() == 1


# ---- the second factor at sign-in ---------------------------------------------------------------


def test_password_then_passkey_signs_in_with_a_new_session(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, authenticator = ann_with_passkey
    ann.sign_out()
    token = ann.sign_in_password()
    partial = dict(ann.client.cookies)
    assert ann.client.get("/portal/credentials").headers["location"] == "/portal/sign-in/code"
    options = ann.sign_in_options(token)
    assert options["rpId"] == "localhost" and options["userVerification"] == "preferred"
    assert [c["id"] for c in options["allowCredentials"]] == [b64(authenticator.credential_id)]
    answer = ann.client.post(
        "/portal/sign-in/passkey?next=/portal/security",
        data={"csrf": token, "credential": authenticator.get(options, ann.origin)},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/portal/security"
    assert dict(ann.client.cookies) != partial
    security = ann.client.get(SECURITY)
    assert security.status_code == 200 and "<td>never</td>" not in security.text  # last used
    signed = ann.events("portal.signed_in")
    assert any(e["details"].get("second_factor") == "passkey" for e in signed)


def test_a_sign_in_challenge_is_used_once_and_an_old_assertion_is_refused(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, authenticator = ann_with_passkey
    ann.sign_out()
    token = ann.sign_in_password()
    options = ann.sign_in_options(token)
    captured = authenticator.get(options, ann.origin)
    # a first attempt that fails spends the challenge: the right answer to it comes too late
    garbage = ann.post("/portal/sign-in/passkey", token, credential="{}")
    assert garbage.status_code == 400
    late = ann.post("/portal/sign-in/passkey", token, credential=captured)
    assert late.status_code == 400 and "not accepted" in alert(late.text)
    # a new challenge: the old answer (signed over the old one) does not fit it
    ann.sign_in_options(token)
    replayed = ann.post("/portal/sign-in/passkey", token, credential=captured)
    assert replayed.status_code == 400
    failed = ann.events("portal.sign_in_failed")
    assert [e["details"]["reason"] for e in failed].count("passkey") == 3


def test_an_assertion_for_another_origin_is_refused(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, authenticator = ann_with_passkey
    ann.sign_out()
    token = ann.sign_in_password()
    options = ann.sign_in_options(token)
    phished = authenticator.get(options, "http://localhost.evil.example")
    answer = ann.post("/portal/sign-in/passkey", token, credential=phished)
    assert answer.status_code == 400
    assert ann.client.get("/portal/").headers["location"] == "/portal/sign-in/code"


def test_an_unknown_or_another_users_credential_is_refused(
    gateway: RunningGateway, ann_with_passkey: tuple[Browser, Authenticator]
) -> None:
    ann, _ = ann_with_passkey
    bob = sign_up(gateway, "bob@other.example")
    bobs = Authenticator()
    assert bob.register(bobs).status_code == 200
    ann.sign_out()
    for stranger in (Authenticator(), bobs):
        token = ann.sign_in_password()
        options = ann.sign_in_options(token)
        answer = ann.post(
            "/portal/sign-in/passkey", token, credential=stranger.get(options, ann.origin)
        )
        assert answer.status_code == 400 and "not accepted" in alert(answer.text)


def test_a_counter_going_backwards_is_refused_and_recorded(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, authenticator = ann_with_passkey
    ann.sign_out()
    token = ann.sign_in_password()
    options = ann.sign_in_options(token)
    ok = ann.post(
        "/portal/sign-in/passkey", token, credential=authenticator.get(options, ann.origin, count=7)
    )
    assert ok.status_code == 303
    ann.sign_out()
    token = ann.sign_in_password()
    options = ann.sign_in_options(token)
    cloned = authenticator.get(options, ann.origin, count=7)  # the same count again: a copy
    assert ann.post("/portal/sign-in/passkey", token, credential=cloned).status_code == 400
    assert ann.events("portal.passkey_counter_regressed")


def test_an_authenticator_without_a_counter_signs_in_every_time(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, authenticator = ann_with_passkey
    for _ in range(2):
        ann.sign_out()
        token = ann.sign_in_password()
        options = ann.sign_in_options(token)
        answer = ann.post(
            "/portal/sign-in/passkey",
            token,
            credential=authenticator.get(options, ann.origin, count=0),
        )
        assert answer.status_code == 303


def test_sign_in_options_need_the_password_first(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, _ = ann_with_passkey
    ann.sign_out()
    anonymous = ann.client.post(
        "/portal/sign-in/passkey/options", headers={"X-CSRF-Token": ann.csrf("/portal/sign-in")}
    )
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/portal/sign-in"


# ---- a fresh sign-in --------------------------------------------------------------------------


def test_a_passkey_only_user_confirms_with_password_and_passkey(
    ann_with_passkey: tuple[Browser, Authenticator],
) -> None:
    ann, authenticator = ann_with_passkey
    page = ann.client.get("/portal/reauthenticate?next=/portal/security").text
    assert 'id="reauth-passkey"' in page
    token = csrf_of(page)
    only_password = ann.post(
        "/portal/reauthenticate", token, password=PASSWORD, next="/portal/security"
    )
    assert only_password.status_code == 400
    options = ann.options("/portal/reauthenticate/passkey/options", token).json()
    wrong_password = ann.post(
        "/portal/reauthenticate",
        token,
        password="not the password at all",
        passkey=authenticator.get(options, ann.origin),
        next="/portal/security",
    )
    assert wrong_password.status_code == 400
    options = ann.options("/portal/reauthenticate/passkey/options", token).json()
    confirmed = ann.post(
        "/portal/reauthenticate",
        token,
        password=PASSWORD,
        passkey=authenticator.get(options, ann.origin),
        next="/portal/security",
    )
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/portal/security"


# ---- the relying party ------------------------------------------------------------------------


def test_the_relying_party_is_the_public_urls_host_with_its_exact_origin() -> None:
    public = "https://gw.example.com"
    for host in ("gw.example.com", "evil.example", None):
        rp = relying_party(public, "http", host)
        assert (rp.id, rp.origin) == ("gw.example.com", "https://gw.example.com")
    rp = relying_party("https://gw.example.com:8443/", "https", "gw.example.com:8443")
    assert rp.origin == "https://gw.example.com:8443"


def test_a_loopback_host_is_its_own_relying_party() -> None:
    rp = relying_party("https://gw.example.com", "http", "localhost:8080")
    assert (rp.id, rp.origin) == ("localhost", "http://localhost:8080")
    rp = relying_party("http://127.0.0.1:8080", "http", "LOCALHOST")
    assert (rp.id, rp.origin) == ("localhost", "http://localhost")
    for host in ("127.0.0.1:8080", "[::1]:8080"):
        with pytest.raises(PasskeyError, match="host name"):
            relying_party("http://127.0.0.1:8080", "http", host)
