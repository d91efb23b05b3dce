"""Database engines: the embedded SQLite default and PostgreSQL, both through SQLAlchemy async."""

from __future__ import annotations

import logging
import os
import stat
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

_WRITE_OPTION = "crmgate_write"
# The files SQLite keeps beside a database; it gives them the permission bits of the database.
_COMPANIONS = ("-wal", "-shm", "-journal")

# aiosqlite logs every statement with its bound parameters at DEBUG level; parameters can be
# secrets (or, later, ciphertexts and tokens), so its logger never goes below WARNING.
logging.getLogger("aiosqlite").setLevel(logging.WARNING)


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # (a file: URI names its file in its own syntax: left to SQLite)
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _private(Path(parsed.database))
        engine = create_async_engine(url, connect_args={"timeout": 15}, hide_parameters=True)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True
    )


def _private(database: Path) -> None:
    """The database file, made before SQLite makes it, and its companions readable by this
    user only: they hold every key digest and sealed credential, and a copied file keeps its
    mode. A looser file (an older crmgate's, a restored copy) is tightened."""
    try:
        # Only a file that does not exist yet is opened: closing a descriptor of a file this
        # process has open in SQLite elsewhere would drop that connection's POSIX locks
        # (sqlite.org/howtocorrupt.html, 2.2), and another engine may have it open.
        os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # not this user's to write: SQLite says so when it writes
    for path in (database, *(database.with_name(database.name + end) for end in _COMPANIONS)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(path, mode & 0o700)
            except OSError as exc:  # another user's file
                logging.getLogger("crmgate").warning(
                    "%s is open to other users (mode %o) and cannot be changed (%s): chmod 600 it",
                    path,
                    mode,
                    exc.strerror,
                )


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's legacy transaction handling starts a transaction only before the first write,
    # so a read followed by a write is not atomic. Take over BEGIN ourselves (SQLAlchemy's
    # documented recipe): write transactions BEGIN IMMEDIATE, so they queue for the write lock
    # (busy_timeout) instead of failing with "database is locked" when they upgrade from a read.
    # Also: WAL, foreign keys, and a Unicode-aware lower() like PostgreSQL's.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class SessionFactory:
    """``factory()`` opens a session for reads; ``factory.begin()`` a write transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._dialect = engine.dialect.name
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(for_writing(engine), expire_on_commit=False)

    def __call__(self) -> AsyncSession:
        return self._read()

    @property
    def row_locks(self) -> bool:
        """Whether SELECT ... FOR UPDATE locks one row (PostgreSQL) rather than nothing, while
        SQLite's write transactions lock the whole database."""
        return self._dialect == "postgresql"

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self._write.begin()


def for_writing(engine: AsyncEngine) -> AsyncEngine:
    """This engine, its transactions taking SQLite's write lock when they begin (BEGIN
    IMMEDIATE): a transaction that reads and then writes queues behind another writer
    instead of failing with "database is locked". PostgreSQL ignores the option."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return SessionFactory(engine)


def redact_url(url: str) -> str:
    """The database URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)
