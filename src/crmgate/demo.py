"""`crmgate serve --demo`: crmgate working with no CRM account.

One simulator per platform (crmsim: Salesforce, HubSpot, Pipedrive, Close, Bitrix24, Keap,
Kommo, Zoho CRM, Dynamics 365, Google; the ``STARTERS``) runs beside the gateway on loopback,
over HTTPS with a throw-away certificate authority kept in the data directory, each seeded
with a small sales org. A demo organisation gets one application connected to each, through
the same API path a client uses (the credentials are verified with the simulator and sealed in
the vault). Everything a script needs
is written to ``<data_dir>/demo.json`` (0600: it holds the demo user key):

    {"base_url", "user_key", "applications": {"Salesforce": "<application key>", ...},
     "simulators": {"Salesforce": "<url>", ...}}

The simulators keep their records in memory: each start seeds fresh ones and reconnects the demo
applications to them. The demo user key stays the same from start to start while demo.json
exists.
"""

from __future__ import annotations

import json
import logging
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmgate.security.secretfile import replace_private
from crmgate.settings import Settings
from crmgate.store.accounts import AccountError, Principal

log = logging.getLogger("crmgate.demo")

DEMO_FILE = "demo.json"
DEMO_ORGANISATION = "Demo organisation"
DEMO_ADMIN = "admin@demo.example"
DEMO_SESSION_LIFETIME = 90 * 86400.0  # the demo's access token outlives any demo


@dataclass
class DemoCrm:
    """A running simulator and what the gateway needs to reach it."""

    platform_type: str
    base_url: str
    ca_file: Path
    overrides: dict[str, dict[str, Any]]
    authorization: str
    credential: dict[str, str]
    description: str
    stop: Any


def start_demo_crms(directory: Path) -> list[DemoCrm]:
    """The demo's CRMs (one simulator per platform of ``STARTERS``), seeded, sharing one
    throw-away CA (kept in ``directory``/demo-tls, 0700)."""
    from crmsim.tls import make_certificates

    tls = directory / "demo-tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    tls.chmod(0o700)  # the throw-away CA's private key is in there
    certificates = make_certificates(tls)
    crms: list[DemoCrm] = []
    try:
        for start in STARTERS:
            crms.append(start(certificates))
    except BaseException:
        for crm in crms:
            crm.stop()
        raise
    return crms


def _serve(
    certificates: Any,
    platform_type: str,
    simulator: Any,
    overrides: Callable[[str], dict[str, dict[str, Any]]],
    authorization: str,
    credential: Callable[[str], dict[str, str]],
) -> DemoCrm:
    """A seeded simulator on a free loopback port, in a background thread, and the
    application the demo connects to it (``credential`` of the simulator's base URL)."""
    from crmsim.server import RunningSimulator

    running = RunningSimulator(simulator.app(), certificates).__enter__()
    return DemoCrm(
        platform_type=platform_type,
        base_url=running.base_url,
        ca_file=certificates.ca_file,
        overrides=overrides(running.base_url),
        authorization=authorization,
        credential=credential(running.base_url),
        description=f"Demo: a {platform_type} account played by crmsim",
        stop=lambda: running.__exit__(None, None, None),
    )


def start_salesforce(certificates: Any) -> DemoCrm:
    """A Salesforce org, connected with an access token that outlives the demo."""
    from crmsim.salesforce import SalesforceSimulator, platform_overrides
    from crmsim.seed import seed_sales_org

    simulator = SalesforceSimulator(
        org_name="Demo Sales Org (crmsim)", session_lifetime=DEMO_SESSION_LIFETIME
    )
    user = simulator.add_user("dana@demo.example", "demo-password", name="Dana Demo")
    seed_sales_org(simulator.data, owner=user.id)
    token = simulator.issue_session(user)
    return _serve(
        certificates,
        "Salesforce",
        simulator,
        platform_overrides,
        "oAuth-external-refresh",
        lambda base: {"instance_url": base, "access_token": token},
    )


def start_hubspot(certificates: Any) -> DemoCrm:
    """A HubSpot portal, connected with a private app token."""
    from crmsim.hubspot import HubSpotSimulator, platform_overrides
    from crmsim.seed import seed_hubspot_portal

    simulator = HubSpotSimulator(ten_secondly=10_000)
    seed_hubspot_portal(simulator)
    token = simulator.add_private_app()
    return _serve(
        certificates,
        "HubSpot",
        simulator,
        platform_overrides,
        "key",
        lambda base: {"access_token": token},
    )


def start_pipedrive(certificates: Any) -> DemoCrm:
    """A Pipedrive company, connected with an API token."""
    from crmsim.pipedrive import PipedriveSimulator, platform_overrides, seed_pipedrive

    simulator = PipedriveSimulator(company="Demo Sales (crmsim)", burst=10_000)
    seed_pipedrive(simulator)
    token = simulator.add_api_token()
    return _serve(
        certificates,
        "Pipedrive",
        simulator,
        platform_overrides,
        "key",
        lambda base: {"instance_url": base, "api_token": token},
    )


def start_close(certificates: Any) -> DemoCrm:
    """A Close organization, connected with an API key."""
    from crmsim.close import CloseSimulator, platform_overrides, seed_close

    simulator = CloseSimulator(organization="Demo Sales (crmsim)", burst=10_000)
    seed_close(simulator)
    key = simulator.add_api_key()
    return _serve(
        certificates, "CloseIO", simulator, platform_overrides, "key", lambda base: {"api_key": key}
    )


def start_bitrix24(certificates: Any) -> DemoCrm:
    """A Bitrix24 portal, connected with an inbound webhook."""
    from crmsim.bitrix24 import Bitrix24Simulator, platform_overrides, seed_bitrix24

    simulator = Bitrix24Simulator(burst=10_000)
    seed_bitrix24(simulator)
    key = simulator.issue_key()
    return _serve(
        certificates,
        "Bitrix24",
        simulator,
        platform_overrides,
        "key",
        lambda base: {"webhook_url": f"{base}/rest/{key}/"},
    )


def start_keap(certificates: Any) -> DemoCrm:
    """A Keap (Infusionsoft) application, connected with a personal access token."""
    from crmsim.keap import KeapSimulator, platform_overrides, seed_keap

    simulator = KeapSimulator(tenant="demo.infusionsoft.com", burst=10_000)
    seed_keap(simulator)
    key = simulator.add_api_key()
    return _serve(
        certificates,
        "Infusionsoft",
        simulator,
        platform_overrides,
        "key",
        lambda base: {"api_key": key},
    )


def start_amocrm(certificates: Any) -> DemoCrm:
    """A Kommo (amoCRM) account, connected with a long-lived token."""
    from crmsim.amocrm import AmoSimulator, platform_overrides, seed_amocrm

    simulator = AmoSimulator(name="Demo Sales (crmsim)", per_second=10_000)
    seed_amocrm(simulator)
    key = simulator.add_api_key()
    return _serve(
        certificates,
        "AmoCRM",
        simulator,
        platform_overrides,
        "key",
        lambda base: {"instance_url": base, "api_key": key},
    )


def start_zoho(certificates: Any) -> DemoCrm:
    """A Zoho CRM org, connected with an access token that outlives the demo (Zoho is OAuth
    only: a client would refresh it and send crmgate the new one)."""
    from crmsim.zoho import ZohoSimulator, platform_overrides, seed_zoho

    simulator = ZohoSimulator()
    seed_zoho(simulator)
    token = simulator.issue_access_token(lifetime=DEMO_SESSION_LIFETIME)
    return _serve(
        certificates,
        "ZohoCRM",
        simulator,
        platform_overrides,
        "oAuth-external-refresh",
        lambda base: {"instance_url": base, "access_token": token},
    )


def start_dynamics(certificates: Any) -> DemoCrm:
    """A Dynamics 365 organisation, connected as an application user (server to server:
    crmgate gets its tokens from the simulated Entra ID itself)."""
    from crmsim.dynamics import DynamicsSimulator, platform_overrides, seed_dynamics

    simulator = DynamicsSimulator(organisation="Demo Organisation (crmsim)")
    seed_dynamics(simulator)
    client_id, secret = "demo-app-" + secrets.token_hex(4), secrets.token_urlsafe(24)
    simulator.add_application_user(client_id, secret)
    return _serve(
        certificates,
        "MicrosoftDynamics",
        simulator,
        platform_overrides,
        "user",
        lambda base: {
            "instance_url": base,
            "tenant_id": simulator.tenant_id,
            "client_id": client_id,
            "client_secret": secret,
        },
    )


def start_google(certificates: Any) -> DemoCrm:
    """A Google account (contacts, calendar, tasks), connected with an access token that
    outlives the demo (Google is OAuth only: a client would refresh it and send the new one)."""
    from crmsim.google import GoogleSimulator, platform_overrides, seed_google

    simulator = GoogleSimulator(domain="demo.example", per_minute=10_000)
    seed_google(simulator)
    token = simulator.issue_access_token(lifetime=DEMO_SESSION_LIFETIME)
    return _serve(
        certificates,
        "GSuite",
        simulator,
        platform_overrides,
        "oAuth-external-refresh",
        lambda base: {"access_token": token},
    )


STARTERS: tuple[Callable[[Any], DemoCrm], ...] = (
    start_salesforce,
    start_hubspot,
    start_pipedrive,
    start_close,
    start_bitrix24,
    start_keap,
    start_amocrm,
    start_zoho,
    start_dynamics,
    start_google,
)


def demo_settings(settings: Settings, crms: list[DemoCrm]) -> Settings:
    """The operator's settings, with the demo CRMs' hosts and CA added."""
    overrides = dict(settings.platform_overrides)
    for crm in crms:
        overrides.update(crm.overrides)
    networks = [*settings.outbound_allowed_networks, "127.0.0.0/8"]  # the simulators
    return settings.model_copy(
        update={
            "platform_overrides": overrides,
            "outbound_ca_file": str(crms[0].ca_file),
            "outbound_allowed_networks": networks,
        }
    )


async def prepare(services: Any, crms: list[DemoCrm]) -> dict[str, Any]:
    """The demo organisation and one application per demo CRM (recreated for these
    simulators); returns what demo.json holds."""
    path = services.settings.data_dir / DEMO_FILE
    previous = _read(path)
    principal, user_key = await _demo_principal(services, previous.get("user_key"))
    applications = services.applications
    keys: dict[str, str] = {}
    for crm in crms:
        old = (previous.get("applications") or {}).get(crm.platform_type)
        if old:
            try:
                await applications.store.delete(principal.organisation_id, old)
            except AccountError:
                log.debug("the previous demo application is gone already")
        view = await applications.create(
            principal,
            platform_type=crm.platform_type,
            authorization=crm.authorization,
            credential=crm.credential,
            description=crm.description,
        )
        keys[crm.platform_type] = view.key
    demo = {
        "base_url": services.settings.resolved_public_url,
        "user_key": user_key,
        "applications": keys,
        "simulators": {crm.platform_type: crm.base_url for crm in crms},
        "portal": await _demo_portal_login(services, principal, previous.get("portal")),
    }
    replace_private(path, json.dumps(demo, indent=2).encode() + b"\n")
    return demo


async def _demo_principal(services: Any, user_key: str | None) -> tuple[Principal, str]:
    """The demo organisation's admin: the key of demo.json while it works, else a new account
    on an empty database. The demo points the Salesforce platform at its simulator for the whole
    process, so it refuses a database holding other organisations: their applications would be
    sent to the simulator."""
    principal = await services.accounts.authenticate(user_key) if user_key else None
    others = await services.accounts.organisation_count() - (principal is not None)
    if others:
        raise AccountError(
            409,
            "CONFLICT",
            "the demo runs on a database of its own, and this one holds other organisations; "
            "run it with another data directory, e.g. CRMGATE_DATA_DIR=./var-demo make serve",
        )
    if principal is not None and user_key:
        return principal, user_key
    created = await services.accounts.create_account(DEMO_ORGANISATION, "Demo admin", DEMO_ADMIN)
    principal = await services.accounts.authenticate(created.key.secret)
    assert principal is not None
    return principal, created.key.secret


async def _demo_portal_login(services: Any, principal: Principal, previous: Any) -> dict[str, str]:
    """The demo admin's portal sign-in: the password of demo.json while there is one, else a
    new one (a demo password is still a password: random, never a fixed word)."""
    password = previous.get("password") if isinstance(previous, dict) else None
    if not isinstance(password, str) or len(password) < 12:
        password = secrets.token_urlsafe(12)
    portal = services.portal
    await portal.logins.ensure(principal.user_id, DEMO_ADMIN, portal.passwords.hash(password))
    return {
        "url": f"{services.settings.resolved_public_url}/portal/",
        "email": DEMO_ADMIN,
        "password": password,
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def banner(demo: dict[str, Any], demo_file: Path) -> str:
    base = demo["base_url"]
    (platform, application_key), *others = demo["applications"].items()
    curl = shlex.join(
        [
            "curl",
            "-s",
            "-H",
            f"X-API2CRM-USER-KEY: {demo['user_key']}",
            "-H",
            f"X-API2CRM-APPLICATION-KEY: {application_key}",
            f"{base}/v1/application/entity/contact/list?page_size=5",
        ]
    )
    return "\n".join(
        [
            "",
            "crmgate demo: simulated CRMs run beside the gateway, each connected to the demo",
            "organisation as an application.",
            *(f"  {name} simulator: {url}" for name, url in demo["simulators"].items()),
            f"  user key:         {demo['user_key']}",
            f"  application key:  {application_key} ({platform})",
            *(f"  application key:  {key} ({name})" for name, key in others),
            f"  (also in {demo_file})",
            "",
            "List the demo contacts:",
            f"  {curl}",
            "",
            *_portal_lines(demo.get("portal")),
        ]
    )


def _portal_lines(portal: Any) -> list[str]:
    if not isinstance(portal, dict):
        return []
    return [
        f"The developer portal: {portal['url']}",
        f"  sign in as {portal['email']} with the password {portal['password']}",
        "",
    ]
