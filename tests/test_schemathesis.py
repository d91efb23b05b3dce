"""schemathesis against crmgate's own OpenAPI document, with its default checks: no 500, answers
that match the document (status codes, headers, schemas), schema-violating requests refused,
methods the document does not list refused with a correct Allow.

Scope and cost: every gateway operation, the generic entity routes and one unified entity
(contact) through a Salesforce application on the simulator. The 27 unified entities share one
handler per operation kind, generated from the contract, so one stands for all; the full run
over all 341 operations takes about five minutes on the test machine (`st run` by hand).

One setting differs from schemathesis's defaults: `positive_data_acceptance` also accepts 400
and 422. The document describes `filter`, `sort` and `fields` as strings, but crmgate's query
language (docs/querying.md) and its other semantic checks (a platform that exists, an end date
after a start date) refuse most random strings, as they must.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import (
    RunningGateway,
    SalesforceSim,
    create_account,
    make_settings,
    migrate_database,
)
from crmgate.api.app import create_app

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "3XX", "400", "401", "403", "404", "409", "422", "429"]
"""
# every entity route but contact's and the generic ones
OTHER_ENTITIES = r"^/v1/application/entity/(?!contact(/|$)|\{entity_id\})"


def test_the_api_keeps_its_own_document(tmp_path: Path, salesforce: SalesforceSim) -> None:
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
                "--exclude-path-regex",
                OTHER_ENTITIES,
                "--max-examples",
                "5",
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
            timeout=600,
            cwd=tmp_path,
        )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested:" in run.stdout
