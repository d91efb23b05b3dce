"""The portal's API Credentials page over real HTTP: the user key (hint only, rotated and shown
once, revoked, issued anew), restricted keys created from the form and then used against the
API (Salesforce played by the simulator), listed and revoked; the form refuses what POST /v1/key
refuses, in its words; viewers and members get what the API gives them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    RunningGateway,
    SalesforceSim,
    Settings,
    make_settings,
    migrate_database,
    with_services,
)
from crmgate.api.app import create_app
from test_owasp_api_top10 import connect

APP = "X-API2CRM-APPLICATION-KEY"
USER = "X-API2CRM-USER-KEY"
PASSWORD = "correct horse battery staple"
PAGE = "/portal/credentials"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def shown_key(html: str) -> str:
    found = re.search(r'<code id="new-key" class="key">(cg[ur]_\w+)</code>', html)
    assert found, html
    return found.group(1)


def alert(html: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', html)
    assert found, html
    return found.group(1).replace("&#39;", "'").replace("&#34;", '"')


@dataclass
class Person:
    """A browser signed in to the portal (its cookies), and the user key it was given."""

    client: httpx.Client
    user_id: str
    key: str

    def page(self, path: str = PAGE) -> httpx.Response:
        return self.client.get(path)

    def post(self, path: str, follow_redirects: bool = False, **fields: Any) -> httpx.Response:
        token = csrf_of(self.client.get(PAGE).text)
        return self.client.post(
            path, data={"csrf": token, **fields}, follow_redirects=follow_redirects
        )


@dataclass
class World:
    gateway: RunningGateway
    settings: Settings
    sim: SalesforceSim
    admin: Person
    application: str  # the organisation's Salesforce application

    def api(self, key: str) -> httpx.Client:
        return self.gateway.client(key)

    def person(self, role: str, email: str) -> Person:
        """A user of the admin's organisation with this role, signed in to the portal."""
        with self.api(self.admin.key) as admin:
            created = admin.post("/v1/user", json={"name": role, "email": email, "roles": [role]})
        assert created.status_code == 201, created.text
        user_id, key = created.json()["key"], created.json()["user_key"]

        async def login(services: Any) -> None:
            portal = services.portal
            await portal.logins.ensure(user_id, email, portal.passwords.hash(PASSWORD))

        with_services(self.settings, login)
        client = self.gateway.client()
        form = client.get("/portal/sign-in")
        signed = client.post(
            "/portal/sign-in",
            data={"csrf": csrf_of(form.text), "email": email, "password": PASSWORD, "next": PAGE},
            follow_redirects=True,
        )
        assert signed.status_code == 200 and "API credentials" in signed.text, signed.text
        return Person(client, user_id, key)


def sign_up(gateway: RunningGateway) -> Person:
    client = gateway.client()
    form = client.get("/portal/sign-up")
    done = client.post(
        "/portal/sign-up",
        data={
            "csrf": csrf_of(form.text),
            "organisation": "Acme",
            "name": "Ann Admin",
            "email": "ann@acme.example",
            "password": PASSWORD,
        },
    )
    assert done.status_code == 200, done.text
    key = shown_key(done.text)
    with gateway.client(key) as api:
        me = api.get("/v1/user/list").json()[0]["key"]
    return Person(client, me, key)


def world_of(tmp_path: Path, sim: SalesforceSim, **extra: Any) -> Iterator[World]:
    settings = make_settings(
        tmp_path / "data",
        portal_signup="open",
        portal_argon2_memory_kib=8192,
        portal_argon2_time_cost=1,
        platform_overrides=sim.overrides(),
        outbound_ca_file=sim.ca_file,
        **extra,
    )
    migrate_database(settings)
    with RunningGateway(create_app(settings)) as gateway:
        admin = sign_up(gateway)
        with gateway.client(admin.key) as api:
            application = connect(api, sim, "ada@acme.example")
        yield World(gateway, settings, sim, admin, application)
        admin.client.close()


@pytest.fixture
def world(tmp_path: Path, salesforce: SalesforceSim) -> Iterator[World]:
    yield from world_of(tmp_path, salesforce)


def restricted(world: World, person: Person | None = None, **fields: Any) -> httpx.Response:
    return (person or world.admin).post(f"{PAGE}/restricted", **fields)


def events(world: World, event: str) -> list[dict[str, Any]]:
    with world.api(world.admin.key) as api:
        found = api.get("/v1/audit/list", params={"filter": f"event eq '{event}'"})
    assert found.status_code == 200, found.text
    listed: list[dict[str, Any]] = found.json()
    return listed


# ---- the user key ---------------------------------------------------------------------------


def test_the_page_shows_the_user_keys_hint_never_the_key(world: World) -> None:
    shown = world.admin.page()
    assert shown.status_code == 200
    assert f"{world.admin.key[:10]}…" in shown.text
    assert world.admin.key not in shown.text
    assert shown.headers["cache-control"] == "no-store"


def test_rotating_shows_the_new_key_once_and_the_old_one_stops(world: World) -> None:
    rotated = world.admin.post(f"{PAGE}/user-key/rotate")
    assert rotated.status_code == 200
    new = shown_key(rotated.text)
    assert new.startswith("cgu_") and new != world.admin.key
    assert 'class="copy" data-copy="new-key"' in rotated.text
    with world.api(world.admin.key) as old:
        assert old.get("/v1/platform/list").status_code == 401
    with world.api(new) as fresh:
        assert fresh.get("/v1/platform/list").status_code == 200
    later = world.admin.page().text
    assert new not in later and f"{new[:10]}…" in later
    world.admin.key = new
    [event] = events(world, "key.rotated")
    assert event["details"]["credential"].startswith("portal:")


def test_revoking_leaves_no_key_until_one_is_issued(world: World) -> None:
    kept = shown_key(restricted(world, permission="*:read").text)
    revoked = world.admin.post(f"{PAGE}/user-key/revoke", follow_redirects=True)
    assert revoked.status_code == 200
    assert 'id="no-user-key"' in revoked.text and "Issue a key" in revoked.text
    with world.api(world.admin.key) as gone:
        assert gone.get("/v1/platform/list").status_code == 401
    with world.api(kept) as still:  # restricted keys have their own life
        assert still.get("/v1/platform/list").status_code == 200
    issued = world.admin.post(f"{PAGE}/user-key/rotate")
    world.admin.key = shown_key(issued.text)
    with world.api(world.admin.key) as fresh:
        assert fresh.get("/v1/platform/list").status_code == 200
    assert 'id="no-user-key"' not in world.admin.page().text
    assert events(world, "key.revoked")[0]["details"]["count"] == 1


def test_issuing_a_key_needs_a_fresh_sign_in(tmp_path: Path, salesforce: SalesforceSim) -> None:
    for world in world_of(tmp_path, salesforce, portal_fresh_sign_in=1.0):
        time.sleep(2.2)  # times are kept in whole seconds
        for path in ("user-key/rotate", "restricted"):
            stale = world.admin.post(f"{PAGE}/{path}", follow_redirects=False)
            assert stale.status_code == 303
            assert stale.headers["location"].startswith("/portal/reauthenticate?next=")
        with world.api(world.admin.key) as api:  # nothing changed
            assert api.get("/v1/platform/list").status_code == 200
            assert api.get("/v1/key/count").json() == {"total": 0}


# ---- restricted keys ------------------------------------------------------------------------


def test_a_restricted_key_from_the_form_reaches_only_its_scope(world: World) -> None:
    with world.api(world.admin.key) as api:
        other = connect(api, world.sim, "bo@acme.example")
    created = restricted(
        world,
        description="reporting",
        applications_mode="some",
        application=world.application,
        permission="contact:read",
        expires="2099-12-31",
    )
    assert created.status_code == 200, created.text
    key = shown_key(created.text)
    assert key.startswith("cgr_")
    with world.api(key) as api:
        contacts = api.get("/v1/application/entity/contact/list", headers={APP: world.application})
        assert contacts.status_code == 200, contacts.text
        for refused in (
            api.get("/v1/application/entity/account/list", headers={APP: world.application}),
            api.post(
                "/v1/application/entity/contact",
                headers={APP: world.application},
                json={"last_name": "X"},
            ),
            api.get("/v1/application/entity/contact/list", headers={APP: other}),
            api.post("/v1/application/request", headers={APP: world.application}, json={}),
        ):
            assert refused.status_code == 403, refused.text
            assert refused.json()["detail"]["code"] == "NOT_ALLOWED"
    listed = world.admin.page().text
    assert key not in listed
    row = listed[listed.index(f"<code>{key[:10]}…</code>") :].split("</tr>")[0]
    assert "reporting" in row and "contact: read" in row and "Salesforce" in row
    assert "2099-12-31 00:00 UTC" in row and "Passthrough: no" in row
    [event] = events(world, "key.created")[:1]
    assert event["details"]["credential"].startswith("portal:")


def test_networks_and_passthrough_from_the_form(world: World) -> None:
    created = restricted(world, permission="*:read", passthrough="yes", networks="192.0.2.0/24\n")
    with world.api(shown_key(created.text)) as api:  # the test client is 127.0.0.1
        refused = api.get("/v1/platform/list")
    assert refused.status_code == 403 and "address" in refused.json()["detail"]["message"]
    with world.api(world.admin.key) as api:
        [listed] = api.get("/v1/key/list").json()
    assert listed["passthrough"] is True and listed["allowed_ips"] == ["192.0.2.0/24"]
    assert listed["permissions"] == {"*": ["read"]}


def test_a_key_can_act_for_another_member(world: World) -> None:
    member = world.person("member", "mo@acme.example")
    created = restricted(world, user=member.user_id, permission="contact:read")
    assert created.status_code == 200
    with world.api(world.admin.key) as api:
        [listed] = api.get("/v1/key/list").json()
    assert listed["user"] == member.user_id
    assert "member (mo@acme.example)" in world.admin.page().text


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        ({"networks": "10.0.0.300"}, {"allowed_ips": ["10.0.0.300"]}),
        ({"expires": "2001-01-01"}, {"expires_at": "2001-01-01T00:00:00Z"}),
        ({"expires": "2026-02-30"}, {"expires_at": "2026-02-30T00:00:00Z"}),
        ({"permission": "contact:fly"}, {"permissions": {"contact": ["fly"]}}),
        ({"permission": "no such:read"}, {"permissions": {"no such": ["read"]}}),
        (
            {"applications_mode": "some", "application": "f" * 40},
            {"applications": ["f" * 40]},
        ),
        ({"description": "tab\there"}, {"description": "tab\there"}),
        ({"user": "usr_" + "x" * 22}, {"user": "usr_" + "x" * 22}),
    ],
)
def test_the_form_refuses_what_the_api_refuses_in_its_words(
    world: World, fields: dict[str, str], body: dict[str, Any]
) -> None:
    with world.api(world.admin.key) as api:
        answer = api.post("/v1/key", json=body)
    assert answer.status_code == 422, answer.text
    refused = restricted(world, **fields)
    assert refused.status_code == 400
    assert alert(refused.text) == answer.json()["detail"]["message"]
    with world.api(world.admin.key) as api:
        assert api.get("/v1/key/count").json() == {"total": 0}


def test_a_refused_form_keeps_what_was_ticked(world: World) -> None:
    refused = restricted(
        world,
        description="kept",
        permission=["contact:read", "account:update"],
        passthrough="yes",
        networks="nonsense",
    )
    assert refused.status_code == 400
    page = refused.text
    for box in ("perm-contact-read", "perm-account-update", "rk-passthrough"):
        assert re.search(rf'id="{box}"[^>]*checked', page), box
    assert not re.search(r'id="perm-contact-update"[^>]*checked', page)
    assert 'value="kept"' in page and ">nonsense</textarea>" in page


def test_revoking_a_restricted_key(world: World) -> None:
    key = shown_key(restricted(world, permission="*:read").text)
    with world.api(world.admin.key) as api:
        [listed] = api.get("/v1/key/list").json()
    path = f"{PAGE}/restricted/{listed['id']}/revoke"
    done = world.admin.post(path, follow_redirects=True)
    assert done.status_code == 200 and "was revoked" in done.text
    assert 'id="no-restricted-keys"' in done.text
    with world.api(key) as api:
        assert api.get("/v1/platform/list").status_code == 401
    again = world.admin.post(path)
    assert again.status_code == 404
    assert world.admin.post(f"{PAGE}/restricted/key_nonsense/revoke").status_code == 404


def test_another_organisations_key_cannot_be_revoked(world: World) -> None:
    with world.gateway.client() as stranger_client:
        form = stranger_client.get("/portal/sign-up")
        stranger_client.post(
            "/portal/sign-up",
            data={
                "csrf": csrf_of(form.text),
                "organisation": "Globex",
                "name": "Gil",
                "email": "gil@globex.example",
                "password": PASSWORD,
            },
        )
        restricted(world, permission="*:read")
        with world.api(world.admin.key) as api:
            [listed] = api.get("/v1/key/list").json()
        token = csrf_of(stranger_client.get(PAGE).text)
        refused = stranger_client.post(
            f"{PAGE}/restricted/{listed['id']}/revoke", data={"csrf": token}
        )
    assert refused.status_code == 404
    with world.api(world.admin.key) as api:
        assert api.get("/v1/key/count").json() == {"total": 1}


# ---- roles and forms ------------------------------------------------------------------------


def test_a_viewer_sees_the_hint_and_changes_nothing(world: World) -> None:
    viewer = world.person("viewer", "vi@acme.example")
    restricted(world, permission="*:read")
    shown = viewer.page()
    assert shown.status_code == 200 and f"{viewer.key[:10]}…" in shown.text
    for absent in ("Rotate key", "Revoke key", "restricted-form", "restricted-keys"):
        assert absent not in shown.text
    with world.api(world.admin.key) as api:
        [listed] = api.get("/v1/key/list").json()
    for path in (
        "user-key/rotate",
        "user-key/revoke",
        "restricted",
        f"restricted/{listed['id']}/revoke",
    ):
        assert viewer.post(f"{PAGE}/{path}", permission="*:read").status_code == 403, path
    with world.api(viewer.key) as api:  # the API says the same
        assert api.post(f"/v1/user/{viewer.user_id}/key").status_code == 403
        assert api.get("/v1/platform/list").status_code == 200  # the key still works
        assert api.get("/v1/key/count").status_code == 403
    with world.api(world.admin.key) as api:
        assert api.get("/v1/key/count").json() == {"total": 1}


def test_a_member_rotates_their_own_key_but_issues_no_restricted_key(world: World) -> None:
    member = world.person("member", "mo@acme.example")
    shown = member.page().text
    assert "Rotate key" in shown and "restricted-form" not in shown
    rotated = member.post(f"{PAGE}/user-key/rotate")
    assert rotated.status_code == 200
    with world.api(shown_key(rotated.text)) as api:
        assert api.get("/v1/platform/list").status_code == 200
        assert api.post("/v1/key", json={}).status_code == 403  # the API says the same
    assert member.post(f"{PAGE}/restricted", permission="*:read").status_code == 403
    with world.api(world.admin.key) as api:
        assert api.get("/v1/key/count").json() == {"total": 0}


def test_a_form_without_its_token_is_refused(world: World) -> None:
    refused = world.admin.client.post(f"{PAGE}/user-key/rotate", data={})
    assert refused.status_code == 403
    with world.api(world.admin.key) as api:
        assert api.get("/v1/platform/list").status_code == 200


def test_signed_out_visitors_are_sent_to_sign_in(world: World) -> None:
    with world.gateway.client() as anonymous:
        answer = anonymous.get(PAGE, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/portal/sign-in?next=/portal/credentials"
