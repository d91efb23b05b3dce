"""Scale-out (issue 8): several `crmgate serve` processes on one PostgreSQL and one Redis behave
as one gateway. Three real processes play three hosts behind a load balancer, each with a data
directory of its own (the secrets they must share come from the environment, or copied, as
docs/deployment.md says): two of one worker and one of ``--workers 2`` over TLS, whose workers
the tests reach one by one (each connection's owner is looked up in /proc).

- A rate limit on a user key counts every request, whichever process or worker serves it.
- A key revoked (through the API of one process, or with the CLI) and an application deleted or
  given new credentials through one process are seen by every other within one second, whatever
  they keep in memory: the tests use each key and application everywhere first, so that a cache
  would be warm, then time how long the old answer lasts.
- Every worker of ``--workers N`` serves TLS 1.2+ only, answers 431 to an oversized head and logs
  through crmgate's redacting handler; ``--workers N`` refuses SQLite and the demo, and warns
  which limits each process counts alone without Redis.

One token refresh per expiry across processes is
tests/test_tokens.py::test_many_concurrent_requests_in_two_processes_cause_one_refresh: two
`crmgate serve` processes on PostgreSQL, 100 concurrent requests, one refresh per expiry (with and
without rotated refresh tokens). It stays beside the token tests whose fixtures it shares.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from conftest import (
    SalesforceSim,
    create_account,
    drop_postgres_database,
    make_settings,
    migrate_database,
    new_postgres_database,
)
from crmsim.salesforce import SalesforceSimulator
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates
from test_api_applications import oauth_credential
from test_limits import REDIS_URL
from test_serve import ROOT, Served, free_port

CRMGATE = str(ROOT / ".venv" / "bin" / "crmgate")
USER = "X-API2CRM-USER-KEY"
APP = "X-API2CRM-APPLICATION-KEY"
LIMIT = 6  # per minute, on the limited organisation's user keys
WITHIN = 1.0  # seconds: how long another process may still accept what was revoked
POLL_FOR = WITHIN + 1.5  # seconds each propagation check keeps asking


# ---- which worker holds a connection -----------------------------------------------------------


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the loopback connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            return inode or None  # 0: still in the accept queue, no process holds it yet
    return None


def owner(supervisor: int, server_port: int, client_port: int, timeout: float = 10) -> int:
    """The worker process (a child of ``supervisor``) that accepted the connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inode = _socket_inode(server_port, client_port)
        if inode is not None:
            for pid in _children(supervisor):
                try:
                    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
                except (FileNotFoundError, ProcessLookupError):
                    continue
                if f"socket:[{inode}]" in links:
                    return pid
        time.sleep(0.02)
    raise AssertionError(f"no worker of {supervisor} accepted the connection from {client_port}")


def client_port(response: httpx.Response) -> int:
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("socket").getsockname()[1])


# ---- the gateway processes ---------------------------------------------------------------------


@dataclass
class Host:
    """One `crmgate serve` process: a host behind the load balancer."""

    served: Served
    port: int
    workers: int
    verify: ssl.SSLContext | bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"{'https' if self.verify else 'http'}://127.0.0.1:{self.port}"

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            headers={USER: key} if key else {},
            verify=self.verify,
            trust_env=False,
            timeout=30,
            limits=httpx.Limits(max_connections=1),  # one connection: one worker
        )

    def pinned(self, key: str | None = None) -> dict[int, httpx.Client]:
        """One client per worker, each kept on a connection that worker accepted."""
        found: dict[int, httpx.Client] = {}
        spare: list[httpx.Client] = []
        try:
            for _ in range(60):
                client = self.client(key)
                response = client.get("/health")
                assert response.status_code == 200, response.text
                pid = self.worker_of(response)
                if pid in found:
                    spare.append(client)  # kept open meanwhile: the next goes elsewhere
                else:
                    found[pid] = client
                if len(found) == self.workers:
                    return found
            raise AssertionError(f"only workers {sorted(found)} of {self.workers} took connections")
        finally:
            for client in spare:
                client.close()

    def worker_of(self, response: httpx.Response) -> int:
        return owner(self.served.process.pid, self.port, client_port(response))

    def stop(self) -> None:
        self.served.stop()


def _wait_until_serving(host: Host, timeout: float = 180) -> None:
    """/health answers, and every worker has finished its start (a busy machine makes a worker
    take many seconds to import crmgate)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.served.process.poll() is not None:
            raise AssertionError(host.served.stdout + host.served.stderr)
        started = host.served.stderr.count("Application startup complete")
        if started >= host.workers:
            try:
                with host.client() as client:
                    if client.get("/health").status_code == 200:
                        return
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    host.stop()
    raise AssertionError(f"not serving:\n{host.served.stdout}\n{host.served.stderr}")


@dataclass
class Cluster:
    hosts: list[Host]
    admin: str  # the main organisation's admin key
    limited: str  # the admin key of an organisation whose user keys are limited to LIMIT/minute
    sim: SalesforceSim
    database_url: str
    redis_prefix: str

    @property
    def one(self) -> Host:
        return self.hosts[0]

    @property
    def two(self) -> Host:
        return self.hosts[1]

    @property
    def workers(self) -> Host:
        return self.hosts[2]

    def everywhere(self, key: str) -> list[tuple[str, httpx.Client]]:
        """A client of ``key`` on each single-worker host and on each worker of the other."""
        clients = [("host 1", self.one.client(key)), ("host 2", self.two.client(key))]
        for n, client in enumerate(self.workers.pinned(key).values(), start=1):
            clients.append((f"host 3 worker {n}", client))
        return clients


def _private_copy(source: Path, directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / source.name
    shutil.copyfile(source, target)
    target.chmod(0o600)


@pytest.fixture(scope="module")
def cluster(
    postgres_available: None,
    certificates: Certificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("scale-out")
    simulator = SalesforceSimulator(org_name="Scale-out (sim)")
    name, url = new_postgres_database()
    prefix = f"crmgate-test-{uuid.uuid4().hex[:12]}"
    hosts: list[Host] = []
    try:
        with RunningSimulator(simulator.app(), certificates) as running:
            sim = SalesforceSim(simulator, running.base_url, str(certificates.ca_file))
            # What every host must share, from the environment: the pepper and vault keys
            shared = {
                "key_pepper": secrets.token_urlsafe(32),
                "vault_keys": "1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            }
            operator = make_settings(root / "operator", url, **shared)
            migrate_database(operator)
            admin = create_account(operator)
            limited = create_account(operator, "Limited", "admin@limited.example")
            env = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
            env |= {
                "CRMGATE_DATABASE_URL": url,
                "CRMGATE_KEY_PEPPER": shared["key_pepper"],
                "CRMGATE_VAULT_KEYS": shared["vault_keys"],
                "CRMGATE_REDIS_URL": REDIS_URL,
                "CRMGATE_RATE_LIMIT_REDIS_PREFIX": prefix,
                "CRMGATE_RATE_LIMIT_USER_KEY": "",
                "CRMGATE_RATE_LIMIT_APPLICATION": "",
                "CRMGATE_RATE_LIMIT_BAD_KEYS": "",  # every test client is 127.0.0.1
                "CRMGATE_RATE_LIMIT_STRATEGY": "moving-window",  # exact counts
                "CRMGATE_RATE_LIMIT_ORGANISATIONS": json.dumps(
                    {limited.organisation_id: {"user_key": f"{LIMIT}/minute"}}
                ),
                "CRMGATE_PLATFORM_OVERRIDES": json.dumps(sim.overrides()),
                "CRMGATE_OUTBOUND_CA_FILE": sim.ca_file,
                "CRMGATE_OUTBOUND_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            }
            audit_keys = root / "operator" / "secrets" / "audit_keys"  # made by the accounts
            tls = [
                "--tls-cert",
                str(certificates.cert_file),
                "--tls-key",
                str(certificates.key_file),
            ]
            verify = ssl.create_default_context(cafile=str(certificates.ca_file))
            layout: list[tuple[int, list[str], ssl.SSLContext | bool]] = [
                (1, [], False),  # host 1 and 2: one process each, plain HTTP
                (1, [], False),
                (2, tls, verify),  # host 3: two workers, HTTPS
            ]
            for n, (workers, extra, check) in enumerate(layout, start=1):
                data_dir = root / f"host{n}"
                _private_copy(audit_keys, data_dir / "secrets")  # one audit chain, one key
                host_env = env | {"CRMGATE_DATA_DIR": str(data_dir)}
                port = free_port()
                command = [CRMGATE, "serve", "--port", str(port), "--workers", str(workers)]
                served = Served(command + extra, host_env)
                hosts.append(Host(served, port, workers, check, host_env))
            for host in hosts:  # started together: a worker's start takes seconds
                _wait_until_serving(host)
            yield Cluster(hosts, admin.key, limited.key, sim, url, prefix)
    finally:
        for host in hosts:
            host.stop()
        drop_postgres_database(name)
        stored = redis.Redis.from_url(REDIS_URL)
        try:
            made = list(stored.scan_iter(f"{prefix}*"))
            if made:
                stored.delete(*made)
        finally:
            stored.close()


# ---- propagation, timed ------------------------------------------------------------------------


def propagation(
    clients: list[tuple[str, httpx.Client]],
    call: Callable[[httpx.Client], httpx.Response],
    changed: Callable[[httpx.Response], bool],
    since: float,
) -> float:
    """Ask every client over and over for POLL_FOR seconds after ``since`` (when the change was
    made); every answer to a request sent WITHIN seconds after ``since`` or later must show the
    change. Returns how long the old answer lasted: the latest send time of an old answer."""
    last_old = 0.0
    late_old: list[str] = []
    while time.monotonic() < since + POLL_FOR:
        for name, client in clients:
            sent = time.monotonic()
            response = call(client)
            if not changed(response):
                last_old = max(last_old, sent - since)
                if sent - since >= WITHIN:
                    late_old.append(f"{name} at {sent - since:.2f} s: {response.status_code}")
        time.sleep(0.02)
    assert late_old == [], late_old[:5]
    return last_old


def close_all(clients: list[tuple[str, httpx.Client]]) -> None:
    for _, client in clients:
        client.close()


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code in (200, 201, 204), response.text
    return response


def _refused_key(response: httpx.Response) -> bool:
    if response.status_code != 401:
        assert response.status_code == 200, response.text  # nothing else, before or after
        return False
    assert response.json()["detail"]["code"] == "SERVICE_UNAUTHORIZED"
    return True


def connect(cluster: Cluster) -> tuple[str, dict[str, str]]:
    """An oAuth-external-refresh application of the main organisation, through host 1."""
    credential = oauth_credential(cluster.sim, refresh=False)
    body = {
        "type": "Salesforce",
        "authorization": "oAuth-external-refresh",
        "credential": credential,
    }
    with cluster.one.client(cluster.admin) as client:
        created = _ok(client.post("/v1/application", json=body))
    return str(created.json()["key"]), credential


# ---- rate limits -------------------------------------------------------------------------------


def test_a_user_keys_limit_counts_across_hosts_and_workers(cluster: Cluster) -> None:
    clients = cluster.everywhere(cluster.limited)
    try:
        order = clients * 3
        answers = [(name, client.get("/v1/user/count")) for name, client in order[: LIMIT + 4]]
        statuses = [response.status_code for _, response in answers]
        assert statuses == [200] * LIMIT + [429] * 4, list(zip(order, statuses, strict=False))
        remaining = [int(r.headers["ratelimit-remaining"]) for _, r in answers[:LIMIT]]
        assert remaining == list(range(LIMIT - 1, -1, -1))  # one count, whoever served
        for name, refused in answers[LIMIT:]:
            assert refused.json()["detail"]["code"] == "RATE_LIMITED", name
            assert 1 <= int(refused.headers["retry-after"]) <= 60, name
        # each worker of host 3 served its share: both counted in the one limit
        served_by = {cluster.workers.worker_of(r) for name, r in answers if "worker" in name}
        assert len(served_by) == 2
    finally:
        close_all(clients)


# ---- revocation and changes, seen everywhere within a second -----------------------------------


def test_a_restricted_key_deleted_through_one_host_is_refused_by_all_within_a_second(
    cluster: Cluster,
) -> None:
    application, _ = connect(cluster)
    with cluster.one.client(cluster.admin) as admin:
        issued = _ok(admin.post("/v1/key", json={"permissions": {"contact": ["read"]}})).json()
    clients = cluster.everywhere(issued["user_key"])
    try:

        def count(client: httpx.Client) -> httpx.Response:
            return client.get("/v1/application/entity/contact/count", headers={APP: application})

        for name, client in clients:  # in use everywhere: whatever is cached is warm
            assert count(client).status_code == 200, name
        with cluster.one.client(cluster.admin) as admin:
            _ok(admin.delete(f"/v1/key/{issued['id']}"))
        lasted = propagation(clients, count, _refused_key, time.monotonic())
        assert lasted < WITHIN
    finally:
        close_all(clients)


def test_a_user_key_rotated_through_one_host_is_refused_by_all_within_a_second(
    cluster: Cluster,
) -> None:
    with cluster.one.client(cluster.admin) as admin:
        created = admin.post("/v1/user", json={"name": "Rota", "email": "rota@acme.example"})
        user = _ok(created).json()
    old = user["user_key"]
    clients = cluster.everywhere(old)
    try:
        for name, client in clients:
            assert client.get("/v1/user/count").status_code == 200, name
        with cluster.two.client(cluster.admin) as admin:  # through another host this time
            new = _ok(admin.post(f"/v1/user/{user['key']}/key")).json()["user_key"]
        lasted = propagation(
            clients, lambda client: client.get("/v1/user/count"), _refused_key, time.monotonic()
        )
        assert lasted < WITHIN
        with cluster.workers.client(new) as fresh:
            assert fresh.get("/v1/user/count").status_code == 200
    finally:
        close_all(clients)


def test_a_key_revoked_with_the_cli_is_refused_by_every_host_within_a_second(
    cluster: Cluster,
) -> None:
    """The operator's incident response: `crmgate key revoke` is one more process."""
    with cluster.one.client(cluster.admin) as admin:
        created = admin.post("/v1/user", json={"name": "Leak", "email": "leak@acme.example"})
        user = _ok(created).json()
    clients = cluster.everywhere(user["user_key"])
    try:
        for name, client in clients:
            assert client.get("/v1/user/count").status_code == 200, name
        revoked = subprocess.run(
            [CRMGATE, "key", "revoke", "--user-id", user["key"]],
            env=cluster.one.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        since = time.monotonic()
        assert revoked.returncode == 0, revoked.stderr
        lasted = propagation(
            clients, lambda client: client.get("/v1/user/count"), _refused_key, since
        )
        assert lasted < WITHIN
    finally:
        close_all(clients)


def test_an_application_deleted_through_one_host_is_404_on_all_within_a_second(
    cluster: Cluster,
) -> None:
    application, _ = connect(cluster)
    clients = cluster.everywhere(cluster.admin)

    def count(client: httpx.Client) -> httpx.Response:
        return client.get("/v1/application/entity/contact/count", headers={APP: application})

    def gone(response: httpx.Response) -> bool:
        if response.status_code != 404:
            assert response.status_code == 200, response.text
            return False
        assert response.json()["detail"]["code"] == "ENTITY_NOT_FOUND"
        return True

    try:
        for name, client in clients:
            assert count(client).status_code == 200, name
        with cluster.one.client(cluster.admin) as admin:
            _ok(admin.delete(f"/v1/application/{application}"))
        lasted = propagation(clients, count, gone, time.monotonic())
        assert lasted < WITHIN
    finally:
        close_all(clients)


def test_new_credentials_put_through_one_host_are_used_by_all_within_a_second(
    cluster: Cluster,
) -> None:
    application, credential = connect(cluster)
    simulator = cluster.sim.simulator
    old = credential["access_token"]
    clients = cluster.everywhere(cluster.admin)

    def count(client: httpx.Client) -> httpx.Response:
        return client.get("/v1/application/entity/contact/count", headers={APP: application})

    try:
        for name, client in clients:
            assert count(client).status_code == 200, name
        # The client's token expired at the CRM; it pushes a fresh one (the contract's way for
        # oAuth-external-refresh). From then on only the new token gets a 200 from the CRM.
        fresh = simulator.issue_session(simulator.sessions[old].subject)
        simulator.sessions[old].expires_at = 0
        with cluster.one.client(cluster.admin) as admin:
            pushed = admin.put(
                f"/v1/application/{application}", json={"credential": {"access_token": fresh}}
            )
            _ok(pushed)
        lasted = propagation(clients, count, lambda r: r.status_code == 200, time.monotonic())
        assert lasted < WITHIN
        with cluster.two.client(cluster.admin) as admin:  # an old answer left no mark behind
            assert admin.get(f"/v1/application/{application}").json()["is_authorized"] is True
    finally:
        close_all(clients)


# ---- what every worker of --workers N does -----------------------------------------------------


def test_every_worker_serves_tls_1_2_or_newer_and_bounds_request_heads(cluster: Cluster) -> None:
    host = cluster.workers
    assert isinstance(host.verify, ssl.SSLContext)
    pinned = host.pinned()
    try:
        assert len(pinned) == 2
        for pid, client in pinned.items():
            oversized = client.get("/health", headers={"X-Padding": "a" * 20_000})
            assert oversized.status_code == 431, (pid, oversized.text)
            assert oversized.json()["detail"]["code"] == "HEADERS_TOO_LARGE"
    finally:
        for client in pinned.values():
            client.close()
    old = ssl.create_default_context(cafile=str(cluster.sim.ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    refused_by: set[int] = set()
    for _ in range(60):  # a TLS 1.1 handshake with each worker, told apart by its connection
        with socket.create_connection(("127.0.0.1", host.port)) as raw:
            pid = owner(host.served.process.pid, host.port, raw.getsockname()[1])
            with pytest.raises(ssl.SSLError):
                old.wrap_socket(raw, server_hostname="127.0.0.1").close()
        refused_by.add(pid)
        if len(refused_by) == 2:
            break
    assert len(refused_by) == 2


def test_workers_log_through_crmgates_handler_and_never_a_key(cluster: Cluster) -> None:
    with cluster.workers.client(cluster.admin) as client:
        assert client.get("/v1/user/count").status_code == 200
    stderr = cluster.workers.served.stderr
    assert "crmgate.access GET /v1/user/count 200" in stderr  # crmgate's own access log
    for host in cluster.hosts:
        everything = host.served.stdout + host.served.stderr
        assert cluster.admin not in everything and cluster.limited not in everything
        assert "without CRMGATE_REDIS_URL" not in everything  # Redis is set: no warning


def test_the_audit_trail_stays_one_chain_when_every_host_writes_it(cluster: Cluster) -> None:
    verified = subprocess.run(
        [CRMGATE, "audit", "verify", "--json"],
        env=cluster.one.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = json.loads(verified.stdout)
    assert result["intact"] is True and result["events"] > 5


# ---- what --workers refuses or warns about -----------------------------------------------------


def test_workers_refuse_sqlite_and_the_demo(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    env["CRMGATE_DATA_DIR"] = str(tmp_path / "var")
    for options, extra_env, says in (
        (["--workers", "2"], {}, "--workers 2 needs PostgreSQL (CRMGATE_DATABASE_URL)"),
        (["--demo"], {"CRMGATE_WORKERS": "2"}, "--demo runs in one process"),  # the setting
    ):
        result = subprocess.run(
            [CRMGATE, "serve", "--port", str(free_port()), *options],
            env=env | extra_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and says in result.stderr, result.stderr
    assert not (tmp_path / "var" / "crmgate.db").exists()  # refused before anything was made
    zero = subprocess.run(
        [CRMGATE, "serve", "--workers", "0"], env=env, capture_output=True, text=True, timeout=120
    )
    assert zero.returncode == 2 and "--workers" in zero.stderr


def test_workers_without_redis_warn_which_limits_each_process_counts_alone(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = {k: v for k, v in cluster.one.env.items() if not k.startswith("CRMGATE_RATE_LIMIT")}
    del env["CRMGATE_REDIS_URL"]
    env["CRMGATE_DATA_DIR"] = str(tmp_path / "var")
    env["CRMGATE_RATE_LIMIT_BAD_KEYS"] = ""  # lifted: not named
    # another host of the cluster: it needs the cluster's audit key file (no start without it)
    own = Path(cluster.one.env["CRMGATE_DATA_DIR"]) / "secrets" / "audit_keys"
    _private_copy(own, tmp_path / "var" / "secrets")
    served = Served([CRMGATE, "serve", "--port", str(free_port()), "--workers", "2"], env)
    try:
        deadline = time.monotonic() + 120
        while "Started parent process" not in served.stderr and time.monotonic() < deadline:
            assert served.process.poll() is None, served.stderr
            time.sleep(0.1)
    finally:
        served.stop()
    warning = next(
        (line for line in served.stderr.splitlines() if "without CRMGATE_REDIS_URL" in line), ""
    )
    assert " WARNING crmgate 2 worker processes without CRMGATE_REDIS_URL" in warning
    assert "up to 2 times" in warning
    assert "CRMGATE_RATE_LIMIT_USER_KEY (20/second;600/minute" in warning
    assert "CRMGATE_RATE_LIMIT_APPLICATION (10/second" in warning
    assert "CRMGATE_RATE_LIMIT_BAD_KEYS" not in warning
