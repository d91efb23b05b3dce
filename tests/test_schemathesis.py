"""schemathesis against crmgate's own OpenAPI document, with its default checks: no 500, answers
that match the document (status codes, headers, schemas), schema-violating requests refused,
methods the document does not list refused with a correct Allow, and each operation replayed
without and with wrong credentials.

Scope: every operation of the document (347), in a few groups, each a test case of its own with
its own simulator, database and gateway, so that pytest-xdist runs them side by side. Every
group runs every phase (examples, coverage, fuzzing, stateful), except the 26 unified entities
other than contact, which skip the coverage phase and get two fuzzing examples per operation:

- The coverage phase is deterministic and exhaustive: for each property of a request body it
  sends the boundary and wrong values, about 2,700 requests per entity (80% of them on create
  and update, nearly all answered 422). The 27 unified entities share one handler per
  operation kind, generated from the contract, with the same query parameters, so contact's
  coverage stands for the handler; the others' is 26 times that cost (about 70,000 requests,
  8 minutes of CPU) for the same code. A full run of every phase over every operation
  (`st run` by hand, 73,380 test cases) found no failure.
- Fuzzing (positive and negative) still reaches every entity's own request and answer schemas
  and its mapping to the CRM, and the stateful phase follows the document's links.

Cost, measured on the test machine (CPU of pytest, the gateways and schemathesis together):
about 90 seconds for the whole module, 2.5 minutes of wall time on two xdist workers; the
gateway's own operations take ~8 s, the 26 other entities ~18 s, contact and the generic routes
the rest. Most of it is the gateway's per-request cost (3 to 5 ms of CPU for a 422: two store
lookups for the keys, then routing among 347 routes) and hypothesis's data generation (~3 ms a
test case).

One setting differs from schemathesis's defaults: `positive_data_acceptance` also accepts 400
and 422. The document describes `filter`, `sort` and `fields` as strings, but crmgate's query
language (docs/querying.md) and its other semantic checks (a platform that exists, an end date
after a start date) refuse most random strings, as they must; and the contract's request bodies
list the read-only `id`, `created_at` and `updated_at`, which crmgate refuses with 422.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    RunningGateway,
    SalesforceSim,
    create_account,
    make_settings,
    migrate_database,
)
from crmgate.api.app import create_app, create_fastapi

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "3XX", "400", "401", "403", "404", "409", "422", "429"]
"""
ENTITY = "^/v1/application/entity/"
# the entity routes that contact's handlers stand for: the 26 other unified entities
OTHER_ENTITIES = ENTITY + r"(?!contact(/|$)|list$|count$|\{entity_id\})"


@dataclass(frozen=True)
class Group:
    """Some operations of the document (by path) and how thoroughly schemathesis tests them."""

    include: str | None  # a path regex, as st's --include-path-regex reads it (re.search)
    exclude: str | None = None
    every_phase: bool = True  # else no coverage phase and two examples per operation

    def selects(self, path: str) -> bool:
        return (self.include is None or re.search(self.include, path) is not None) and (
            self.exclude is None or re.search(self.exclude, path) is None
        )

    def options(self) -> list[str]:
        chosen = ["--include-path-regex", self.include] if self.include else []
        chosen += ["--exclude-path-regex", self.exclude] if self.exclude else []
        if self.every_phase:
            return [*chosen, "--max-examples", "5"]
        return [*chosen, "--phases", "examples,fuzzing,stateful", "--max-examples", "2"]


GROUPS = {
    "gateway": Group(include=None, exclude="^/v1/application/(entity|field)(/|$)"),
    # contact, and the catalogue of the CRM's objects
    "contact": Group(include=ENTITY + "(contact(/|$)|list$|count$)"),
    # the CRM's own objects and their fields
    "generic": Group(include=r"^/v1/application/(entity/\{entity_id\}|field)(/|$)"),
    "entities a-n": Group(include=OTHER_ENTITIES + "[a-n]", every_phase=False),
    "entities o-z": Group(include=OTHER_ENTITIES + "[o-z]", every_phase=False),
}


def test_the_groups_cover_every_operation_once(tmp_path: Path) -> None:
    document = create_fastapi(make_settings(tmp_path)).openapi()
    paths = list(document["paths"])
    assert len(paths) > 200
    for path in paths:
        assert [name for name, group in GROUPS.items() if group.selects(path)] in (
            [[name] for name in GROUPS]
        ), path


@pytest.mark.timeout(600)
@pytest.mark.parametrize("group", GROUPS)
def test_the_api_keeps_its_own_document(
    group: str, tmp_path: Path, salesforce: SalesforceSim
) -> None:
    # one database is enough: the document and the handlers are the same on both
    crm_settings = make_settings(
        tmp_path / "data",
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
    )
    migrate_database(crm_settings)
    admin = create_account(crm_settings)
    user = salesforce.simulator.add_user("st@acme.example", "pw", name="Schema Thesis")
    credential = {
        "instance_url": salesforce.base_url,
        "access_token": salesforce.simulator.issue_session(user),
    }
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    with RunningGateway(create_app(crm_settings)) as gateway, gateway.client(admin.key) as client:
        created = client.post(
            "/v1/application",
            json={
                "type": "Salesforce",
                "authorization": "oAuth-external-refresh",
                "credential": credential,
            },
        )
        assert created.status_code == 201, created.text
        run = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "st"),
                "--config-file",
                str(config),
                "run",
                f"{gateway.base_url}/v1/openapi.json",
                "-H",
                f"X-API2CRM-USER-KEY: {admin.key}",
                "-H",
                f"X-API2CRM-APPLICATION-KEY: {created.json()['key']}",
                *GROUPS[group].options(),
                "--seed",
                "20261129",
                # one worker: hypothesis parses lambdas' source with ast in each worker thread,
                # which CPython 3.11 can break on ("AST constructor recursion depth mismatch")
                "--workers",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=570,
            cwd=tmp_path,
        )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested:" in run.stdout
