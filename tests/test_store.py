"""The account store on both backends: migrations, accounts, users, keys, usage counters;
and the SQLite files' modes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from conftest import Database, with_services
from crmgate.query import Condition, SortKey
from crmgate.runtime import SchemaOutOfDate, Services
from crmgate.settings import Settings
from crmgate.store import migrate
from crmgate.store.accounts import AccountError, Role, UserStatus
from crmgate.store.db import create_engine, for_writing
from crmgate.store.models import ApiKey, UsageDaily, utcnow


def test_migrations_create_upgrade_and_downgrade_the_schema(tmp_path, database: Database) -> None:
    from conftest import make_settings

    settings = make_settings(tmp_path, database.url)

    async def work(services: Services) -> None:
        with pytest.raises(SchemaOutOfDate, match="crmgate migrate"):
            await services.check_schema()
        await migrate.upgrade(services.engine)
        await services.check_schema()
        assert await migrate.current_revision(services.engine) == migrate.head_revision()
        async with services.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert {"organisations", "users", "api_keys", "usage_daily"} <= tables
        await migrate.downgrade(services.engine, "base")
        async with services.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert tables <= {"alembic_version"}
        await migrate.upgrade(services.engine)  # and again: upgrades are repeatable
        await migrate.upgrade(services.engine)

    with_services(settings, work)


def test_create_account_and_authenticate(settings: Settings) -> None:
    async def work(services: Services) -> None:
        created = await services.accounts.create_account("Acme", "Ada", "Ada@Acme.example")
        principal = await services.accounts.authenticate(created.key.secret)
        assert principal is not None
        assert principal.user_id == created.user.id
        assert principal.organisation_id == created.organisation_id
        assert principal.role is Role.ADMIN
        assert principal.key_hint == created.key.secret[:10]
        assert created.user.email == "ada@acme.example"
        other_last = "A" if created.key.secret[-1] != "A" else "B"
        assert await services.accounts.authenticate(created.key.secret[:-1] + other_last) is None

    with_services(settings, work)


def test_only_the_digest_of_a_key_is_stored(settings: Settings) -> None:
    async def work(services: Services) -> None:
        created = await services.accounts.create_account("Acme", "Ada", "ada@acme.example")
        async with services.engine.connect() as conn:
            rows = (await conn.execute(select(ApiKey.__table__))).all()
        assert len(rows) == 1
        stored = " ".join(str(value) for value in rows[0])
        assert created.key.secret not in stored
        assert created.key.secret[10:] not in stored
        assert len(rows[0].digest) == 32

    with_services(settings, work)


def test_rotation_revokes_the_old_key_atomically(settings: Settings) -> None:
    async def work(services: Services) -> None:
        created = await services.accounts.create_account("Acme", "Ada", "ada@acme.example")
        new = await services.accounts.rotate_key(created.user.id)
        assert new.secret != created.key.secret
        assert await services.accounts.authenticate(created.key.secret) is None
        assert (await services.accounts.authenticate(new.secret)) is not None
        assert await services.accounts.revoke_keys(created.user.id) == 1
        assert await services.accounts.authenticate(new.secret) is None
        with pytest.raises(AccountError) as missing:
            await services.accounts.rotate_key("usr_doesnotexist")
        assert missing.value.status == 404

    with_services(settings, work)


def test_rotation_is_scoped_to_the_organisation(settings: Settings) -> None:
    async def work(services: Services) -> None:
        a = await services.accounts.create_account("A", "Ada", "ada@a.example")
        b = await services.accounts.create_account("B", "Bob", "bob@b.example")
        with pytest.raises(AccountError):
            await services.accounts.rotate_key(a.user.id, organisation_id=b.organisation_id)
        assert await services.accounts.authenticate(a.key.secret) is not None

    with_services(settings, work)


def test_disabled_users_cannot_authenticate(settings: Settings) -> None:
    async def work(services: Services) -> None:
        admin = await services.accounts.create_account("Acme", "Ada", "ada@acme.example")
        member, key = await services.accounts.create_user(
            admin.organisation_id, name="Mo", email="mo@acme.example"
        )
        assert member.role is Role.MEMBER
        assert await services.accounts.authenticate(key.secret) is not None
        await services.accounts.update_user(
            admin.organisation_id, member.id, {"status": UserStatus.DISABLED}
        )
        assert await services.accounts.authenticate(key.secret) is None

    with_services(settings, work)


def test_e_mail_is_unique_within_an_organisation(settings: Settings) -> None:
    async def work(services: Services) -> None:
        a = await services.accounts.create_account("A", "Ada", "ada@a.example")
        b = await services.accounts.create_account("B", "Ada", "ada@a.example")  # other org: fine
        with pytest.raises(AccountError) as duplicate:
            await services.accounts.create_user(a.organisation_id, name="X", email="ADA@a.example")
        assert duplicate.value.code == "NOT_VALID" and duplicate.value.field == "email"
        assert await services.accounts.count_users(a.organisation_id) == 1
        assert await services.accounts.count_users(b.organisation_id) == 1

    with_services(settings, work)


def test_the_last_active_admin_cannot_be_removed_or_demoted(settings: Settings) -> None:
    async def work(services: Services) -> None:
        admin = await services.accounts.create_account("Acme", "Ada", "ada@acme.example")
        org = admin.organisation_id
        for change in ({"role": Role.MEMBER}, {"status": UserStatus.DISABLED}):
            with pytest.raises(AccountError) as refused:
                await services.accounts.update_user(org, admin.user.id, change)
            assert refused.value.code == "NOT_ALLOWED"
        with pytest.raises(AccountError):
            await services.accounts.delete_user(org, admin.user.id)
        # Nothing changed: the refused writes were rolled back.
        view = await services.accounts.get_user(org, admin.user.id)
        assert view.role is Role.ADMIN and view.status is UserStatus.ACTIVE
        second, _ = await services.accounts.create_user(
            org, name="Bo", email="bo@acme.example", role=Role.ADMIN
        )
        await services.accounts.delete_user(org, admin.user.id)
        assert await services.accounts.authenticate(admin.key.secret) is None
        assert [v.id for v in await services.accounts.list_users(org)] == [second.id]

    with_services(settings, work)


def test_concurrent_demotions_keep_one_admin(settings: Settings) -> None:
    async def work(services: Services) -> None:
        admin = await services.accounts.create_account("Acme", "Ada", "ada@acme.example")
        org = admin.organisation_id
        other, _ = await services.accounts.create_user(
            org, name="Bo", email="bo@acme.example", role=Role.ADMIN
        )
        results = await asyncio.gather(
            services.accounts.update_user(org, admin.user.id, {"role": Role.MEMBER}),
            services.accounts.update_user(org, other.id, {"role": Role.MEMBER}),
            return_exceptions=True,
        )
        assert sum(isinstance(result, Exception) for result in results) == 1
        admins = await services.accounts.count_users(org, (Condition("role", "eq", "admin"),))
        assert admins == 1

    with_services(settings, work)


def test_list_filters_sorts_and_pages_without_overlap(settings: Settings) -> None:
    async def work(services: Services) -> None:
        admin = await services.accounts.create_account("Acme", "Zed", "zed@acme.example")
        org = admin.organisation_id
        for index in range(11):
            await services.accounts.create_user(
                org, name=f"User {index:02d}", email=f"u{index:02d}@acme.example"
            )
        other = await services.accounts.create_account("Other", "Eve", "eve@other.example")
        assert await services.accounts.count_users(org) == 12
        pages = [
            await services.accounts.list_users(org, page=page, page_size=5) for page in (1, 2, 3, 4)
        ]
        assert [len(page) for page in pages] == [5, 5, 2, 0]
        ids = [view.id for page in pages for view in page]
        assert len(set(ids)) == 12 and other.user.id not in ids
        by_name = await services.accounts.list_users(org, sort=(SortKey("name", True),))
        assert [view.name for view in by_name][:2] == ["Zed", "User 10"]
        members = (Condition("roles", "eq", "member"), Condition("email", "startswith", "U0"))
        assert await services.accounts.count_users(org, members) == 10
        found = await services.accounts.list_users(
            org, conditions=(Condition("name", "contains", "r 1"),)
        )
        assert sorted(view.name for view in found) == ["User 10"]
        tricky = (Condition("name", "eq", "x' or '1'='1"),)
        assert await services.accounts.count_users(org, tricky) == 0
        wildcard = (Condition("name", "contains", "%"),)
        assert await services.accounts.count_users(org, wildcard) == 0
        since = (Condition("created_at", "ge", (utcnow() - timedelta(hours=1)).isoformat()),)
        assert await services.accounts.count_users(org, since) == 12

    with_services(settings, work)


def test_usage_counters_are_batched_and_summed_by_day(settings: Settings) -> None:
    async def work(services: Services) -> None:
        admin = await services.accounts.create_account("Acme", "Ada", "ada@acme.example")
        for _ in range(3):
            services.usage.record(admin.user.id, internal=True)
        services.usage.record(admin.user.id, internal=False)
        services.usage.record("usr_deleted_meanwhile", internal=True)
        await services.usage.flush()
        services.usage.record(admin.user.id, internal=True)
        await services.usage.flush()
        view = await services.accounts.get_user(admin.organisation_id, admin.user.id)
        assert (view.request_count, view.internal_request_count) == (1, 4)
        today = utcnow().date()
        async with for_writing(services.engine).begin() as conn:
            await conn.execute(
                UsageDaily.__table__.insert().values(
                    user_id=admin.user.id,
                    day=today - timedelta(days=10),
                    request_count=7,
                    internal_request_count=0,
                )
            )
        org, uid = admin.organisation_id, admin.user.id
        total = await services.accounts.get_user(org, uid)
        assert total.request_count == 8
        recent = await services.accounts.get_user(org, uid, today - timedelta(days=1), today)
        assert recent.request_count == 1
        old = await services.accounts.get_user(
            org, uid, today - timedelta(days=11), today - timedelta(days=9)
        )
        assert (old.request_count, old.internal_request_count) == (7, 0)

    with_services(settings, work)


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_settings: Settings) -> None:
    async def work(services: Services) -> None:
        async with services.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1

    with_services(sqlite_settings, work)


# ---- the SQLite files ----------------------------------------------------------------------------


def _modes(database: Path) -> dict[str, int]:
    """The permission bits of the database file and of each companion SQLite keeps beside it."""
    files = [database, *database.parent.glob(database.name + "-*")]
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}


async def _write_in_wal_mode(url: str) -> dict[str, int]:
    """Writes through crmgate's engine and returns the files' modes while it holds them open
    (SQLite removes -wal and -shm when the last connection closes)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            await conn.execute(text("CREATE TABLE IF NOT EXISTS notes (body TEXT)"))
            await conn.execute(text("INSERT INTO notes VALUES ('secret')"))
        async with engine.connect() as conn:  # a reader beside the writer: -shm in use
            assert (await conn.execute(text("SELECT count(*) FROM notes"))).scalar() >= 1
            return _modes(Path(make_url(url).database or ""))
    finally:
        await engine.dispose()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask (022), under which a file anyone may read is what one gets by default."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_sqlite_database_and_its_companions_are_made_private(
    tmp_path: Path, open_umask: None
) -> None:
    database = tmp_path / "data" / "crmgate.db"
    modes = asyncio.run(_write_in_wal_mode(f"sqlite+aiosqlite:///{database}"))
    assert {"crmgate.db", "crmgate.db-wal", "crmgate.db-shm"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700  # the folder it made


def test_an_existing_sqlite_database_open_to_others_is_tightened_at_start(
    tmp_path: Path, open_umask: None
) -> None:
    # a database made outside crmgate (a copy, an older crmgate) with its WAL still beside it
    database = tmp_path / "crmgate.db"
    other = sqlite3.connect(database)
    try:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE notes (body TEXT)")
        other.commit()
        assert set(_modes(database).values()) == {0o644}
        modes = asyncio.run(_write_in_wal_mode(f"sqlite+aiosqlite:///{database}"))
    finally:
        other.close()
    assert {"crmgate.db", "crmgate.db-wal", "crmgate.db-shm"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700  # the folder it made
