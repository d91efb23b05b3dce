"""The portal's Members page, invitations and password resets, over real HTTP against a running
gateway, with the e-mail going through a real SMTP server on loopback (aiosmtpd): invite,
accept and sign in; links that work once and expire; role changes and removals under the
account rules, ending the user's sessions; "two-factor authentication for every member"; a
reset that tells no one whether an address has an account."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import update

from conftest import RunningGateway, loopback_socket, make_settings, migrate_database, with_services
from crmgate.api.app import create_app
from crmgate.runtime import Services
from crmgate.settings import Settings
from crmgate.store.accounts import Role
from crmgate.store.db import session_factory
from crmgate.store.models import PortalInvitation, PortalPasswordReset, utcnow

PASSWORD = "correct horse battery staple"


# ---- a mail server on loopback ------------------------------------------------------------------


class Mailbox:
    """What a real SMTP server (aiosmtpd) received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._arrived = threading.Condition()
        # a slow server: DATA waits until the test opens the gate (set: no wait)
        self.gate = threading.Event()
        self.gate.set()

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:
        await asyncio.to_thread(self.gate.wait, 30)
        content = envelope.original_content or b""
        with self._arrived:
            self.messages.append(message_from_bytes(content))
            self._arrived.notify_all()
        return "250 OK"

    def wait(self, count: int, timeout: float = 10) -> list[Message]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        assert len(self.messages) >= count, f"{len(self.messages)} e-mails, not {count}"
        return self.messages

    def to(self, address: str) -> list[Message]:
        return [message for message in self.messages if message["To"] == address]


def link_in(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(r"https?://\S+/portal/\S+", body.decode())
    assert found, body
    return found.group(0)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    free = loopback_socket()
    port = free.getsockname()[1]
    free.close()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.port = port  # type: ignore[attr-defined]
    yield box
    controller.stop()


# ---- a gateway and people in browsers -----------------------------------------------------------


def gateway_with(tmp_path: Path, **extra: Any) -> tuple[RunningGateway, Settings]:
    bound = loopback_socket()
    extra.setdefault("portal_signup", "open")
    settings = make_settings(
        tmp_path / "data",
        public_url=f"http://127.0.0.1:{bound.getsockname()[1]}",
        # cheap hashes: these tests sign in often (the parameters have tests of their own)
        portal_argon2_memory_kib=8192,
        portal_argon2_time_cost=1,
        **extra,
    )
    migrate_database(settings)
    return RunningGateway(create_app(settings), bound), settings


@pytest.fixture
def mailed(tmp_path: Path, mailbox: Mailbox) -> Iterator[RunningGateway]:
    gateway, _ = gateway_with(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,  # type: ignore[attr-defined]
        smtp_starttls=False,
    )
    with gateway:
        yield gateway


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


class Person:
    """One browser: its cookies, and the form token of the last page it read."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.http = gateway.client()
        self.csrf = ""

    def get(self, path: str) -> httpx.Response:
        answer = self.http.get(path)
        if 'name="csrf"' in answer.text:
            self.csrf = csrf_of(answer.text)
        return answer

    def post(self, path: str, **fields: str) -> httpx.Response:
        answer = self.http.post(path, data={"csrf": self.csrf, **fields})
        if 'name="csrf"' in answer.text:
            self.csrf = csrf_of(answer.text)
        return answer

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/portal/sign-in")
        return self.post("/portal/sign-in", email=email, password=password, next="/portal/")

    def signed_in(self) -> bool:
        return self.http.get("/portal/").status_code == 200


def sign_up(gateway: RunningGateway, email: str = "ann@acme.example") -> tuple[Person, str]:
    """A new organisation (Acme) with ``email`` as its admin; the admin's browser and key."""
    admin = Person(gateway)
    admin.get("/portal/sign-up")
    answer = admin.post(
        "/portal/sign-up", organisation="Acme", name="Ann Admin", email=email, password=PASSWORD
    )
    assert answer.status_code == 200, answer.text
    key = re.search(r'id="new-key" class="key">([^<]+)<', answer.text)
    assert key
    return admin, key.group(1)


def invite(admin: Person, email: str, role: str = "member") -> httpx.Response:
    admin.get("/portal/members")
    return admin.post("/portal/members/invite", email=email, role=role)


def accept(gateway: RunningGateway, link: str, name: str = "Bob") -> tuple[Person, httpx.Response]:
    invitee = Person(gateway)
    path = httpx.URL(link).path
    assert invitee.get(path).status_code == 200
    return invitee, invitee.post(path, name=name, password=PASSWORD)


def joined(
    gateway: RunningGateway, admin: Person, mailbox: Mailbox, email: str, role: str
) -> Person:
    """``email`` invited with ``role``, accepted: their signed-in browser."""
    count = len(mailbox.messages)
    assert invite(admin, email, role).status_code == 200
    person, answer = accept(gateway, link_in(mailbox.wait(count + 1)[-1]))
    assert answer.status_code == 200, answer.text
    return person


def audit_events(
    gateway: RunningGateway, key: str, prefix: str = "portal."
) -> list[dict[str, Any]]:
    with gateway.client(key) as api:
        answer = api.get("/v1/audit/list", params={"filter": f"event startswith '{prefix}'"})
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()
    return events


def member_row(admin: Person, email: str) -> str:
    page = admin.get("/portal/members").text
    found = re.search(rf'<tr data-email="{re.escape(email)}">(.*?)</tr>', page, re.S)
    assert found, f"{email} is not on the Members page"
    return found.group(1)


def user_id_of(admin: Person, email: str) -> str:
    found = re.search(r"/portal/members/(usr_\w+)/role", member_row(admin, email))
    assert found
    return found.group(1)


def change_database(settings: Settings, statement: Any) -> None:
    async def work(services: Services) -> None:
        async with session_factory(services.engine).begin() as session:
            await session.execute(statement)

    with_services(settings, work)


# ---- invitations --------------------------------------------------------------------------------


def test_an_invitation_by_e_mail_is_accepted_and_the_invitee_signs_in(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    admin, key = sign_up(mailed)
    answer = invite(admin, "Bob@Acme.example", "viewer")
    assert answer.status_code == 200
    assert "An invitation was sent to bob@acme.example" in answer.text
    assert "bob@acme.example" in answer.text and "Open invitations" in answer.text
    (message,) = mailbox.wait(1)
    assert message["To"] == "bob@acme.example"
    assert message["Subject"] == "Join Acme on crmgate"
    link = link_in(message)
    assert link.startswith(f"{mailed.base_url}/portal/invitation/")
    assert link not in answer.text  # e-mailed, never shown when a mail server is set

    bob, answer = accept(mailed, link)
    assert answer.status_code == 200
    assert "Welcome to Acme" in answer.text
    assert re.search(r'id="new-key" class="key">cgu_', answer.text)  # his key, shown once
    assert bob.signed_in()
    bob.post("/portal/sign-out")
    assert not bob.signed_in()
    assert bob.sign_in("bob@acme.example").headers["location"] == "/portal/"
    assert bob.signed_in()

    assert "viewer" in member_row(admin, "bob@acme.example")
    assert "Open invitations" not in admin.get("/portal/members").text
    events = {event["event"]: event for event in audit_events(mailed, key)}
    assert events["portal.member_invited"]["details"]["role"] == "viewer"
    assert events["portal.invitation_accepted"]["actor"] == user_id_of(admin, "bob@acme.example")


def test_an_invitation_link_works_once(mailed: RunningGateway, mailbox: Mailbox) -> None:
    admin, _ = sign_up(mailed)
    invite(admin, "bob@acme.example")
    link = link_in(mailbox.wait(1)[0])
    _, answer = accept(mailed, link)
    assert answer.status_code == 200
    again = Person(mailed)
    assert again.get(httpx.URL(link).path).status_code == 404
    again.get("/portal/sign-in")  # a form token of this browser
    answer = again.post(httpx.URL(link).path, name="Eve", password=PASSWORD)
    assert answer.status_code == 404
    assert "not valid" in answer.text


def test_an_expired_invitation_is_refused(tmp_path: Path, mailbox: Mailbox) -> None:
    gateway, settings = gateway_with(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_starttls=False,  # type: ignore[attr-defined]
    )
    with gateway:
        admin, _ = sign_up(gateway)
        invite(admin, "bob@acme.example")
        link = link_in(mailbox.wait(1)[0])
        change_database(
            settings,
            update(PortalInvitation).values(expires_at=utcnow() - timedelta(seconds=1)),
        )
        assert Person(gateway).get(httpx.URL(link).path).status_code == 404
        assert "Open invitations" not in admin.get("/portal/members").text


def test_a_new_invitation_replaces_the_older_and_a_revoked_one_is_dead(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    admin, key = sign_up(mailed)
    invite(admin, "bob@acme.example")
    invite(admin, "bob@acme.example", "admin")
    first, second = (link_in(message) for message in mailbox.wait(2))
    assert Person(mailed).get(httpx.URL(first).path).status_code == 404
    assert Person(mailed).get(httpx.URL(second).path).status_code == 200
    page = admin.get("/portal/members").text
    revoke = re.search(r'action="(/portal/members/invitations/inv_\w+/revoke)"', page)
    assert revoke and page.count("/revoke") == 1
    answer = admin.post(revoke.group(1))
    assert answer.status_code == 200 and "The invitation was revoked" in answer.text
    assert Person(mailed).get(httpx.URL(second).path).status_code == 404
    assert "portal.invitation_revoked" in {e["event"] for e in audit_events(mailed, key)}


def test_a_member_cannot_be_invited_again(mailed: RunningGateway, mailbox: Mailbox) -> None:
    admin, _ = sign_up(mailed)
    joined(mailed, admin, mailbox, "bob@acme.example", "member")
    answer = invite(admin, "bob@acme.example")
    assert answer.status_code == 409
    assert "already a member" in answer.text
    assert len(mailbox.messages) == 1


def test_an_address_with_an_account_elsewhere_cannot_join(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    admin, _ = sign_up(mailed)
    sign_up(mailed, "carol@other.example")  # her own organisation
    invite(admin, "carol@other.example")
    _, answer = accept(mailed, link_in(mailbox.wait(1)[0]), "Carol")
    assert answer.status_code == 409
    assert "already has a crmgate account" in answer.text
    # nothing of the attempt stays: the invitation is still open, Acme has no Carol
    assert Person(mailed).get(httpx.URL(link_in(mailbox.messages[0])).path).status_code == 200
    assert "carol@other.example" not in re.sub(
        r"<table id=\"invitations\">.*?</table>", "", admin.get("/portal/members").text, flags=re.S
    )


@pytest.mark.parametrize("signup", ["invite", "off"])
def test_invitations_work_whatever_the_sign_up_setting(
    tmp_path: Path, mailbox: Mailbox, signup: str
) -> None:
    gateway, settings = gateway_with(
        tmp_path,
        portal_signup=signup,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,  # type: ignore[attr-defined]
        smtp_starttls=False,
    )

    async def first_admin(services: Services) -> None:  # what the operator's CLI would do
        password = services.portal.passwords.hash(PASSWORD)
        await services.portal.logins.sign_up("Acme", "Ann Admin", "ann@acme.example", password)

    with_services(settings, first_admin)
    with gateway:
        assert Person(gateway).get("/portal/sign-up").status_code == 404
        admin = Person(gateway)
        admin.sign_in("ann@acme.example")
        person = joined(gateway, admin, mailbox, "bob@acme.example", "member")
        assert person.signed_in()


def test_without_a_mail_server_the_admin_is_shown_the_link_once(tmp_path: Path) -> None:
    gateway, _ = gateway_with(tmp_path)
    with gateway:
        admin, _ = sign_up(gateway)
        answer = invite(admin, "bob@acme.example")
        assert answer.status_code == 200
        found = re.search(r'id="invitation-link" class="key">([^<]+)<', answer.text)
        assert found and found.group(1).startswith(f"{gateway.base_url}/portal/invitation/")
        assert "invitation-link" not in admin.get("/portal/members").text
        _, accepted = accept(gateway, found.group(1))
        assert accepted.status_code == 200


def test_an_invitation_that_cannot_be_mailed_is_not_kept(tmp_path: Path) -> None:
    closed = loopback_socket()  # bound, never listening: the connection is refused
    gateway, _ = gateway_with(
        tmp_path, smtp_host="127.0.0.1", smtp_port=closed.getsockname()[1], smtp_starttls=False
    )
    with gateway:
        admin, _ = sign_up(gateway)
        answer = invite(admin, "bob@acme.example")
        assert answer.status_code == 502
        assert "could not be sent" in answer.text
        assert "Open invitations" not in answer.text
    closed.close()


# ---- who may manage members ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_reach_the_members_page_and_its_forms(
    mailed: RunningGateway, mailbox: Mailbox, role: str
) -> None:
    admin, _ = sign_up(mailed)
    person = joined(mailed, admin, mailbox, "bob@acme.example", role)
    ann = user_id_of(admin, "ann@acme.example")
    bob = user_id_of(admin, "bob@acme.example")
    assert 'href="/portal/members"' not in person.get("/portal/").text
    assert person.get("/portal/members").status_code == 403
    posts: list[tuple[str, dict[str, str]]] = [
        ("/portal/members/invite", {"email": "eve@evil.example", "role": "admin"}),
        (f"/portal/members/{bob}/role", {"role": "admin"}),
        (f"/portal/members/{ann}/role", {"role": "viewer"}),
        (f"/portal/members/{ann}/remove", {}),
        ("/portal/members/two-factor", {"required": "on"}),
        ("/portal/members/invitations/inv_x/revoke", {}),
    ]
    for path, fields in posts:
        answer = person.post(path, **fields)
        assert answer.status_code == 403, path
        assert "Only an admin" in answer.text
    assert len(mailbox.messages) == 1  # no invitation went out
    row = member_row(admin, "ann@acme.example")
    assert re.search(r'value="admin" selected', row)
    assert re.search(rf'value="{role}" selected', member_row(admin, "bob@acme.example"))
    assert "Not required" in admin.get("/portal/members").text


def test_signed_out_visitors_are_sent_to_sign_in(mailed: RunningGateway) -> None:
    stranger = mailed.client()
    answer = stranger.get("/portal/members")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/portal/sign-in")


# ---- role changes and removals ------------------------------------------------------------------


def test_a_role_change_ends_the_users_sessions(mailed: RunningGateway, mailbox: Mailbox) -> None:
    admin, key = sign_up(mailed)
    bob = joined(mailed, admin, mailbox, "bob@acme.example", "member")
    other_browser = Person(mailed)
    other_browser.sign_in("bob@acme.example")
    assert bob.signed_in() and other_browser.signed_in()
    answer = admin.post(
        f"/portal/members/{user_id_of(admin, 'bob@acme.example')}/role", role="admin"
    )
    assert answer.status_code == 200
    assert "Bob is now admin; their sessions were ended" in answer.text
    assert not bob.signed_in() and not other_browser.signed_in()
    assert admin.signed_in()
    bob.sign_in("bob@acme.example")
    assert bob.get("/portal/members").status_code == 200  # the new role, after a new sign-in
    changed = [e for e in audit_events(mailed, key) if e["event"] == "portal.member_role_changed"]
    details = changed[0]["details"]
    assert (details["from"], details["to"], details["sessions_ended"]) == ("member", "admin", 2)


def test_an_admin_who_steps_down_goes_on_with_a_new_session(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    admin, _ = sign_up(mailed)
    joined(mailed, admin, mailbox, "bob@acme.example", "admin")
    before = admin.http.cookies.get("crmgate_portal")
    answer = admin.post(
        f"/portal/members/{user_id_of(admin, 'ann@acme.example')}/role", role="member"
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/portal/"
    assert admin.http.cookies.get("crmgate_portal") not in (None, before)
    assert admin.get("/portal/members").status_code == 403


def test_the_last_admin_can_be_neither_demoted_nor_removed(mailed: RunningGateway) -> None:
    admin, _ = sign_up(mailed)
    ann = user_id_of(admin, "ann@acme.example")
    for path, fields in [
        (f"/portal/members/{ann}/role", {"role": "viewer"}),
        (f"/portal/members/{ann}/remove", {}),
    ]:
        answer = admin.post(path, **fields)
        assert answer.status_code == 403
        assert "An organisation must keep at least one active admin." in answer.text
    assert admin.signed_in()
    assert re.search(r'value="admin" selected', member_row(admin, "ann@acme.example"))


def test_a_removed_member_is_signed_out_and_their_key_stops(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    admin, key = sign_up(mailed)
    count = len(mailbox.messages)
    invite(admin, "bob@acme.example")
    bob, accepted = accept(mailed, link_in(mailbox.wait(count + 1)[-1]))
    found = re.search(r'id="new-key" class="key">([^<]+)<', accepted.text)
    assert found
    with mailed.client(found.group(1)) as api:
        assert api.get("/v1/platform/list").status_code == 200
    bob_id = user_id_of(admin, "bob@acme.example")
    answer = admin.post(f"/portal/members/{bob_id}/remove")
    assert answer.status_code == 200 and "Bob was removed" in answer.text
    assert "bob@acme.example" not in answer.text
    assert not bob.signed_in()
    assert bob.sign_in("bob@acme.example").status_code == 400
    with mailed.client(found.group(1)) as api:
        assert api.get("/v1/platform/list").status_code == 401
    assert "portal.member_removed" in {e["event"] for e in audit_events(mailed, key)}
    assert admin.post(f"/portal/members/{bob_id}/remove").status_code == 404


def test_users_of_the_api_only_are_listed_without_a_portal_sign_in(
    mailed: RunningGateway,
) -> None:
    admin, key = sign_up(mailed)
    with mailed.client(key) as api:
        created = api.post(
            "/v1/user", json={"name": "Robot", "email": "robot@acme.example", "roles": ["member"]}
        )
    assert created.status_code == 201, created.text
    assert "No portal sign-in" in member_row(admin, "robot@acme.example")
    assert "Off" in member_row(admin, "ann@acme.example")


# ---- two-factor authentication for every member -------------------------------------------------


def enrol_totp(person: Person) -> str:
    answer = person.get("/portal/security")
    answer = person.post("/portal/security/totp")
    seed = re.search(r'id="totp-secret">([A-Z2-7]+)<', answer.text)
    assert seed
    person.post("/portal/security/totp/confirm", code=pyotp.TOTP(seed.group(1)).now())
    return seed.group(1)


def test_requiring_two_factor_sends_members_without_it_to_enrolment(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    admin, key = sign_up(mailed)
    bob = joined(mailed, admin, mailbox, "bob@acme.example", "member")
    admin.get("/portal/members")
    answer = admin.post("/portal/members/two-factor", required="on")
    assert answer.status_code == 400  # the admin first
    assert "for yourself first" in answer.text
    assert bob.http.get("/portal/credentials").status_code != 303

    enrol_totp(admin)
    admin.get("/portal/members")
    answer = admin.post("/portal/members/two-factor", required="on")
    assert answer.status_code == 200 and "Required:" in answer.text
    assert "On (authenticator app)" in member_row(admin, "ann@acme.example")
    assert "Off" in member_row(admin, "bob@acme.example")
    sent = bob.http.get("/portal/credentials")
    assert sent.status_code == 303 and sent.headers["location"] == "/portal/security"
    assert "requires two-factor authentication" in bob.get("/portal/security").text
    enrol_totp(bob)
    assert bob.http.get("/portal/").status_code == 200
    assert "On (authenticator app)" in member_row(admin, "bob@acme.example")

    answer = admin.post("/portal/members/two-factor", required="off")
    assert "Not required" in answer.text
    required = [e for e in audit_events(mailed, key) if e["event"] == "portal.two_factor_required"]
    assert [e["details"]["required"] for e in required] == [False, True]  # newest first


# ---- password reset -----------------------------------------------------------------------------


def ask_reset(person: Person, email: str) -> httpx.Response:
    person.get("/portal/password-reset")
    return person.post("/portal/password-reset", email=email)


def test_a_password_reset_sets_a_new_password_and_ends_every_session(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    admin, key = sign_up(mailed)
    visitor = Person(mailed)
    answer = ask_reset(visitor, "ANN@acme.example")
    assert answer.status_code == 200 and "a link to choose a new password" in answer.text
    (message,) = mailbox.wait(1)
    assert message["To"] == "ann@acme.example"
    link = httpx.URL(link_in(message)).path
    assert link.startswith("/portal/password-reset/")

    page = visitor.get(link)
    assert page.status_code == 200 and "Choose a new password" in page.text
    short = visitor.post(link, password="short")
    assert short.status_code == 400  # and the link still works
    new_password = "a whole new sentence of a password"
    done = visitor.post(link, password=new_password)
    assert done.status_code == 200 and "Your password was changed" in done.text
    assert not admin.signed_in()
    assert Person(mailed).sign_in("ann@acme.example").status_code == 400
    assert Person(mailed).sign_in("ann@acme.example", new_password).status_code == 303
    assert visitor.get(link).status_code == 404  # once
    assert visitor.post(link, password="yet another long password").status_code == 404
    events = [e["event"] for e in audit_events(mailed, key)]
    assert "portal.password_reset_requested" in events and "portal.password_reset" in events


def test_asking_for_a_reset_answers_the_same_for_known_and_unknown_addresses(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    sign_up(mailed)
    answers = []
    for email in ("ann@acme.example", "nobody@acme.example"):
        answer = ask_reset(Person(mailed), email)
        answers.append(
            (answer.status_code, re.sub(r'value="[^"]+"|\S+@acme\.example', "", answer.text))
        )
    assert answers[0] == answers[1]
    mailbox.wait(1)
    time.sleep(0.5)  # a second e-mail would have come by now
    assert [message["To"] for message in mailbox.messages] == ["ann@acme.example"]


def test_asking_for_a_reset_takes_no_longer_for_a_known_address(
    mailed: RunningGateway, mailbox: Mailbox
) -> None:
    sign_up(mailed)
    mailbox.gate.clear()  # the mail server holds every e-mail until the answers are in
    visitor = Person(mailed)
    visitor.get("/portal/password-reset")
    assert visitor.post("/portal/password-reset", email="ann@acme.example").status_code == 200
    # the next request on the same connection is not held up by the e-mail either
    assert visitor.http.get("/portal/password-reset").status_code == 200
    assert mailbox.messages == []  # answered while the e-mail was still on its way
    mailbox.gate.set()
    assert mailbox.wait(1)[0]["To"] == "ann@acme.example"


def test_a_reset_keeps_the_second_factor(mailed: RunningGateway, mailbox: Mailbox) -> None:
    admin, _ = sign_up(mailed)
    enrol_totp(admin)
    visitor = Person(mailed)
    ask_reset(visitor, "ann@acme.example")
    link = httpx.URL(link_in(mailbox.wait(1)[0])).path
    visitor.get(link)
    new_password = "a whole new sentence of a password"
    assert visitor.post(link, password=new_password).status_code == 200
    answer = visitor.sign_in("ann@acme.example", new_password)
    assert answer.headers["location"].startswith("/portal/sign-in/code")
    assert not visitor.signed_in()


def test_reset_e_mails_are_capped_per_user_and_requests_per_address(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    gateway, _ = gateway_with(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_starttls=False,  # type: ignore[attr-defined]
    )
    with gateway:
        sign_up(gateway)
        visitor = Person(gateway)
        for _ in range(5):
            assert ask_reset(visitor, "ann@acme.example").status_code == 200
        mailbox.wait(3)
        time.sleep(0.5)
        assert len(mailbox.to("ann@acme.example")) == 3
        for _ in range(5):
            assert ask_reset(visitor, "nobody@acme.example").status_code == 200
        refused = ask_reset(visitor, "nobody@acme.example")
        assert refused.status_code == 429 and "Too many requests" in refused.text


def test_an_expired_reset_link_is_refused(tmp_path: Path, mailbox: Mailbox) -> None:
    gateway, settings = gateway_with(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_starttls=False,  # type: ignore[attr-defined]
    )
    with gateway:
        sign_up(gateway)
        visitor = Person(gateway)
        ask_reset(visitor, "ann@acme.example")
        link = httpx.URL(link_in(mailbox.wait(1)[0])).path
        change_database(
            settings,
            update(PortalPasswordReset).values(expires_at=utcnow() - timedelta(seconds=1)),
        )
        answer = visitor.get(link)
        assert answer.status_code == 404 and "Ask for a new link" in answer.text


def test_invitations_and_resets_keep_only_digests_of_their_tokens(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    gateway, _ = gateway_with(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_starttls=False,  # type: ignore[attr-defined]
    )
    with gateway:
        admin, _ = sign_up(gateway)
        invite(admin, "bob@acme.example", Role.VIEWER.value)
        ask_reset(Person(gateway), "ann@acme.example")
        tokens = [link_in(message).rsplit("/", 1)[1] for message in mailbox.wait(2)]
    stored = b"".join(path.read_bytes() for path in (tmp_path / "data").glob("crmgate.db*"))
    for token in tokens:
        assert len(token) >= 43
        assert token.encode() not in stored
