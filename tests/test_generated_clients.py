"""Clients generated from the reference document make everyday calls to the demo gateway and
parse every answer against the reference's response schemas: in Python (openapi-python-client)
and in TypeScript (@hey-api/openapi-ts with zod, in tests/clients/typescript/)."""

from __future__ import annotations

import copy
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from conftest import IN_CI, Demo, make_settings, with_services

# the copy shipped with crmgate (CI has it too), not /work/shared's
REFERENCE = resources.files("crmgate.contract") / "data2crm-api-v1.openapi.json"
TYPESCRIPT = Path(__file__).parent / "clients" / "typescript"
PACKAGE = "reference_client"  # the generated Python package

# The everyday calls run on these demo applications: per entity, what each CRM needs to create
# a record, and a change it accepts.
RECORDS: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    "Salesforce": {
        "contact": ({"first_name": "Grace", "last_name": "Hopper"}, {"position": "Admiral"}),
        "account": ({"name": "Generated Client Ltd"}, {"description": "Key account"}),
        "opportunity": (
            {
                "name": "Generated client deal",
                "pipeline_with_stage": "Prospecting",
                "expected_end_at": "2027-03-31T00:00:00+00:00",
            },
            {"amount": 100.0},
        ),
    },
    "Pipedrive": {
        "contact": ({"first_name": "Grace", "last_name": "Hopper"}, {"position": "Admiral"}),
        "account": ({"name": "Generated Client Ltd"}, {"name": "Renamed Client Ltd"}),
        "opportunity": (
            {
                "name": "Generated client deal",
                "amount": 2500.5,
                "expected_end_at": "2027-03-31T00:00:00+00:00",
            },
            {"amount": 100.0},
        ),
    },
}
CREATED_WITH = "Pipedrive"  # the application the tests create: an API token, no OAuth dance


def patched_reference(drop: tuple[str, ...]) -> dict[str, Any]:
    """The reference with the keywords ``drop`` taken out of header parameters' schemas, and
    nothing else: what an answer must conform to (response schemas) is never patched."""
    document: dict[str, Any] = json.loads(REFERENCE.read_text())
    patched = copy.deepcopy(document)
    for operations in patched["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "header":
                    for keyword in drop:
                        parameter["schema"].pop(keyword, None)
    assert patched["components"] == document["components"]
    return patched


def demo_credential(demo: Demo, platform: str) -> dict[str, str]:
    """The credential the demo connected ``platform`` with, read from the running demo's data
    directory as its operator could (demo.json lists no secrets): a real one to create an
    application with."""

    async def read(services: Any) -> dict[str, str]:
        principal = await services.accounts.authenticate(demo.user_key)
        key = demo.applications[platform]
        _, credentials = await services.applications.store.credentials(
            principal.organisation_id, key
        )
        return dict(credentials.fields)

    result: dict[str, str] = with_services(make_settings(demo.data_dir), read)
    return result


# ---- Python: openapi-python-client ---------------------------------------------------------


@pytest.fixture(scope="module")
def python_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client generated at test time, imported as ``reference_client``."""
    directory = tmp_path_factory.mktemp("python-client")
    reference = directory / "reference.json"
    # openapi-python-client refuses a header of `format: date-time` ("datetime.datetime | Unset
    # is not allowed in header") and drops the 140 operations that have one
    reference.write_text(json.dumps(patched_reference(drop=("format",))))
    config = directory / "config.yaml"
    config.write_text("post_hooks: []\n")  # no ruff over a million characters of code
    generator = Path(sys.executable).parent / "openapi-python-client"
    command = [str(generator), "generate", "--path", str(reference), "--meta", "none"]
    command += ["--output-path", str(directory / PACKAGE), "--config", str(config)]
    generated = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    # every operation generated: a warning here means one is missing
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(directory))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@dataclass
class Calls:
    """Generated operations called as a user of the generated client would; an answer the
    client cannot parse is written down (with its body) and the calls go on, so that one run
    lists every one."""

    client: Any
    user_key: str
    last: list[httpx.Response]
    failures: list[str] = field(default_factory=list)

    def ok(self, operation: str, status: int, *args: Any, **kwargs: Any) -> Any:
        """The parsed answer of ``operation`` ("contact.get_contact_entity"): a model of the
        reference (a list of them), or None when there is none."""
        module = importlib.import_module(f"{PACKAGE}.api.{operation}")
        try:
            response = module.sync_detailed(
                *args, client=self.client, x_api2crm_user_key=self.user_key, **kwargs
            )
        except Exception as error:  # the generated parser's: a KeyError, TypeError, ValueError
            answer = self.last[-1]
            self.failures.append(
                f"{operation}: {answer.status_code} unparsable, {type(error).__name__}: "
                f"{error} in {answer.text[:400]}"
            )
            return None
        if response.status_code != status:
            self.failures.append(
                f"{operation}: {response.status_code}, not {status}: {response.content[:400]!r}"
            )
            return None
        if status == 204:
            return None
        items = response.parsed if isinstance(response.parsed, list) else [response.parsed]
        if response.parsed is None or not all(_is_model(item) for item in items):
            self.failures.append(f"{operation}: parsed as {response.parsed!r}, not a model")
            return None
        return response.parsed

    def raw(self) -> Any:
        """The last answer's JSON, for an id when the client could not parse it."""
        return self.last[-1].json()


def _is_model(value: Any) -> bool:
    return type(value).__module__.startswith(f"{PACKAGE}.models.")


@pytest.fixture
def calls(demo: Demo, python_client: ModuleType) -> Iterator[Calls]:
    last: list[httpx.Response] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        last[:] = [response]

    client = python_client.Client(
        base_url=f"{demo.base_url}/v1",
        timeout=httpx.Timeout(30),
        httpx_args={"event_hooks": {"response": [keep]}, "trust_env": False},
    )
    with client:
        yield Calls(client, demo.user_key, last)


def test_python_client_parses_platform_application_and_user_answers(
    demo: Demo, calls: Calls, python_client: ModuleType
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    platforms = calls.ok("platform.get_platform_collection", 200)
    assert platforms is None or {p.type_ for p in platforms} >= set(RECORDS)

    credential = demo_credential(demo, CREATED_WITH)
    write = models.ApplicationEntityWrite(
        type_=models.ApplicationEntityWriteType(CREATED_WITH),
        authorization="key",
        credential=models.Credential.from_dict(credential),
        description="Made by a generated Python client",
    )
    created = calls.ok("application.create_application_entity", 201, body=write)
    key = created.key if created is not None else calls.raw()["key"]
    try:
        listed = calls.ok("application.get_application_collection", 200, page_size=100)
        assert listed is None or key in {a.key for a in listed}
        got = calls.ok("application.get_application_entity", 200, key)
        assert got is None or got.key == key

        write.description = "Renamed by a generated Python client"
        calls.ok("application.update_application_entity", 200, key, body=write)
        got = calls.ok("application.get_application_entity", 200, key)
        assert got is None or got.description == write.description

        users = calls.ok("internal_user.get_internal_user_collection", 200)
        assert users is None or users
    finally:
        calls.ok("application.delete_application_entity", 204, key)
    assert not calls.failures, "\n".join(calls.failures)


@pytest.mark.parametrize("platform", sorted(RECORDS))
def test_python_client_parses_entity_answers(demo: Demo, calls: Calls, platform: str) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    app = {"x_api2crm_application_key": demo.applications[platform]}
    crm_users = calls.ok("user.get_user_collection", 200, page_size=2, **app)
    assert crm_users is None or crm_users

    for entity, (record, change) in RECORDS[platform].items():
        model = getattr(models, f"{entity.capitalize()}Entity")
        api = f"{entity}.{{}}_{entity}_{{}}"
        made = calls.ok(api.format("create", "entity"), 201, body=model.from_dict(record), **app)
        record_id = made.id if made is not None else calls.raw()["id"]
        got = calls.ok(api.format("get", "entity"), 200, record_id, **app)
        assert got is None or got.id == record_id

        pages = [
            calls.ok(api.format("get", "collection"), 200, page_size=2, page=page, **app)
            for page in (1, 2)
        ]
        if None not in pages:
            assert len(pages[0]) == 2 and pages[1], f"{entity}: two pages of two"
            assert not {r.id for r in pages[0]} & {r.id for r in pages[1]}, entity
        count = calls.ok(api.format("get", "count_collection"), 200, **app)
        assert count is None or count.total >= 3
        described = calls.ok(api.format("get", "describe"), 200, **app)
        assert described is None or described.entity == entity

        changed = model.from_dict(change)
        calls.ok(api.format("update", "entity"), 200, record_id, body=changed, **app)
        calls.ok(api.format("delete", "entity"), 204, record_id, **app)
    assert not calls.failures, f"{platform}:\n" + "\n".join(calls.failures)


# ---- TypeScript: @hey-api/openapi-ts with zod (tests/clients/typescript) -------------------


def _node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    message = (
        "Node.js (node and npm) is not installed: the TypeScript client generated from the "
        "reference did NOT run. Install Node.js >= 20.19 to run it."
    )
    if IN_CI:
        pytest.fail(message + " CI must never skip it.")
    pytest.skip(message)


def _npm_ci(npm: str) -> None:
    """tests/clients/typescript/node_modules exactly as package-lock.json pins it; kept between
    runs (gitignored) and reinstalled only when the lock changes. One installer at a time: two
    test sessions may share the tree."""
    lock = TYPESCRIPT / "package-lock.json"
    stamp = TYPESCRIPT / "node_modules" / ".crmgate-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    with lock.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == digest:
            return
        command = [npm, "ci", "--no-audit", "--no-fund", "--no-update-notifier"]
        done = subprocess.run(
            command, cwd=TYPESCRIPT, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
        stamp.write_text(digest)


def _run(step: str, command: list[str], cwd: Path, **environment: str) -> str:
    env = {**os.environ, **environment}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{step} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(900)  # a first npm ci on a slow network
def test_typescript_client_parses_every_answer(demo: Demo, tmp_path: Path) -> None:
    node, npm = _node_tools()
    started = time.monotonic()
    _npm_ci(npm)
    installed = time.monotonic()
    # a work directory per run: the program, the client generated into it, the shared modules
    work = tmp_path / "typescript"
    work.mkdir()
    for name in ("calls.ts", "tsconfig.json", "package.json"):
        shutil.copy(TYPESCRIPT / name, work / name)
    (work / "node_modules").symlink_to(TYPESCRIPT / "node_modules")
    bin_ = TYPESCRIPT / "node_modules" / ".bin"
    # the reference as it is: @hey-api/openapi-ts takes the header patterns and date-time
    # formats (validating requests is off: answers are the subject)
    _run(
        "openapi-ts",
        [node, str(bin_ / "openapi-ts"), "-f", str(TYPESCRIPT / "openapi-ts.config.ts")],
        TYPESCRIPT,
        CRMGATE_REFERENCE=str(REFERENCE),
        CRMGATE_CLIENT_DIR=str(work / "generated"),
    )
    _run("tsc (the program against the generated types)", [node, str(bin_ / "tsc")], work)
    generated = time.monotonic()
    setup = {
        "base_url": demo.base_url,
        "user_key": demo.user_key,
        "applications": demo.applications,
        "records": RECORDS,
        "create": {
            "type": CREATED_WITH,
            "authorization": "key",
            "credential": demo_credential(demo, CREATED_WITH),
        },
    }
    _run("the calls", [node, str(bin_ / "tsx"), "calls.ts"], work, CRMGATE_CALLS=json.dumps(setup))
    print(
        f"npm ci {installed - started:.1f}s, generate + tsc {generated - installed:.1f}s, "
        f"calls {time.monotonic() - generated:.1f}s"
    )
