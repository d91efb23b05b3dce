"""The serve runtime: uvicorn in one or more worker processes, the first-start admin, the demo.

``crmgate serve`` (cli.py) parses its options into the settings and hands them here. This is how
the gateway serves HTTP; runtime.py holds what one process serves with (``Services``).
"""

from __future__ import annotations

import functools
import logging
import shlex
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import typer
import uvicorn
from uvicorn.supervisors import Multiprocess

from crmgate.logs import configure as configure_logging
from crmgate.runtime import Services
from crmgate.settings import Settings

if TYPE_CHECKING:
    from crmgate.api.connections import ServeLimits

# How the CLI runs one step over the services (opened for it, failures mapped to exit codes).
Prepare = Callable[[Callable[[Services], Awaitable[None]], Settings], None]


class ServeRefused(Exception):
    """Settings that cannot serve together (the CLI exits 2, as for a bad option)."""


def serve(settings: Settings, *, demo: bool, prepare: Prepare) -> None:
    """Run the gateway until it is stopped: the first start's admin (or the demo's CRMs and
    application) prepared through ``prepare``, then uvicorn. Raises ServeRefused before
    anything starts when the settings cannot work."""
    if settings.workers > 1:
        _check_workers(settings, settings.workers, demo)
    configure_logging(settings.log_level)
    if settings.workers > 1:
        _warn_per_process_limits(settings, settings.workers)
    crms: list[Any] = []
    if demo:
        from crmgate.demo import demo_settings, start_demo_crms

        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        crms = start_demo_crms(settings.data_dir)
        settings = demo_settings(settings, crms)
    try:
        if not crms:
            prepare(_bootstrap, settings)
        else:
            prepare(functools.partial(_start_demo, crms=crms), settings)
        run(settings)
    finally:
        for crm in crms:
            crm.stop()


def _check_workers(settings: Settings, workers: int, demo: bool) -> None:
    """Refuse what cannot work in several processes."""
    if demo:
        raise ServeRefused(
            "--demo runs in one process (its simulated CRMs live in it): leave out "
            "--workers (CRMGATE_WORKERS)"
        )
    if settings.resolved_database_url.startswith("sqlite"):
        raise ServeRefused(
            f"--workers {workers} needs PostgreSQL (CRMGATE_DATABASE_URL): on SQLite one "
            "process must hold the lock that makes token renewals happen once, and SQLite's "
            "writes are one at a time anyway (docs/deployment.md)"
        )


def _warn_per_process_limits(settings: Settings, workers: int) -> None:
    """Without Redis every process counts the rate limits in its own memory: say which."""
    if settings.redis_url is not None:
        return
    named = [
        f"{setting} ({value})"
        for setting, value in (
            ("CRMGATE_RATE_LIMIT_USER_KEY", settings.rate_limit_user_key),
            ("CRMGATE_RATE_LIMIT_APPLICATION", settings.rate_limit_application),
            ("CRMGATE_RATE_LIMIT_BAD_KEYS", settings.rate_limit_bad_keys),
        )
        if value.strip()
    ]
    if any(o.user_key or o.application for o in settings.rate_limit_organisations.values()):
        named.append("CRMGATE_RATE_LIMIT_ORGANISATIONS")
    named += [
        f"API version {name}'s limits ({version.limits})"
        for name, version in settings.api_versions.items()
        if version.limits and version.limits.strip()
    ]
    if named:
        logging.getLogger("crmgate").warning(
            "%d worker processes without CRMGATE_REDIS_URL: each process counts these rate "
            "limits on its own, so together they let through up to %d times as much: %s",
            workers,
            workers,
            "; ".join(named),
        )


def _tls_context(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's TLS context for crmgate: no version older than 1.2 (made in each worker)."""
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _worker_app(settings: Settings) -> Any:
    """The app of one serving process; in a worker also its logging (the redacting handler):
    a worker is a fresh interpreter that has only been handed the settings."""
    from crmgate.api.app import create_app

    configure_logging(settings.log_level)
    return create_app(settings)


class _ServeConfig(uvicorn.Config):
    """uvicorn's Config with httptools bounded as crmgate needs: 431 beyond the head limits
    (api/bounds.py), slow clients cut off, connections bounded and malformed requests answered
    in the contract's shape (api/connections.py). The protocol class is made when the config
    is loaded, in the process that serves, since a class made at run time cannot be pickled to
    a worker."""

    def __init__(self, app: Any, *, limits: ServeLimits, **options: Any) -> None:
        super().__init__(app, http="httptools", **options)
        self.limits = limits

    def load(self) -> None:
        self.http = self.limits.protocol()
        super().load()


def run(settings: Settings) -> None:
    """uvicorn with crmgate's choices: uvloop and httptools with bounded request heads, read
    timeouts and a bound on connections, no server banner, no proxy headers trusted, and over
    TLS no version older than 1.2.

    With more than one worker, uvicorn's supervisor binds the socket and starts that many
    processes (restarting any that dies; SIGHUP replaces them one by one). Each worker gets the
    config by pickling: the settings this process read and checked, and module-level functions
    that build the app, the TLS context and the HTTP protocol in the worker."""
    from crmgate.api.connections import ServeLimits, fit_open_files

    fit_open_files(settings.max_connections)  # inherited by the worker processes
    workers = settings.workers
    tls: dict[str, Any] = {}
    if settings.tls_cert and settings.tls_key:
        tls = {
            "ssl_certfile": str(settings.tls_cert),
            "ssl_keyfile": str(settings.tls_key),
            # TLS 1.2: forward-secret AEAD suites only (TLS 1.3's are all such)
            "ssl_ciphers": "ECDHE+AESGCM:ECDHE+CHACHA20",
            "ssl_context_factory": _tls_context,
        }
    config = _ServeConfig(
        functools.partial(_worker_app, settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        workers=workers,
        # A worker answers the supervisor's pings (from a thread) only once it has imported
        # crmgate; on a busy host that takes longer than uvicorn's 5 s, and the supervisor would
        # kill and restart it over and over. A worker that exits is replaced at once anyway.
        timeout_worker_healthcheck=60,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        limits=ServeLimits.from_settings(settings),
        **tls,
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    typer.echo(f"crmgate: starting {workers} worker processes")
    sys.stdout.flush()
    Multiprocess(config, sockets=[config.bind_socket()]).run()


async def _start_demo(services: Services, crms: list[Any]) -> None:
    from crmgate.demo import DEMO_FILE, banner, prepare

    demo = await prepare(services, crms)
    base = services.settings.resolved_public_url
    typer.echo(banner(demo, services.settings.data_dir / DEMO_FILE))
    typer.echo(f"crmgate: serving {base}/v1 — API docs at {base}/docs")
    sys.stdout.flush()


async def _bootstrap(services: Services) -> None:
    """First start: create an organisation and its admin, and show the admin's key once."""
    base = services.settings.resolved_public_url
    if await services.accounts.organisation_count() == 0:
        created = await services.accounts.create_account(
            "Default organisation", "Admin", "admin@example.com"
        )
        header = f"X-API2CRM-USER-KEY: {created.key.secret}"
        curl = shlex.join(["curl", "-s", "-H", header, f"{base}/v1/user/list"])
        typer.echo(
            "\n".join(
                [
                    "",
                    "crmgate: first start, created an organisation and its admin.",
                    f"  organisation: Default organisation ({created.organisation_id})",
                    f"  admin user:   admin@example.com ({created.user.id})",
                    f"  user key:     {created.key.secret}",
                    "  The key is shown only now: keep it. A new one: "
                    f"crmgate key rotate --user-id {created.user.id}",
                    "",
                    "Try it:",
                    f"  {curl}",
                    "",
                ]
            )
        )
    else:
        admin = await services.accounts.first_admin()
        hint = f" (key {admin.key_hint}…)" if admin and admin.key_hint else ""
        who = f"admin user {admin.email} {admin.id}{hint}; " if admin else ""
        typer.echo(
            f"\ncrmgate: {who}a new key: crmgate key rotate --user-id "
            f"{admin.id if admin else 'USER_ID'}"
        )
    typer.echo(f"crmgate: serving {base}/v1 — API docs at {base}/docs")
    sys.stdout.flush()
