"""The operator's command line: serve, migrate, account, user, key, contract-coverage."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from crmgate import audit, serving
from crmgate.runtime import SchemaOutOfDate, Services
from crmgate.security.secretfile import SecretFileError
from crmgate.security.vault import (
    KEY_BYTES,
    VaultError,
    remove_version_from_key_file,
    rotate_key_file,
)
from crmgate.settings import Settings
from crmgate.store import migrate as migrations
from crmgate.store.accounts import AccountError, UserView
from crmgate.store.db import redact_url

T = TypeVar("T")

# Pretty tracebacks are off: they print local variables, and locals can hold secrets.
app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False
)
account_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Organisations and their first admin.",
)
user_app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_enable=False, help="Users of every organisation."
)
vault_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="The credential vault's master keys: status, rotate, rewrap, retire.",
)
key_app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_enable=False, help="User keys: rotate or revoke."
)
app.add_typer(account_app, name="account")
app.add_typer(user_app, name="user")
app.add_typer(key_app, name="key")
app.add_typer(vault_app, name="vault")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"crmgate: {message}", err=True)
    return typer.Exit(code=1)


def _with_services(
    work: Callable[[Services], Awaitable[T]],
    *,
    check_schema: bool = True,
    settings: Settings | None = None,
) -> T:
    settings = settings or Settings()

    async def run() -> T:
        audit.bind_cli()  # audit events of this command: actor "cli"
        async with Services.open(settings, check_schema=check_schema) as services:
            return await work(services)

    try:
        return asyncio.run(run())
    except SchemaOutOfDate as exc:
        raise _fail(str(exc)) from None
    except AccountError as exc:
        raise _fail(exc.message) from None
    except (SecretFileError, VaultError) as exc:
        raise _fail(str(exc)) from None
    except audit.AuditKeyError as exc:  # the audit trail cannot be written or checked
        typer.echo(f"crmgate: audit: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _user_json(view: UserView) -> dict[str, Any]:
    return {
        "user_id": view.id,
        "organisation_id": view.organisation_id,
        "organisation": view.organisation_name,
        "name": view.name,
        "email": view.email,
        "role": view.role.value,
        "status": view.status.value,
        "user_key_hint": view.key_hint,
    }


def _version(value: bool) -> None:
    if value:
        from crmgate import __version__

        typer.echo(f"crmgate {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """crmgate: a self-hosted unified CRM API gateway (the Data2CRM.API v1 contract)."""


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run again)."""
    settings = Settings()
    _with_services(lambda services: migrations.upgrade(services.engine), check_schema=False)
    typer.echo(
        f"crmgate: database {redact_url(settings.resolved_database_url)} is at schema "
        f"{migrations.head_revision()}"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (CRMGATE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (CRMGATE_PORT).")] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Run a simulated Salesforce org beside the gateway, connect a demo application "
            "to it and write <data dir>/demo.json (see docs/demo.md).",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate chain: serve HTTPS, TLS 1.2+ (CRMGATE_TLS_CERT)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of the certificate (CRMGATE_TLS_KEY).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes sharing the listening socket (CRMGATE_WORKERS); more than one "
            "needs PostgreSQL, and Redis to share the rate limits (docs/deployment.md).",
        ),
    ] = None,
) -> None:
    """Run the gateway. On the first start it creates an admin account and prints its key."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None:
        overrides["workers"] = workers
    if tls_cert is not None:
        overrides["tls_cert"] = tls_cert
    if tls_key is not None:
        overrides["tls_key"] = tls_key
    settings = Settings(**overrides)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        typer.echo("crmgate: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(code=2)
    try:
        serving.serve(
            settings,
            demo=demo,
            prepare=lambda work, served: _with_services(work, settings=served),
        )
    except serving.ServeRefused as exc:
        typer.echo(f"crmgate: {exc}", err=True)
        raise typer.Exit(code=2) from None


@account_app.command("create")
def account_create(
    name: Annotated[str, typer.Option(help="Organisation name.")],
    email: Annotated[str, typer.Option(help="E-mail of the organisation's first admin.")],
    admin_name: Annotated[str, typer.Option(help="Name of the first admin.")] = "Admin",
    as_json: JsonFlag = False,
) -> None:
    """Create an organisation with one admin user, and print the admin's user key (once)."""
    from pydantic import TypeAdapter, ValidationError
    from pydantic.networks import EmailStr

    try:
        TypeAdapter(EmailStr).validate_python(email)
    except ValidationError:
        raise _fail(f"--email: {email!r} is not a valid e-mail address") from None
    if not name.strip():
        raise _fail("--name may not be empty")
    created = _with_services(
        lambda services: services.accounts.create_account(name.strip(), admin_name, email)
    )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "organisation_id": created.organisation_id,
                    "user_id": created.user.id,
                    "user_key": created.key.secret,
                    "email": created.user.email,
                }
            )
        )
        return
    typer.echo(f"organisation: {name} ({created.organisation_id})")
    typer.echo(f"admin user:   {created.user.email} ({created.user.id})")
    typer.echo(f"user key:     {created.key.secret}")
    typer.echo("The key is shown only now: keep it.")


@user_app.command("list")
def user_list(as_json: JsonFlag = False) -> None:
    """List every user of every organisation (no secrets)."""
    users = _with_services(lambda services: services.accounts.all_users())
    if as_json:
        typer.echo(json.dumps({"users": [_user_json(view) for view in users]}))
        return
    for view in users:
        typer.echo(
            f"{view.id}  {view.organisation_id}  {view.role.value:<6}  {view.status.value:<8}  "
            f"{view.email}  key {view.key_hint or '-'}"
        )


@key_app.command("rotate")
def key_rotate(
    user_id: Annotated[str, typer.Option(help="The user whose key to replace.")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke the user's key and print a new one (shown only now)."""
    issued = _with_services(lambda services: services.accounts.rotate_key(user_id))
    if as_json:
        typer.echo(json.dumps({"user_id": issued.user_id, "user_key": issued.secret}))
        return
    typer.echo(f"user key: {issued.secret}")
    typer.echo("The previous key no longer works. The new one is shown only now: keep it.")


@key_app.command("revoke")
def key_revoke(
    user_id: Annotated[str, typer.Option(help="The user whose keys to revoke.")],
) -> None:
    """Revoke every key of the user; they stop working at once."""
    count = _with_services(lambda services: services.accounts.revoke_keys(user_id))
    typer.echo(f"revoked {count} key(s) of {user_id}")


@key_app.command("create")
def key_create(
    user_id: Annotated[str, typer.Option(help="The user the key acts for.")],
    application: Annotated[
        list[str] | None, typer.Option(help="An application key it may use (repeat; none: all).")
    ] = None,
    permission: Annotated[
        list[str] | None,
        typer.Option(help="ENTITY=ACTIONS, e.g. contact=read,update or '*=read' (repeat)."),
    ] = None,
    passthrough: Annotated[bool, typer.Option(help="May use /application/request.")] = False,
    gateway: Annotated[
        list[str] | None,
        typer.Option(
            help="RESOURCE=ACTIONS on crmgate's own resources, e.g. audit=read (repeat; "
            "none: platform=read and application=read)."
        ),
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(min=0.001, help="Expire after this many days.")
    ] = None,
    allow_ip: Annotated[
        list[str] | None, typer.Option(help="An address or network it may be used from (repeat).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="A label for listings.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Issue a restricted key for a user: some applications, entities x actions, an expiry,
    client addresses (docs/security.md). Printed only now."""
    from datetime import UTC, datetime, timedelta

    from pydantic import ValidationError

    from crmgate.api.routes.keys import RestrictedKeyCreate, rendered

    def pairs(items: list[str] | None) -> dict[str, list[str]]:
        granted: dict[str, list[str]] = {}
        for item in items or ():
            name, _, actions = item.partition("=")
            granted.setdefault(name.strip(), []).extend(a.strip() for a in actions.split(","))
        return granted

    try:
        request = RestrictedKeyCreate.model_validate(
            {
                "user": user_id,
                "description": description,
                "applications": application or None,
                "permissions": pairs(permission),
                "passthrough": passthrough,
                **({"gateway": pairs(gateway)} if gateway else {}),
                "expires_at": None
                if expires_in_days is None
                else datetime.now(UTC) + timedelta(days=expires_in_days),
                "allowed_ips": allow_ip or [],
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise _fail(f"{where}: {first['msg']}") from None
    view, issued = _with_services(
        lambda services: services.restricted_keys.create(
            None, user_id, request.scope(), request.description
        )
    )
    if as_json:
        typer.echo(json.dumps({**rendered(view), "user_key": issued.secret}))
        return
    typer.echo(f"restricted key {view.id} for {view.user_id}: {issued.secret}")
    typer.echo("It is shown only now: keep it. Revoke it with crmgate key delete --key-id ID.")


@key_app.command("list")
def key_list(
    organisation_id: Annotated[
        str | None, typer.Option(help="Only this organisation's keys.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Unrevoked restricted keys (never their secret)."""
    from crmgate.api.routes.keys import rendered

    async def work(services: Services) -> list[dict[str, Any]]:
        views = await services.restricted_keys.list_page(organisation_id, page_size=10_000)
        return [rendered(view) for view in views]

    listed = _with_services(work)
    if as_json:
        typer.echo(json.dumps({"keys": listed}))
        return
    for key in listed:
        permissions = ";".join(f"{e}={','.join(a)}" for e, a in key["permissions"].items())
        gateway = ";".join(f"{r}={','.join(a)}" for r, a in key["gateway"].items())
        typer.echo(
            f"{key['id']}  {key['user']}  {key['user_key_hint']}…  "
            f"apps {','.join(key.get('applications') or ['*'])}  {permissions or '-'}"
            f"{'  passthrough' if key['passthrough'] else ''}  "
            f"gateway {gateway or '-'}  "
            f"expires {key.get('expires_at') or 'never'}"
        )


@key_app.command("delete")
def key_delete(key_id: Annotated[str, typer.Option(help="The restricted key's id.")]) -> None:
    """Revoke one restricted key; it stops working at once."""
    _with_services(lambda services: services.restricted_keys.revoke(None, key_id))
    typer.echo(f"revoked {key_id}")


def _key_file(services: Services) -> Path:
    path = services.vault.key_file
    if path is None:
        raise _fail(
            "the vault keys come from CRMGATE_VAULT_KEYS: add a version there "
            "(`crmgate vault generate-key` prints one), restart, then `crmgate vault rewrap`"
        )
    return path


@vault_app.command("status")
def vault_status(as_json: JsonFlag = False) -> None:
    """Key versions, the newest (used for new data), and how many credentials each protects."""

    async def work(services: Services) -> dict[str, Any]:
        apps = await services.applications.store.key_versions()
        seeds = await services.portal.logins.seed_key_versions()
        counts = _sealed_counts(apps, seeds)
        keyring = services.vault.keyring
        return {
            "newest": keyring.newest,
            "versions": {str(v): counts.get(v, 0) for v in keyring.versions},
            "unknown_versions": {str(v): n for v, n in counts.items() if v not in keyring.versions},
            "applications": {str(v): n for v, n in sorted(apps.items())},
            "totp_seeds": {str(v): n for v, n in sorted(seeds.items())},
            "source": str(services.vault.key_file or "CRMGATE_VAULT_KEYS"),
        }

    status = _with_services(work)
    if as_json:
        typer.echo(json.dumps(status))
        return
    typer.echo(f"keys from {status['source']}; newest version {status['newest']}")
    for version in status["versions"]:
        typer.echo(f"  version {version}: protects {_protects(status, version)}")
    for version in status["unknown_versions"]:
        typer.echo(f"  version {version}: MISSING KEY for {_protects(status, version)}")


def _sealed_counts(*per_kind: dict[int, int]) -> dict[int, int]:
    """Key version -> how many secrets it seals, over every kind the vault keeps."""
    total: dict[int, int] = {}
    for counts in per_kind:
        for version, count in counts.items():
            total[version] = total.get(version, 0) + count
    return total


def _protects(status: dict[str, Any], version: str) -> str:
    apps = status["applications"].get(version, 0)
    seeds = status["totp_seeds"].get(version, 0)
    return f"{apps} application(s), {seeds} portal TOTP seed(s)"


@vault_app.command("rotate")
def vault_rotate() -> None:
    """Add a key version: new credentials are sealed with it from now on (running gateways pick
    it up by themselves). Then run `crmgate vault rewrap`."""

    async def work(services: Services) -> int:
        return rotate_key_file(_key_file(services))

    version = _with_services(work)
    typer.echo(f"vault: version {version} added and now seals new data; run `crmgate vault rewrap`")


@vault_app.command("rewrap")
def vault_rewrap() -> None:
    """Re-encrypt every stored credential under the newest key version, while the gateway keeps
    serving. Plaintext never leaves the process."""

    async def work(services: Services) -> tuple[int, list[str], int, int, list[str]]:
        moved, unreadable = await services.applications.store.rewrap()
        seeds, unreadable_seeds = await services.portal.logins.rewrap_seeds()
        return moved, unreadable, services.vault.keyring.newest, seeds, unreadable_seeds

    moved, unreadable, newest, seeds, unreadable_seeds = _with_services(work)
    typer.echo(f"vault: {moved} credential(s) rewrapped under version {newest}")
    typer.echo(f"vault: {seeds} portal TOTP seed(s) rewrapped under version {newest}")
    if unreadable_seeds:
        typer.echo(
            f"vault: {len(unreadable_seeds)} portal user(s) have a TOTP seed that cannot be "
            "decrypted and was left as it is; they can sign in with a recovery code and enrol "
            "again:",
            err=True,
        )
        for user_id in unreadable_seeds:
            typer.echo(f"  {user_id}", err=True)
    if unreadable:
        typer.echo(
            f"vault: {len(unreadable)} application(s) have credentials that cannot be decrypted "
            "and were left as they are; re-enter their credentials with PUT, or delete them:",
            err=True,
        )
        for key in unreadable:
            typer.echo(f"  {key}", err=True)
    if unreadable or unreadable_seeds:
        raise typer.Exit(code=1)


@vault_app.command("retire")
def vault_retire(
    version: Annotated[int, typer.Option(help="The key version to remove.")],
) -> None:
    """Remove an old key version; refused while any credential still needs it."""

    async def work(services: Services) -> None:
        path = _key_file(services)
        if version == services.vault.keyring.newest:
            raise _fail(f"version {version} is the newest: it seals new data and cannot be retired")
        count = _sealed_counts(
            await services.applications.store.key_versions(),
            await services.portal.logins.seed_key_versions(),
        ).get(version, 0)
        if count:
            raise _fail(
                f"version {version} still protects {count} credential(s) or TOTP seed(s): "
                "run `crmgate vault rewrap` first"
            )
        remove_version_from_key_file(path, version)

    try:
        _with_services(work)
    except VaultError as error:
        raise _fail(str(error)) from None
    typer.echo(f"vault: version {version} retired")


@vault_app.command("generate-key")
def vault_generate_key(
    version: Annotated[int, typer.Option(help="The version number to give the key.")],
) -> None:
    """Print a new random key as 'version:base64key', for CRMGATE_VAULT_KEYS."""
    typer.echo(f"{version}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}")


audit_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="The audit trail of security events: verify its keyed hash chain, rotate its key, "
    "list events.",
)
app.add_typer(audit_app, name="audit")


def _witness(value: str) -> audit.Witness:
    seq, _, digest = value.lower().partition(":")
    if not seq.isdigit() or int(seq) < 1 or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise typer.BadParameter("expected SEQ:HASH, e.g. 1234:<the 64 hex digits of its hash>")
    return audit.Witness(int(seq), digest, f"--anchor {seq}:{digest[:12]}...")


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            "--anchor",
            metavar="SEQ:HASH",
            help="A head seen elsewhere (a log line, a ticket): the chain must reach it with "
            "that hash. Repeatable.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Walk the keyed hash chain of the audit trail with every audit key: exit 0 when intact,
    1 naming the first event that was changed, deleted, cut off or inserted, 2 when it cannot
    be checked (the audit key file is missing or unusable)."""
    witnesses = [_witness(value) for value in anchor or []]
    result = _with_services(lambda services: services.audit.verify(witnesses=witnesses))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "intact": result.intact,
                    "events": result.count,
                    "keyed": result.keyed,
                    "head": {"id": result.head_seq, "hash": result.head_hash},
                    "anchored": result.anchored,
                    "broken_id": result.broken_seq,
                    "reason": result.reason,
                }
            )
        )
    elif result.intact:
        anchored = f", anchored at #{result.anchored}" if result.anchored else ""
        typer.echo(
            f"audit: {result.count} events, chain intact ({result.keyed} keyed{anchored}); "
            f"head #{result.head_seq} {result.head_hash}"
        )
    if not result.intact:
        if not as_json:
            typer.echo(f"audit: chain BROKEN at event #{result.broken_seq}: {result.reason}")
        raise typer.Exit(code=1)


@audit_app.command("rotate-key")
def audit_rotate_key() -> None:
    """Add an audit key version: it chains every event from now on (running gateways pick it
    up by themselves). Old versions stay in the file: verify needs them."""

    async def work(services: Services) -> str:
        return services.audit.keys.rotate()

    new = _with_services(work)
    typer.echo(f"audit: key {new} added; it chains every event from now on")


@audit_app.command("list")
def audit_list(
    organisation_id: Annotated[
        str | None, typer.Option(help="Only this organisation's events.")
    ] = None,
    event: Annotated[str | None, typer.Option(help="Only events of this type.")] = None,
    last: Annotated[int, typer.Option(help="How many of the newest events.", min=1)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The newest events of every organisation (and those of none: failed authentications of
    unknown keys), oldest first."""
    events = _with_services(lambda services: services.audit.all_events())
    chosen = [
        e
        for e in events
        if (organisation_id is None or e.organisation_id == organisation_id)
        and (event is None or e.event == event)
    ][-last:]
    for e in chosen:
        row = {
            "id": e.seq,
            "created_at": e.created_at.isoformat(),
            "event": e.event,
            "organisation_id": e.organisation_id,
            "actor": e.actor,
            "client": e.client,
            "request_id": e.request_id,
            "target": e.target,
            "details": e.details,
        }
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo(
                f"#{e.seq} {row['created_at']} {e.event} org={e.organisation_id or '-'} "
                f"actor={e.actor} client={e.client or '-'} target={e.target or '-'} "
                f"{json.dumps(e.details, sort_keys=True)}"
            )


@app.command("contract-coverage")
def contract_coverage(
    as_json: JsonFlag = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="List every operation.")] = False,
) -> None:
    """Print how many operations of the Data2CRM.API v1 contract crmgate serves."""
    from crmgate.api.app import create_fastapi
    from crmgate.contract import coverage

    result = coverage.compare(create_fastapi(Settings()).openapi())
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        typer.echo(coverage.render(result, verbose=verbose))
    if result.mismatched:
        raise typer.Exit(code=1)


@app.command("platforms")
def platforms(
    as_json: JsonFlag = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="The support tables of docs/platforms.md.")
    ] = False,
    write: Annotated[
        Path | None,
        typer.Option(
            help="Rewrite the generated tables in this Markdown file (docs/platforms.md)."
        ),
    ] = None,
) -> None:
    """The platforms crmgate serves: their entities, methods and authorization types, read off
    the platform descriptors."""
    from crmgate.connectors import REGISTRY, support
    from crmgate.connectors.catalogue import Catalogue

    listed = Catalogue.load(REGISTRY).listed()
    if write is not None:
        write.write_text(support.replace_generated(write.read_text(), support.markdown(listed)))
        typer.echo(f"wrote the tables of {len(listed)} platforms into {write}")
    elif markdown:
        typer.echo(support.markdown(listed))
    elif as_json:
        typer.echo(
            json.dumps(
                {
                    p.type: {
                        "authorization": list(p.authorization_types),
                        "entities": {n: list(e.methods) for n, e in p.entities.items()},
                    }
                    for p in listed
                },
                indent=2,
            )
        )
    else:
        for p in listed:
            typer.echo(f"{p.type}: {', '.join(p.authorization_types)}; {len(p.entities)} entities")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
