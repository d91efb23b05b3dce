"""Least privilege: restricted keys (applications, entities x actions, passthrough, expiry,
client addresses) and roles (admin, member, viewer), through the real HTTP API and CLI, with
Salesforce played by the simulator."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from conftest import RunningGateway, SalesforceSim, Settings, create_account
from crmgate.api.app import create_app
from crmgate.cli import app as cli
from test_owasp_api_top10 import World, connect, world_of

APP = "X-API2CRM-APPLICATION-KEY"
USER = "X-API2CRM-USER-KEY"
CONTACTS = "/v1/application/entity/contact"


@pytest.fixture
def world(tmp_path: Path, salesforce: SalesforceSim) -> Iterator[World]:
    yield from world_of(tmp_path, salesforce)


def issue(world: World, **scope: Any) -> dict[str, Any]:
    with world.client(world.acme.key) as admin:
        created = admin.post("/v1/key", json=scope)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def refused(answer: httpx.Response, *words: str) -> None:
    """403 NOT_ALLOWED, the message naming what is missing."""
    assert answer.status_code == 403, answer.text
    detail = answer.json()["detail"]
    assert detail["code"] == "NOT_ALLOWED", detail
    for word in words:
        assert word in detail["message"], (word, detail["message"])


def contact_id(world: World) -> str:
    """A contact the admin creates in the application's CRM."""
    with world.client(world.acme.key) as admin:
        created = admin.post(
            CONTACTS,
            headers={APP: world.acme_app},
            json={"first_name": "Ada", "last_name": "Lovelace"},
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


class TestRestrictedKeys:
    def test_issued_once_listed_without_secret_and_revoked(
        self, world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        created = issue(
            world,
            description="reporting",
            applications=[world.acme_app],
            permissions={"contact": ["read"]},
        )
        secret = created["user_key"]
        assert re.fullmatch(r"cgr_[0-9A-Za-z]{38}", secret)
        assert created["user"] == world.acme.user_id
        assert created["permissions"] == {"contact": ["read"]}
        with world.client(world.acme.key) as admin:
            listed = admin.get("/v1/key/list")
            assert listed.status_code == 200
            assert secret not in listed.text and secret[10:] not in listed.text
            (entry,) = listed.json()
            assert entry["id"] == created["id"]
            assert entry["user_key_hint"] == secret[:10]
            assert "user_key" not in entry
            # what the key does not have (an expiry, a last use) is left out, never null
            assert "expires_at" not in entry and "last_used_at" not in entry
            assert "null" not in listed.text
            assert admin.get("/v1/key/count").json() == {"total": 1}
        with world.client(secret) as client:
            ok = client.get(f"{CONTACTS}/list", headers={APP: world.acme_app})
            assert ok.status_code == 200, ok.text
        with world.client(world.acme.key) as admin:
            assert admin.delete(f"/v1/key/{created['id']}").status_code == 204
            assert admin.delete(f"/v1/key/{created['id']}").status_code == 404
            assert admin.get("/v1/key/list").json() == []
        with world.client(secret) as client:  # revoked: 401, as any unknown key
            gone = client.get(f"{CONTACTS}/list", headers={APP: world.acme_app})
            assert gone.status_code == 401
            assert gone.json()["detail"]["code"] == "SERVICE_UNAUTHORIZED"
        with world.client(world.acme.key) as admin:
            events = admin.get("/v1/audit/list", params={"filter": "event startswith 'key.'"})
            assert "null" not in events.text  # what an event lacks is left out
        kinds = {(e["event"], e["details"].get("restricted")) for e in events.json()}
        assert {("key.created", created["id"]), ("key.revoked", created["id"])} <= kinds
        assert secret not in events.text
        # the secret is in no log line and in no byte of the database (SQLite file and WAL)
        assert secret not in caplog.text
        stored = b"".join(p.read_bytes() for p in tmp_path.rglob("crmgate.db*"))
        assert stored and secret.encode() not in stored

    def test_only_admins_manage_keys_of_their_own_organisation(self, world: World) -> None:
        created = issue(world, permissions={"*": ["read"]})
        with world.client(world.acme_member) as member:
            refused(member.post("/v1/key", json={}), "admin")
            refused(member.get("/v1/key/list"), "admin")
            refused(member.delete(f"/v1/key/{created['id']}"), "admin")
        with world.client(world.globex.key) as other:
            assert other.get("/v1/key/list").json() == []
            assert other.delete(f"/v1/key/{created['id']}").status_code == 404
            mine = other.post(
                "/v1/key", json={"user": world.acme.user_id, "permissions": {"*": ["read"]}}
            )
            assert mine.status_code == 422, mine.text  # not a user of Globex
        with world.client(created["user_key"]) as restricted:
            # a restricted key of an admin issues nothing its scope does not grant
            refused(restricted.post("/v1/key", json={}), "key:create")
            refused(
                restricted.post("/v1/user", json={"name": "X", "email": "x@a.example"}),
                "full user key",
            )

    def test_bad_scopes_are_refused_and_change_nothing(self, world: World) -> None:
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        with world.client(world.acme.key) as admin:
            for body in (
                {"permissions": {"contact": ["erase"]}},
                {"permissions": {"con tact": ["read"]}},
                {"gateway": {"vault": ["read"]}},
                {"gateway": {"audit": ["erase"]}},
                {"applications": ["not-a-key"]},
                {"applications": ["0" * 40]},  # no such application
                {"allowed_ips": ["10.0.0.0/33"]},
                {"expires_at": past},
                {"expires_at": "2030-01-01T00:00:00"},  # no time zone
                {"user": "usr_nobody"},
                {"unknown": True},
            ):
                answer = admin.post("/v1/key", json=body)
                assert answer.status_code in (400, 422), (body, answer.text)
                assert answer.json()["detail"]["code"] in ("NOT_VALID", "MALFORMED_REQUEST")
            assert admin.get("/v1/key/count").json() == {"total": 0}


class TestAuthorityNeverGrows:
    """A restricted key reaches crmgate's own resources only as its ``gateway`` scope says, never
    mints a full key or raises a role, and issues only keys within itself."""

    def test_a_restricted_key_of_an_admin_cannot_mint_a_full_key(self, world: World) -> None:
        """The attack: an admin's contact-reading key rotating its admin's key, editing the
        admin, reading the audit trail and the keys."""
        key = issue(
            world,
            user=world.acme.user_id,
            applications=[world.acme_app],
            permissions={"contact": ["read"]},
        )
        admin_id = world.acme.user_id
        with world.client(key["user_key"]) as restricted:
            refused(restricted.post(f"/v1/user/{admin_id}/key"), "full user key")
            refused(restricted.put(f"/v1/user/{admin_id}", json={"name": "Eve"}), "user:update")
            refused(restricted.get("/v1/audit/list"), "audit:read")
            refused(restricted.get("/v1/key/list"), "key:read")
            refused(restricted.delete(f"/v1/key/{key['id']}"), "key:delete")
            refused(restricted.get("/v1/user/list"), "user:read")
            refused(restricted.delete(f"/v1/application/{world.acme_app}"), "application:delete")
            # what it was given still works
            assert restricted.get("/v1/platform/list").status_code == 200
            assert restricted.get(f"/v1/application/{world.acme_app}").status_code == 200
        with world.client(world.acme.key) as admin:  # the admin's own key is untouched
            (me,) = [u for u in admin.get("/v1/user/list").json() if u["key"] == admin_id]
            assert me["name"] != "Eve"
            events = admin.get("/v1/audit/list", params={"filter": "event eq 'key.rotated'"})
            assert events.status_code == 200 and events.json() == []

    def test_gateway_grants_need_the_role_too_and_never_full_keys(self, world: World) -> None:
        everything = {
            resource: ["read", "create", "update", "delete"]
            for resource in ("platform", "application", "user", "key", "audit")
        }
        admins = issue(world, gateway=everything)
        members = issue(world, user=member_id(world), gateway=everything)
        with world.client(admins["user_key"]) as restricted:
            assert restricted.get("/v1/audit/list").status_code == 200
            assert len(restricted.get("/v1/user/list").json()) == 2
            refused(restricted.post(f"/v1/user/{world.acme.user_id}/key"), "full user key")
            refused(
                restricted.post("/v1/user", json={"name": "X", "email": "x@acme.example"}),
                "full user key",
            )
            # a role or a status is changed with a full key only: it would grant what it lacks
            refused(
                restricted.put(f"/v1/user/{member_id(world)}", json={"roles": ["admin"]}),
                "full user key",
            )
            renamed = restricted.put(f"/v1/user/{world.acme.user_id}", json={"name": "Ada"})
            assert renamed.status_code == 200, renamed.text
        with world.client(members["user_key"]) as restricted:
            refused(restricted.get("/v1/audit/list"), "admin role")
            refused(restricted.get("/v1/key/list"), "admin role")
        with world.client(world.acme.key) as admin:
            roles = {u["key"]: u["roles"] for u in admin.get("/v1/user/list").json()}
        assert roles[member_id(world)] == ["member"]

    def test_a_key_issues_keys_only_within_itself(self, world: World) -> None:
        soon = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
        parent = issue(
            world,
            applications=[world.acme_app],
            permissions={"contact": ["read", "update"]},
            gateway={"key": ["create"], "platform": ["read"]},
            expires_at=soon.isoformat(),
            allowed_ips=["127.0.0.0/8"],
        )
        with world.client(parent["user_key"]) as restricted:
            for wider in (
                {"applications": None},
                {"permissions": {"contact": ["delete"]}},
                {"permissions": {"*": ["read"]}},
                {"permissions": {"account": ["read"]}},
                {"passthrough": True},
                {"gateway": {"key": ["create"], "audit": ["read"]}},
                {"expires_at": (soon + timedelta(days=1)).isoformat()},
                {"allowed_ips": ["10.0.0.0/8"]},
                {"allowed_ips": ["0.0.0.0/0"]},
                {"user": member_id(world)},
            ):
                refused(restricted.post("/v1/key", json=wider))
            child = restricted.post("/v1/key", json={"permissions": {"contact": ["read"]}})
            assert child.status_code == 201, child.text
        made = child.json()
        # what the child leaves out it inherits from its issuer, never the wider defaults
        assert made["user"] == world.acme.user_id
        assert made["applications"] == [world.acme_app]
        assert made["expires_at"].startswith(soon.strftime("%Y-%m-%dT%H:%M:%S"))
        assert made["allowed_ips"] == ["127.0.0.0/8"]
        assert made["gateway"] == {"platform": ["read"]}
        with world.client(made["user_key"]) as child_key:
            assert child_key.get("/v1/platform/list").status_code == 200
            refused(child_key.post("/v1/key", json={}), "key:create")
        with world.client(world.acme.key) as admin:
            assert admin.get("/v1/key/count").json() == {"total": 2}

    def test_audit_events_name_the_credential_that_acted(self, world: World) -> None:
        key = issue(world, gateway={"user": ["read", "update"]})
        with world.client(key["user_key"]) as restricted:
            changed = restricted.put(f"/v1/user/{world.acme.user_id}", json={"phone": "+1 555"})
            assert changed.status_code == 200, changed.text
        with world.client(world.acme.key) as admin:
            assert admin.put(f"/v1/user/{world.acme.user_id}", json={"name": "A"}).is_success
            events = admin.get("/v1/audit/list", params={"filter": "event eq 'user.updated'"})
            key_ids = {
                e["details"]["credential_kind"]: e["details"]["credential"] for e in events.json()
            }
            issuing = admin.get("/v1/audit/list", params={"filter": "event eq 'key.created'"})
            (admin_key_id,) = {
                e["details"]["credential"] for e in issuing.json() if "credential" in e["details"]
            }
        assert key_ids["restricted"] == key["id"]
        assert key_ids["user"] == admin_key_id and admin_key_id.startswith("key_")


def member_id(world: World) -> str:
    with world.client(world.acme_member) as member:
        (me,) = member.get("/v1/user/list").json()
    return str(me["key"])


class TestScopeEnforcement:
    def test_applications(self, world: World) -> None:
        with world.client(world.acme.key) as admin:
            other_app = connect(admin, world.sim, "bo@acme.example")
        key = issue(world, applications=[world.acme_app], permissions={"*": ["read"]})
        with world.client(key["user_key"]) as client:
            assert client.get(f"{CONTACTS}/count", headers={APP: world.acme_app}).status_code == 200
            refused(client.get(f"{CONTACTS}/count", headers={APP: other_app}), other_app)
            refused(client.get("/v1/application/entity/list", headers={APP: other_app}), other_app)
            refused(client.get(f"/v1/application/{other_app}"), other_app)
            assert client.get(f"/v1/application/{world.acme_app}").status_code == 200

    def test_an_application_outside_the_scope_is_403_whether_it_exists_or_not(
        self, tmp_path: Path, salesforce: SalesforceSim
    ) -> None:
        """The same answer for the organisation's other application, another organisation's
        and a made-up key; and the other application's quota is not spent by the attempts."""
        for world in world_of(tmp_path, salesforce, rate_limit_application="100/minute"):
            with world.client(world.acme.key) as admin:
                other_app = connect(admin, world.sim, "bo@acme.example")
            key = issue(world, applications=[world.acme_app], permissions={"*": ["read"]})
            made_up = "0123456789abcdef" * 2 + "01234567"
            answers: dict[str, list[httpx.Response]] = {}
            with world.client(key["user_key"]) as client:
                for name, app in (
                    ("other", other_app),
                    ("foreign", world.globex_app),
                    ("made up", made_up),
                ):
                    answers[name] = [
                        client.get(f"/v1/application/{app}"),
                        client.get(f"{CONTACTS}/count", headers={APP: app}),
                        client.get("/v1/application/entity/list", headers={APP: app}),
                    ]
            shapes = {
                name: [
                    (a.status_code, a.json()["detail"]["code"], a.headers.get("ratelimit-policy"))
                    for a in found
                ]
                for name, found in answers.items()
            }
            assert shapes["other"] == shapes["foreign"] == shapes["made up"], shapes
            for found in answers.values():
                for answer in found:
                    refused(answer, "may not use the application")
            with world.client(world.acme.key) as admin:
                shown = admin.get(f"/v1/application/{other_app}").json()["requests_limit"]
            assert shown["type"][0]["count"] == 0, shown  # nothing was spent on it

    def test_entities_and_actions(self, world: World) -> None:
        record = contact_id(world)
        key = issue(world, permissions={"contact": ["read", "update"]})
        headers = {APP: world.acme_app}
        with world.client(key["user_key"]) as client:
            for path in ("/list", "/count", "/describe", f"/{record}"):
                answer = client.get(f"{CONTACTS}{path}", headers=headers)
                assert answer.status_code == 200, (path, answer.text)
            # the CRM's own object by its name is the same entity
            generic = client.get("/v1/application/entity/Contact/list", headers=headers)
            assert generic.status_code == 200, generic.text
            updated = client.put(
                f"{CONTACTS}/{record}", headers=headers, json={"first_name": "Ava"}
            )
            assert updated.status_code == 200, updated.text
            refused(client.post(CONTACTS, headers=headers, json={}), "create", "contact")
            refused(client.delete(f"{CONTACTS}/{record}", headers=headers), "delete", "contact")
            refused(client.post(f"{CONTACTS}/bulk", headers=headers, json={}), "create")
            refused(
                client.request("DELETE", f"{CONTACTS}/bulk", headers=headers, json={}), "delete"
            )
            refused(
                client.get("/v1/application/entity/account/list", headers=headers),
                "read",
                "account",
            )
            refused(client.get("/v1/application/entity/Account/list", headers=headers), "account")
            # the catalogue and fields are the application's, no entity's
            assert client.get("/v1/application/entity/list", headers=headers).status_code == 200
        with world.client(world.acme.key) as admin:  # the record is still there
            assert admin.get(f"{CONTACTS}/{record}", headers=headers).status_code == 200

    def test_passthrough_needs_its_own_permission(self, world: World) -> None:
        call = {"method": "GET", "path": "sobjects/Contact/describe"}
        headers = {APP: world.acme_app}
        without = issue(world, permissions={"*": ["read", "create", "update", "delete"]})
        with world.client(without["user_key"]) as client:
            refused(
                client.post("/v1/application/request", headers=headers, json=call), "passthrough"
            )
        allowed = issue(world, passthrough=True)
        with world.client(allowed["user_key"]) as client:
            answer = client.post("/v1/application/request", headers=headers, json=call)
            assert answer.status_code != 403, answer.text

    def test_client_addresses(self, world: World) -> None:
        elsewhere = issue(world, permissions={"*": ["read"]}, allowed_ips=["203.0.113.0/24"])
        here = issue(world, permissions={"*": ["read"]}, allowed_ips=["127.0.0.0/8", "::1"])
        with world.client(elsewhere["user_key"]) as client:
            refused(client.get("/v1/platform/list"), "127.0.0.1")
            refused(client.get(f"{CONTACTS}/count", headers={APP: world.acme_app}), "address")
        with world.client(here["user_key"]) as client:
            assert client.get(f"{CONTACTS}/count", headers={APP: world.acme_app}).status_code == 200

    def test_expiry(self, world: World) -> None:
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        key = issue(world, permissions={"*": ["read"]}, expires_at=soon.isoformat())
        assert key["expires_at"].startswith(soon.strftime("%Y-%m-%dT%H:%M:%S"))
        with world.client(key["user_key"]) as client:
            assert client.get("/v1/platform/list").status_code == 200
            time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
            expired = client.get("/v1/platform/list")
        assert expired.status_code == 401, expired.text
        assert "expired" in expired.json()["detail"]["message"]


def test_a_key_lists_counts_and_reads_only_its_applications(
    crm_gateway: RunningGateway, crm_settings: Settings, salesforce: SalesforceSim
) -> None:
    """On each database: three applications; keys limited to one, to two and to none of them.
    Lists, counts, filters and pages are those of the key's applications."""
    acme = create_account(crm_settings)
    with crm_gateway.client(acme.key) as admin:
        apps = [connect(admin, salesforce, f"u{n}@acme.example") for n in range(3)]
        issued = {
            scope: admin.post(
                "/v1/key", json={"applications": chosen, "permissions": {"*": ["read"]}}
            ).json()["user_key"]
            for scope, chosen in (("one", [apps[1]]), ("two", [apps[0], apps[2]]), ("none", []))
        }
        assert admin.get("/v1/application/count").json() == {"total": 3}
        assert len(admin.get("/v1/application/list").json()) == 3

    def keys_of(client: httpx.Client, **params: Any) -> list[str]:
        answer = client.get("/v1/application/list", params=params)
        assert answer.status_code == 200, answer.text
        return [item["key"] for item in answer.json()]

    def count(client: httpx.Client, **params: Any) -> int:
        answer = client.get("/v1/application/count", params=params)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["total"])

    with crm_gateway.client(issued["one"]) as one:
        assert keys_of(one) == [apps[1]]
        assert count(one) == 1 and count(one, filter="type eq 'Salesforce'") == 1
        assert keys_of(one, page_size=1) == [apps[1]] and keys_of(one, page=2, page_size=1) == []
        # a filter naming another application finds nothing rather than it
        assert keys_of(one, filter=f"key eq '{apps[0]}'") == []
        assert count(one, filter=f"key eq '{apps[0]}'") == 0
        assert one.get(f"/v1/application/{apps[1]}").json()["key"] == apps[1]
        for other in (apps[0], apps[2]):
            refused(one.get(f"/v1/application/{other}"), other)
    with crm_gateway.client(issued["two"]) as two:
        first, second = sorted([apps[0], apps[2]])
        pages = [keys_of(two, page=page, page_size=1, sort="key") for page in (1, 2, 3)]
        assert pages == [[first], [second], []]
        assert keys_of(two, sort="-key") == [second, first]
        assert count(two) == 2
    with crm_gateway.client(issued["none"]) as none:
        assert keys_of(none) == [] and count(none) == 0


class TestViewerRole:
    def test_a_viewer_reads_and_changes_nothing(self, world: World) -> None:
        record = contact_id(world)
        with world.client(world.acme.key) as admin:
            made = admin.post(
                "/v1/user", json={"name": "Vi", "email": "vi@acme.example", "roles": ["viewer"]}
            )
            assert made.status_code == 201, made.text
            assert admin.get(f"/v1/user/{made.json()['key']}").json()["roles"] == ["viewer"]
        headers = {APP: world.acme_app}
        with world.client(made.json()["user_key"]) as viewer:
            assert viewer.get(f"{CONTACTS}/{record}", headers=headers).status_code == 200
            assert viewer.get("/v1/application/list").status_code == 200
            refused(
                viewer.put(f"{CONTACTS}/{record}", headers=headers, json={"title": "x"}), "member"
            )
            refused(viewer.post(CONTACTS, headers=headers, json={"last_name": "X"}), "member")
            refused(viewer.put(f"/v1/user/{made.json()['key']}", json={"name": "V"}), "member")
            refused(viewer.post("/v1/application/request", headers=headers, json={}), "member")


# ---- every operation of the OpenAPI document, with every role ---------------------------------

RANK = {"viewer": 0, "member": 1, "admin": 2}
PUBLIC = {
    ("get", "/health"),
    ("get", "/authorization/oauth/{platform}/authorize"),
    ("get", "/authorization/oauth/{platform}/callback"),
}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, str | None, bool]]:
    return [
        (method, path, operation.get("x-crmgate-role"), bool(operation.get("x-crmgate-full-key")))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


EVERY_ACTION = ["read", "create", "update", "delete"]
WIDEST = {
    "applications": None,
    "permissions": {"*": EVERY_ACTION},
    "passthrough": True,
    "gateway": {r: EVERY_ACTION for r in ("platform", "application", "user", "key", "audit")},
}
NARROWEST = {"applications": [], "permissions": {}, "gateway": {}}


def test_every_operation_is_refused_or_not_by_its_declared_role(
    tmp_path: Path, salesforce: SalesforceSim
) -> None:
    """Every operation of the OpenAPI document with an admin's, a member's and a viewer's key,
    and with restricted keys of the widest scope (of each role) and the narrowest: a key passes
    exactly where its role reaches and its scope grants; a restricted key never passes an
    operation that mints a full key or raises a role."""
    for world in world_of(tmp_path, salesforce):
        with world.client(world.acme.key) as admin:
            document = admin.get("/v1/openapi.json").json()
            viewer_user = admin.post(
                "/v1/user", json={"name": "Vi", "email": "vi@acme.example", "roles": ["viewer"]}
            ).json()
        operations = _operations(document)
        assert len(operations) > 300
        undeclared = {(m, p) for m, p, role, _ in operations if role is None}
        assert undeclared == PUBLIC  # every other operation says which role it needs
        declared = {(m, p): role for m, p, role, _ in operations}
        for expected in (
            ("post", "/v1/user", "admin"),
            ("delete", "/v1/application/{key}", "admin"),
            ("post", "/v1/key", "admin"),
            ("get", "/v1/audit/list", "admin"),
            ("put", "/v1/user/{internal_user_id}", "member"),
            ("post", "/v1/application/entity/contact", "member"),
            ("post", "/v1/application/request", "member"),
            ("get", "/v1/application/entity/contact/list", "viewer"),
            ("get", "/v1/application/list", "viewer"),
        ):
            assert declared[expected[:2]] == expected[2], expected
        full_key_only = {(m, p) for m, p, _, full in operations if full}
        assert full_key_only == {
            ("post", "/v1/user"),
            ("post", "/v1/user/{internal_user_id}/key"),
        }
        users = {"admin": world.acme.user_id, "member": member_id(world)}
        users["viewer"] = viewer_user["key"]
        keys: dict[str, tuple[str, str, bool]] = {  # name -> key, its user's role, restricted
            "admin": (world.acme.key, "admin", False),
            "member": (world.acme_member, "member", False),
            "viewer": (viewer_user["user_key"], "viewer", False),
            "restricted narrowest": (issue(world, **NARROWEST)["user_key"], "admin", True),
        }
        for role, user in users.items():
            widest = issue(world, user=user, **WIDEST)["user_key"]
            keys[f"restricted widest of a {role}"] = (widest, role, True)
        wrong: list[str] = []
        with world.client() as client:
            for method, path, role, full in operations:
                if role is None:
                    continue
                # made-up ids, an application of no one, an empty body: nothing is changed
                url = re.sub(r"\{[^}]+\}", "x0", path)
                if "{key}" in path:
                    url = path.replace("{key}", "0" * 40)
                for caller, (key, user_role, restricted) in keys.items():
                    answer = client.request(
                        method,
                        url,
                        headers={USER: key, APP: "0" * 40},
                        json={} if method in ("post", "put") else None,
                    )
                    by_role = RANK[user_role] < RANK[role]
                    by_scope = restricted and (full or caller == "restricted narrowest")
                    should_refuse = by_role or by_scope
                    if should_refuse != (answer.status_code == 403):
                        wrong.append(f"{caller} {method.upper()} {path}: {answer.status_code}")
                    elif should_refuse and answer.json()["detail"]["code"] != "NOT_ALLOWED":
                        wrong.append(f"{caller} {method.upper()} {path}: {answer.text}")
                    elif by_role and role not in answer.json()["detail"]["message"]:
                        wrong.append(f"{caller} {method.upper()} {path}: {answer.text}")
        assert not wrong, wrong
        with world.client(world.acme.key) as admin:  # nothing was changed
            assert len(admin.get("/v1/user/list").json()) == 3
            assert len(admin.get("/v1/application/list").json()) == 1


def test_each_gateway_permission_opens_exactly_its_operations(
    tmp_path: Path, salesforce: SalesforceSim
) -> None:
    """An admin's restricted key granted one gateway permission (``audit:read``, ``key:create``,
    ...) and nothing else passes exactly the operations that declare it (full-key ones never)."""
    for world in world_of(tmp_path, salesforce):
        with world.client(world.acme.key) as admin:
            document = admin.get("/v1/openapi.json").json()
        gateway = [
            (
                method,
                path,
                operation["x-crmgate-permission"],
                bool(operation.get("x-crmgate-full-key")),
            )
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if ":" in operation.get("x-crmgate-permission", "")
        ]
        granted = sorted({permission for _, _, permission, _ in gateway})
        assert granted == [
            "application:create",
            "application:delete",
            "application:read",
            "application:update",
            "audit:read",
            "key:create",
            "key:delete",
            "key:read",
            "platform:read",
            "user:create",
            "user:delete",
            "user:read",
            "user:update",
        ]
        wrong: list[str] = []
        with world.client() as client:
            for permission in granted:
                resource, action = permission.split(":")
                key = issue(world, gateway={resource: [action]})["user_key"]
                for method, path, needed, full in gateway:
                    url = re.sub(r"\{[^}]+\}", "x0", path.replace("{key}", "0" * 40))
                    answer = client.request(
                        method,
                        url,
                        headers={USER: key},
                        json={} if method in ("post", "put") else None,
                    )
                    should_pass = needed == permission and not full
                    if should_pass == (answer.status_code == 403):
                        wrong.append(f"{permission}: {method.upper()} {path}: {answer.status_code}")
        assert not wrong, wrong


# ---- storage on both backends, and the CLI ------------------------------------------------------


def test_restricted_keys_on_each_database(settings: Settings) -> None:
    account = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(account.key) as admin:
        created = admin.post(
            "/v1/key",
            json={"permissions": {"contact": ["read"]}, "allowed_ips": ["127.0.0.1"]},
        )
        assert created.status_code == 201, created.text
        secret = created.json()["user_key"]
        with gateway.client(secret) as restricted:
            assert restricted.get("/v1/platform/list").status_code == 200
            # the user's own key is untouched by restricted keys, and rotates alone
            rotated = admin.post(f"/v1/user/{account.user_id}/key")
            assert rotated.status_code == 201
            assert restricted.get("/v1/platform/list").status_code == 200
        with gateway.client(rotated.json()["user_key"]) as admin_again:
            (user,) = admin_again.get("/v1/user/list").json()
            assert user["key"] == account.user_id
            assert admin_again.delete(f"/v1/key/{created.json()['id']}").status_code == 204
        with gateway.client(secret) as restricted:
            assert restricted.get("/v1/platform/list").status_code == 401


def test_cli_creates_and_lists_restricted_keys(
    sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = create_account(sqlite_settings)
    monkeypatch.setenv("CRMGATE_DATA_DIR", str(sqlite_settings.data_dir))
    runner = CliRunner()
    created = runner.invoke(
        cli,
        [
            "key",
            "create",
            "--user-id",
            account.user_id,
            "--permission",
            "contact=read,update",
            "--permission",
            "account=read",
            "--expires-in-days",
            "30",
            "--allow-ip",
            "10.1.0.0/16",
            "--gateway",
            "audit=read",
            "--gateway",
            "platform=read",
            "--json",
        ],
    )
    assert created.exit_code == 0, created.output
    issued = json.loads(created.output)
    assert issued["user_key"].startswith("cgr_")
    assert issued["permissions"] == {"account": ["read"], "contact": ["read", "update"]}
    assert issued["gateway"] == {"audit": ["read"], "platform": ["read"]}
    listed = runner.invoke(cli, ["key", "list"])
    assert listed.exit_code == 0, listed.output
    assert issued["id"] in listed.output and "contact=read,update" in listed.output
    assert "gateway audit=read;platform=read" in listed.output
    assert issued["user_key"] not in listed.output
    bad = runner.invoke(
        cli, ["key", "create", "--user-id", account.user_id, "--permission", "contact=erase"]
    )
    assert bad.exit_code == 1 and "permissions" in bad.output
    deleted = runner.invoke(cli, ["key", "delete", "--key-id", issued["id"]])
    assert deleted.exit_code == 0, deleted.output
    assert issued["id"] not in runner.invoke(cli, ["key", "list"]).output
