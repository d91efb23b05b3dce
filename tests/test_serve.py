"""`make serve` as a newcomer runs it: first start prints a key and a curl that works."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from crmsim.tls import Certificates

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """A gateway started the way a newcomer starts it, its output read as it comes."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream: IO[str], sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.stdout)
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"no {pattern!r} in output:\n{self.stdout}\n{self.stderr}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)


def curl_ok(command: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            [*shlex.split(command), "-w", "\n%{http_code}"], capture_output=True, text=True
        )
        body, _, status = result.stdout.rpartition("\n")
        if status == "200" or time.monotonic() > deadline:
            assert status == "200", result
            return body
        time.sleep(0.2)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    environment["CRMGATE_DATA_DIR"] = str(tmp_path / "var")
    yield environment


def test_make_serve_prints_a_curl_that_lists_demo_contacts(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    served = Served(["make", "--no-print-directory", "serve", f"PORT={port}"], env)
    try:
        curl = served.wait_for(r"(curl -s -H .*/v1/application/entity/contact/list\S*)\n")[1]
        key = served.wait_for(r"user key:\s+(cgu_\w+)")[1]
        application = served.wait_for(r"application key:\s+([0-9a-f]{40}) \(Salesforce\)")[1]
        assert key in curl and application in curl and f"127.0.0.1:{port}" in curl
        contacts = json.loads(curl_ok(curl))
        # an OAuth callback's code and state are never logged, not even by the server's own log
        canary = "canary" + os.urandom(8).hex()
        subprocess.run(
            [
                "curl",
                "-s",
                f"http://127.0.0.1:{port}/authorization/oauth/Salesforce/callback"
                f"?code={canary}&state={canary}",
            ],
            capture_output=True,
            check=False,
        )
        assert len(contacts) == 5 and {"Davolio", "Fuller"} <= {c["last_name"] for c in contacts}
        assert contacts[0]["email"][0]["address"].endswith("@example.com")
        # demo.json: everything a script needs, readable by its owner only
        demo_file = tmp_path / "var" / "demo.json"
        demo = json.loads(demo_file.read_text())
        assert stat.S_IMODE(demo_file.stat().st_mode) == 0o600
        assert demo["base_url"] == f"http://127.0.0.1:{port}" and demo["user_key"] == key
        assert demo["applications"]["Salesforce"] == application
        platforms = {"Salesforce", "HubSpot", "Pipedrive", "CloseIO", "ZohoCRM", "Bitrix24"}
        platforms |= {"MicrosoftDynamics", "AmoCRM", "Infusionsoft", "GSuite"}
        assert set(demo["applications"]) == set(demo["simulators"]) == platforms
        assert all(url.startswith("https://127.0.0.1:") for url in demo["simulators"].values())
        for platform, app_key in demo["applications"].items():  # each one answers, seeded
            people = json.loads(
                curl_ok(curl.replace(application, app_key))
            )  # (Google: no accounts)
            assert len(people) >= 2 and all(c.get("last_name") for c in people), platform
        hubspot = curl.replace(application, demo["applications"]["HubSpot"])
        companies = json.loads(curl_ok(hubspot.replace("/contact/", "/account/")))
        assert "Northwind Traders" in {c["name"] for c in companies}
    finally:
        served.stop()
    assert key not in served.stderr, "the user key reached the log"
    assert "/authorization/oauth/{platform}/callback 400" in served.stderr
    assert canary not in served.stderr + served.stdout
    assert served.stdout.count(key) == 2  # the banner's key line and its curl: nothing else
    secrets_dir = tmp_path / "var" / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((secrets_dir / "key_pepper").stat().st_mode) == 0o600
    pepper = (secrets_dir / "key_pepper").read_text().strip()
    assert pepper not in served.stdout + served.stderr
    assert "GET /v1/application/entity/contact/list 200" in served.stderr  # the access log

    # Second start: a fresh simulated org, the same user key, a new demo application.
    port = free_port()
    again = Served(["make", "--no-print-directory", "serve", f"PORT={port}"], env)
    try:
        curl_again = again.wait_for(r"(curl -s -H .*/v1/application/entity/contact/list\S*)\n")[1]
        assert key in curl_again and application not in curl_again
        assert len(json.loads(curl_ok(curl_again))) == 5
    finally:
        again.stop()


def test_serve_without_demo_creates_an_admin_on_first_start(env: dict[str, str]) -> None:
    crmgate = str(ROOT / ".venv" / "bin" / "crmgate")
    subprocess.run([crmgate, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    port = free_port()
    served = Served([crmgate, "serve", "--port", str(port)], env)
    try:
        curl = served.wait_for(r"(curl -s -H .*/v1/user/list)\n")[1]
        key = served.wait_for(r"user key:\s+(cgu_\w+)")[1]
        assert key in curl and '"roles":["admin"]' in curl_ok(curl)
    finally:
        served.stop()
    assert served.stdout.count(key) == 2 and key not in served.stderr
    again = Served([crmgate, "serve", "--port", str(free_port())], env)
    try:
        again.wait_for(r"serving http://127\.0\.0\.1:\d+/v1")
        assert "cgu_" not in again.stdout.replace(key[:10], "")
        assert "crmgate key rotate --user-id usr_" in again.stdout
    finally:
        again.stop()
    # the demo would send this organisation's applications to its simulator: it refuses
    demo = subprocess.run(
        [crmgate, "serve", "--demo", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 1
    assert "the demo runs on a database of its own" in demo.stderr


def test_serve_refuses_an_unmigrated_database(env: dict[str, str]) -> None:
    crmgate = str(ROOT / ".venv" / "bin" / "crmgate")
    result = subprocess.run(
        [crmgate, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "run `crmgate migrate`" in result.stderr


def answer(client: httpx.Client, url: str, timeout: float = 20) -> httpx.Response:
    """The server's answer, once it listens (it says it serves a moment before it does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.get(url)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_serve_over_tls_speaks_tls_1_2_or_newer_with_hsts(
    env: dict[str, str], certificates: Certificates
) -> None:
    crmgate = str(ROOT / ".venv" / "bin" / "crmgate")
    subprocess.run([crmgate, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    lonely = subprocess.run(
        [crmgate, "serve", "--tls-cert", str(certificates.cert_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lonely.returncode == 2 and "go together" in lonely.stderr
    port = free_port()
    served = Served(
        [
            crmgate,
            "serve",
            "--port",
            str(port),
            "--tls-cert",
            str(certificates.cert_file),
            "--tls-key",
            str(certificates.key_file),
        ],
        env,
    )
    try:
        served.wait_for(rf"serving https://127\.0\.0\.1:{port}/v1")
        context = ssl.create_default_context(cafile=str(certificates.ca_file))
        with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
            health = answer(client, f"https://127.0.0.1:{port}/health")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        assert "server" not in health.headers  # no version banner
        # a client that offers TLS 1.0 and 1.1 only is refused (crmgate sets the minimum; the
        # system's OpenSSL policy may refuse them too)
        old = ssl.create_default_context(cafile=str(certificates.ca_file))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", port)) as raw:
            with old.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        # over TLS 1.2, a client offering only CBC suites (no forward-secret AEAD) is refused
        cbc = ssl.create_default_context(cafile=str(certificates.ca_file))
        cbc.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA")
        with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", port)) as raw:
            with cbc.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
    finally:
        served.stop()
    with httpx.Client(trust_env=False, timeout=10) as client:  # and no HSTS over plain http
        plain = Served([crmgate, "serve", "--port", str(port2 := free_port())], env)
        try:
            plain.wait_for(r"serving http://")
            health = answer(client, f"http://127.0.0.1:{port2}/health")
            assert "strict-transport-security" not in health.headers
        finally:
            plain.stop()
