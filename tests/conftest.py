"""Shared fixtures: real databases (SQLite and PostgreSQL) and a real gateway on loopback."""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
import pytest
import uvicorn

from crmgate.api.app import create_app
from crmgate.runtime import Services
from crmgate.settings import Settings
from crmgate.store import migrate

T = TypeVar("T")

PG_HOST = os.environ.get("CRMGATE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CRMGATE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CRMGATE_TEST_PG_USER", "postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---- PostgreSQL --------------------------------------------------------------------------------


def _pg_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def _pg_admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    async def go() -> None:
        connection = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres"
        )
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(go())


@pytest.fixture(scope="session")
def postgres_available() -> None:
    if _pg_reachable():
        return
    message = (
        f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}: the PostgreSQL half of the store "
        "tests did NOT run. Start it (see .ci/run) to run them."
    )
    if IN_CI:
        pytest.fail(message + " CI must never skip them.")
    pytest.skip(message)


def new_postgres_database() -> tuple[str, str]:
    name = f"crmgate_test_{secrets.token_hex(6)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def drop_postgres_database(name: str) -> None:
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Database:
    backend: str
    url: str
    name: str  # SQLite file path or PostgreSQL database name


STORE_BACKENDS = ("sqlite", "postgresql")
sqlite_only = pytest.mark.store_backends("sqlite")
on_both_stores = pytest.mark.store_backends(*STORE_BACKENDS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses ``database`` runs once per store backend. ``@pytest.mark.store_backends
    ("sqlite")`` on a module (``pytestmark``) or a test narrows that; the closest mark wins, so
    a connector suite runs on SQLite and its tests where the store takes part (credentials,
    tokens) say ``store_backends(*STORE_BACKENDS)``."""
    if "database" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("store_backends")
    backends = marker.args if marker is not None else STORE_BACKENDS
    unknown = set(backends) - set(STORE_BACKENDS)
    assert backends and not unknown, f"store_backends: unknown {unknown or 'none given'}"
    metafunc.parametrize("database", backends, indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of each backend (or those a ``store_backends`` mark names);
    PostgreSQL gets a fresh database per test."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        yield Database("sqlite", f"sqlite+aiosqlite:///{path}", str(path))
        return
    request.getfixturevalue("postgres_available")
    name, url = new_postgres_database()
    try:
        yield Database("postgresql", url, name)
    finally:
        drop_postgres_database(name)


def make_settings(data_dir: Path, database_url: str | None = None, **extra: Any) -> Settings:
    # the simulators run on loopback, which the outbound guard refuses unless allowed
    extra.setdefault("outbound_allowed_networks", ["127.0.0.0/8"])
    # every test client is 127.0.0.1 and fast: rate limits only where a test sets them
    # (tests/test_limits.py), so that no other test depends on its own speed
    for limit in ("rate_limit_user_key", "rate_limit_application", "rate_limit_bad_keys"):
        extra.setdefault(limit, "")
    # exact counting where a test sets a limit: the default sliding-window counter weighs the
    # previous window, so a small limit's edge would depend on the clock (tests/test_limits.py
    # covers the other strategies)
    extra.setdefault("rate_limit_strategy", "moving-window")
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        database_url=database_url,
        usage_flush_interval=0.2,
        **extra,
    )


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    """Settings on a migrated database of each backend."""
    result = make_settings(tmp_path / "data", database.url)
    migrate_database(result)
    return result


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    result = make_settings(tmp_path / "data")
    migrate_database(result)
    return result


def migrate_database(settings: Settings) -> None:
    """The database of ``settings`` at the newest schema. An empty one is made a copy of a
    database migrated once per test session (a file copy on SQLite, ``CREATE DATABASE ...
    TEMPLATE`` on PostgreSQL): running every migration for every test costs seconds each."""
    url = settings.resolved_database_url
    if url.startswith("sqlite") and ":memory:" not in url:
        path = Path(url.split("///", 1)[1])
        if not path.exists() or path.stat().st_size == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_migrated_template("sqlite"), path)
            return
    elif url.startswith("postgresql") and _pg_is_empty(url):
        name = url.rsplit("/", 1)[1]
        _pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_migrated_template("postgresql")}"')
        return
    with_services(settings, lambda services: migrate.upgrade(services.engine))


_TEMPLATES: dict[str, str] = {}


def _migrated_template(backend: str) -> str:
    """A database migrated to the newest schema, made on first use (an SQLite file, or a
    PostgreSQL database dropped when the session ends)."""
    if backend not in _TEMPLATES:
        directory = Path(tempfile.mkdtemp(prefix="crmgate-template-"))
        url = None
        if backend == "postgresql":
            name, url = new_postgres_database()
            atexit.register(drop_postgres_database, name)
            _TEMPLATES[backend] = name
        else:
            _TEMPLATES[backend] = str(directory / "crmgate.db")
        template = make_settings(directory, url)
        with_services(template, lambda services: migrate.upgrade(services.engine))
    return _TEMPLATES[backend]


def _pg_is_empty(url: str) -> bool:
    import asyncpg

    name = url.rsplit("/", 1)[1]

    async def go() -> bool:
        connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=name)
        try:
            tables = await connection.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await connection.close()
        return int(tables) == 0

    return asyncio.run(go())


def with_services(settings: Settings, work: Any) -> Any:
    """Run ``await work(services)`` on a fresh Services of these settings (the operator's side)."""

    async def go() -> Any:
        async with Services.open(settings, check_schema=False) as services:
            return await work(services)

    return asyncio.run(go())


# ---- a gateway on loopback ---------------------------------------------------------------------


def loopback_socket() -> socket.socket:
    """A listening address on loopback, bound before the app exists (so settings such as
    CRMGATE_PUBLIC_URL can name its port)."""
    bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bound.bind(("127.0.0.1", 0))
    return bound


class RunningGateway:
    """crmgate's real ASGI app under uvicorn, in a thread, on a free loopback port."""

    def __init__(self, app: Any, bound: socket.socket | None = None) -> None:
        self.socket = bound or loopback_socket()
        self.port = self.socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_config=None, access_log=False, server_header=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> RunningGateway:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.socket.close()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API2CRM-USER-KEY": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=20, trust_env=False)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[RunningGateway]:
    with RunningGateway(create_app(settings)) as running:
        yield running


@pytest.fixture
def sqlite_gateway(sqlite_settings: Settings) -> Iterator[RunningGateway]:
    with RunningGateway(create_app(sqlite_settings)) as running:
        yield running


class AppClient:
    """A client of one connected application: every call carries its application key, paths
    are under /v1/application."""

    def __init__(self, client: httpx.Client, key: str) -> None:
        self.client = client
        self.key = key

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-API2CRM-APPLICATION-KEY": self.key, **kwargs.pop("headers", {})}
        return self.client.request(method, f"/v1/application{path}", headers=headers, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


def check_life_cycle(
    app: AppClient,
    entity: str,
    record: tuple[str, dict[str, Any], dict[str, Any]],
    raw: tuple[str, str],
    links: dict[str, Any] | None = None,
) -> None:
    """One unified entity through every route, against whichever CRM ``app`` is connected to:
    create, get, two pages in order, a reversed sort, a filter, counts, update, describe,
    delete, bulk create/update/delete, and the same record raw through the passthrough.
    ``record`` is (the field naming a record, more fields to create with, a change to make);
    ``raw`` is (the passthrough path with {native} and {id}, the id's key in the CRM's answer)."""
    name_field, extra, change = record
    links = links or {}
    base = f"/entity/{entity}"
    ids = [
        app.ok("POST", base, 201, json={name_field: f"{entity} {n}", **extra, **links})["id"]
        for n in (3, 1, 2)
    ]
    one = app.ok("GET", f"{base}/{ids[0]}")
    assert one[name_field] == f"{entity} 3"
    for key, value in extra.items():
        assert one[key] == value, key

    ordered = [f"{entity} 1", f"{entity} 2", f"{entity} 3"]
    page_one = app.ok("GET", f"{base}/list", params={"page_size": 2, "sort": name_field})
    page_two = app.ok("GET", f"{base}/list", params={"page_size": 2, "page": 2, "sort": name_field})
    assert [r[name_field] for r in page_one + page_two] == ordered
    backwards = app.ok("GET", f"{base}/list", params={"sort": f"-{name_field}"})
    assert [r[name_field] for r in backwards] == ordered[::-1]
    chosen = app.ok("GET", f"{base}/list", params={"filter": f"{name_field} eq '{entity} 2'"})
    assert [r["id"] for r in chosen] == [ids[2]]
    assert app.ok("GET", f"{base}/count") == {"total": 3}
    later = app.ok("GET", f"{base}/count", params={"filter": f"{name_field} ge '{entity} 2'"})
    assert later == {"total": 2}

    app.ok("PUT", f"{base}/{ids[1]}", json=change)
    changed = app.ok("GET", f"{base}/{ids[1]}")
    for key, value in change.items():
        assert changed[key] == value, key
    if name_field not in change:
        assert changed[name_field] == f"{entity} 1"  # what the change leaves, it keeps

    described = app.ok("GET", f"{base}/describe")
    assert described["entity"] == entity and name_field in described["schema"]["fetch"]["fields"]

    assert app.call("DELETE", f"{base}/{ids[0]}").status_code == 204
    assert app.call("GET", f"{base}/{ids[0]}").status_code == 404

    bulk = app.ok(
        "POST",
        f"{base}/bulk",
        201,
        json={"item": [{name_field: f"{entity} bulk {n}", **extra, **links} for n in range(3)]},
    )["item"]
    assert [i["status"] for i in bulk] == [201, 201, 201]
    made = [i["id"] for i in bulk]
    updated = app.ok("PUT", f"{base}/bulk", json={"item": [{"id": i, **change} for i in made]})
    assert [i["status"] for i in updated["item"]] == [200, 200, 200]
    assert app.ok("GET", f"{base}/count") == {"total": 5}
    removed = app.ok("DELETE", f"{base}/bulk", json={"item": [{"id": i} for i in made]})
    assert [i["status"] for i in removed["item"]] == [204, 204, 204]
    assert app.ok("GET", f"{base}/count") == {"total": 2}
    # ids that are not one record's (a second id smuggled into a CRM's id list) are not found
    # and never sent
    odd = ["not an id", f"{ids[2]},{ids[1]}"]
    for method, item in (("PUT", change), ("DELETE", {})):
        refused = app.ok(method, f"{base}/bulk", json={"item": [{"id": i, **item} for i in odd]})
        assert [i["status"] for i in refused["item"]] == [404, 404], refused
    assert app.ok("GET", f"{base}/count") == {"total": 2}

    path, id_key = raw
    native = described["native_entity"]
    answer = app.ok("POST", "/request", 201, json={"path": path.format(native=native, id=ids[2])})
    assert answer["status_code"] == 200
    found = json.loads(base64.b64decode(answer["content"]))
    for part in id_key.split("."):  # a dotted key reaches into an envelope ("data.id")
        found = found[int(part)] if isinstance(found, list) else found[part]  # "data.0.id"
    assert str(found) == ids[2]


class TokenServer(Protocol):
    """What ``check_refresh`` needs of a simulator: ``expire_tokens()`` and ``refresh_tokens``."""

    @property
    def refresh_tokens(self) -> Any: ...

    def expire_tokens(self) -> None: ...


def check_refresh(
    app: AppClient, sim: TokenServer, refreshes: Callable[[], int], refusal: str
) -> httpx.Response:
    """The token renewal every oAuth-internal application gets, against whichever CRM ``app``
    is connected to: an expired access token is refreshed once (``refreshes()`` counts the
    simulator's token calls) and the new one kept; once the CRM revoked the refresh token, a
    call answers 401 with the CRM's refusal (``refusal``) and the application is marked not
    authorized. Returns the refusal for checks of its own."""
    sim.expire_tokens()
    assert app.call("GET", "/entity/contact/count").status_code == 200
    assert refreshes() == 1
    assert app.call("GET", "/entity/contact/count").status_code == 200
    assert refreshes() == 1  # the new token is kept
    sim.refresh_tokens.clear()  # revoked at the CRM
    sim.expire_tokens()
    refused = app.call("GET", "/entity/contact/count")
    assert refused.status_code == 401, refused.text
    assert refusal in refused.json()["detail"]["message"]
    assert app.client.get(f"/v1/application/{app.key}").json()["is_authorized"] is False
    return refused


def oauth_connect(
    gateway: RunningGateway,
    admin_key: str,
    platform: str,
    done: str,
    ca_file: str,
    *,
    entities: str = "",
    **session: str,
) -> str:
    """An OAuth flow in application mode, as an admin and a browser run it: the admin opens a
    session, the browser follows the redirects through the CRM's authorize page (the simulator
    approves at once) and back to crmgate's callback, which sends it to ``done`` with the new
    application's key in the fragment. Returns that key. ``entities``: the flow asks only
    their scopes (``/authorize?entities=``)."""
    with gateway.client(admin_key) as client:
        opened = client.post(
            "/v1/oauth/session", json={"type": platform, "redirect": done, **session}
        )
        assert opened.status_code == 201, opened.text
    context = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(trust_env=False, timeout=20, verify=context) as browser:
        authorize = httpx.URL(opened.json()["authorize_url"])
        response = browser.get(
            authorize.copy_add_param("entities", entities) if entities else authorize
        )
        for _ in range(5):
            location = response.headers.get("location", "")
            if response.status_code != 302 or location.startswith(done):
                break
            response = browser.get(location)
    location = response.headers.get("location", "")
    assert location.startswith(done + "#application_key="), response.text
    return location.split("=", 1)[1]


@dataclass
class Account:
    organisation_id: str
    user_id: str
    key: str


def create_account(
    settings: Settings, name: str = "Acme", email: str = "admin@acme.example"
) -> Account:
    async def work(services: Services) -> Account:
        created = await services.accounts.create_account(name, "Admin", email)
        return Account(created.organisation_id, created.user.id, created.key.secret)

    result: Account = with_services(settings, work)
    return result


# ---- crmgate serve as an operator runs it ----------------------------------------------


@dataclass
class Served:
    """A ``crmgate serve`` process on a free loopback port, with one account."""

    base_url: str
    port: int
    key: str
    user_id: str
    process: subprocess.Popen[str]
    stderr: Path


@contextlib.contextmanager
def serve_process(directory: Path, *arguments: str, **environment: str) -> Iterator[Served]:
    """``crmgate serve [arguments]`` on SQLite in ``directory`` (``<directory>/data``), with
    ``CRMGATE_*`` settings from ``environment`` only (none of this process's), running until
    the block ends."""
    settings = make_settings(directory / "data")
    migrate_database(settings)
    # the demo makes its own organisation, on a database that holds no other
    admin = None if "--demo" in arguments else create_account(settings)
    bound = loopback_socket()
    port = bound.getsockname()[1]
    bound.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    env |= {"CRMGATE_DATA_DIR": str(directory / "data"), "CRMGATE_PORT": str(port)}
    env |= environment
    stderr = directory / "stderr.log"
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "crmgate.cli", "serve", *arguments],
            env=env,
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    # the demo starts eleven simulators: on a loaded two-core machine that can take a minute
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base_url}/health", timeout=1, trust_env=False).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"crmgate serve did not start: {stderr.read_text()}")
        time.sleep(0.1)
    try:
        if admin is None:
            found = json.loads((directory / "data" / "demo.json").read_text())
            admin = Account("", "", found["user_key"])
        yield Served(base_url, port, admin.key, admin.user_id, process, stderr)
    finally:
        process.terminate()
        process.wait(timeout=20)


@dataclass
class Demo:
    """``crmgate serve --demo`` (what ``make serve`` runs) and what its demo.json says."""

    base_url: str
    user_key: str
    applications: dict[str, str]  # platform type -> application key
    data_dir: Path  # what its operator can read: the database, the vault's key file


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo: the five simulated CRMs, each connected to the demo organisation, with the rate
    limits lifted (contract suites send many requests; the limits have tests of their own)."""
    directory = tmp_path_factory.mktemp("demo")
    with serve_process(
        directory,
        "--demo",
        CRMGATE_RATE_LIMIT_USER_KEY="",
        CRMGATE_RATE_LIMIT_APPLICATION="",
        CRMGATE_RATE_LIMIT_BAD_KEYS="",
    ) as served:
        found = json.loads((directory / "data" / "demo.json").read_text())
        yield Demo(served.base_url, served.key, found["applications"], directory / "data")


# ---- CRM simulators ----------------------------------------------------------------------------

from crmsim.salesforce import SalesforceSimulator, platform_overrides  # noqa: E402
from crmsim.server import RunningSimulator  # noqa: E402
from crmsim.tls import Certificates, make_certificates  # noqa: E402


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@dataclass
class SalesforceSim:
    simulator: SalesforceSimulator
    base_url: str
    ca_file: str

    @property
    def host(self) -> str:
        return self.base_url.removeprefix("https://")

    def overrides(self) -> dict[str, dict[str, Any]]:
        """CRMGATE_PLATFORM_OVERRIDES that point Salesforce and its sandbox at this simulator."""
        return platform_overrides(self.base_url)


@pytest.fixture
def salesforce(certificates: Certificates) -> Iterator[SalesforceSim]:
    simulator = SalesforceSimulator(org_name="Acme Corp (sim)")
    with RunningSimulator(simulator.app(), certificates) as running:
        yield SalesforceSim(simulator, running.base_url, str(certificates.ca_file))


@pytest.fixture
def crm_settings(tmp_path: Path, database: Database, salesforce: SalesforceSim) -> Settings:
    """Settings on a migrated database of each backend, with Salesforce pointed at the simulator."""
    result = make_settings(
        tmp_path / "data",
        database.url,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
    )
    migrate_database(result)
    return result


@pytest.fixture
def crm_gateway(crm_settings: Settings) -> Iterator[RunningGateway]:
    with RunningGateway(create_app(crm_settings)) as running:
        yield running


Sim = TypeVar("Sim")


@dataclass
class Simulated(Generic[Sim]):
    """A CRM simulator running over HTTPS on loopback, and how to point crmgate at it."""

    simulator: Sim
    base_url: str
    ca_file: str
    overrides: Callable[[str], dict[str, dict[str, Any]]]

    def settings(self, directory: Path, database: Database, **extra: Any) -> Settings:
        """Settings on a migrated database with this platform pointed at the simulator."""
        result = make_settings(
            directory,
            database.url,
            platform_overrides=self.overrides(self.base_url),
            outbound_ca_file=self.ca_file,
            **extra,
        )
        migrate_database(result)
        return result


SimulatedT = TypeVar("SimulatedT", bound=Simulated[Any])


def run_simulated(
    kind: type[SimulatedT],
    simulator: Any,
    certificates: Certificates,
    overrides: Callable[[str], dict[str, dict[str, Any]]],
) -> Iterator[SimulatedT]:
    """For a fixture: ``yield from run_simulated(Zoho, ZohoSimulator(), certificates, ...)``."""
    with RunningSimulator(simulator.app(), certificates) as running:
        simulator.base_url = running.base_url
        yield kind(simulator, running.base_url, str(certificates.ca_file), overrides)


# ---- HubSpot ---------------------------------------------------------------------------------

from crmsim.hubspot import HubSpotSimulator  # noqa: E402
from crmsim.hubspot import platform_overrides as hubspot_overrides  # noqa: E402


@dataclass
class HubSpot:
    simulator: HubSpotSimulator
    base_url: str
    ca_file: str

    def overrides(self) -> dict[str, dict[str, Any]]:
        return hubspot_overrides(self.base_url)


@pytest.fixture
def hubspot(certificates: Certificates) -> Iterator[HubSpot]:
    simulator = HubSpotSimulator()
    with RunningSimulator(simulator.app(), certificates) as running:
        yield HubSpot(simulator, running.base_url, str(certificates.ca_file))


# ---- the portal in a browser (tests/browser.py has the helpers) --------------------------------

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium(portal_server: Served) -> Iterator[Browser]:
    """Chromium for one test module. Playwright's sync API runs an event loop in this thread
    while it lives, and other tests call asyncio.run(): so it lives for a module, and starts
    after the server (whose set-up runs asyncio.run). A module that needs a server of its own
    defines its own ``portal_server`` fixture (module scope), which this one then uses."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def start_portal(directory: Path, **environment: str) -> Iterator[Served]:
    """``crmgate serve --demo`` with open sign-up and the rate limits lifted (the browser tests
    sign up many accounts from one address; the limits have tests of their own)."""
    env = {
        "CRMGATE_PORTAL_SIGNUP": "open",
        "CRMGATE_RATE_LIMIT_USER_KEY": "",
        "CRMGATE_RATE_LIMIT_APPLICATION": "",
        "CRMGATE_RATE_LIMIT_BAD_KEYS": "",
        # cheap password hashes: the tests sign in often; the parameters are the operator's
        "CRMGATE_PORTAL_ARGON2_MEMORY_KIB": "8192",
        "CRMGATE_PORTAL_ARGON2_TIME_COST": "1",
    }
    with serve_process(directory, "--demo", **(env | environment)) as served:
        yield served


@pytest.fixture(scope="session")
def portal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with start_portal(tmp_path_factory.mktemp("portal")) as served:
        yield served


@pytest.fixture
def page(chromium: Browser, portal_server: Served) -> Iterator[Page]:
    """A page in a browser context of its own (its own cookies), on the portal's server."""
    context = chromium.new_context(base_url=portal_server.base_url)
    opened = context.new_page()
    yield opened
    context.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a module's first browser test starts `crmgate serve --demo` (eleven simulators) and
    # Chromium in its set-up, which the default 120 s counts
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(300))
