"""Answers in the reference's shape (contract/shape.py, docs/errors.md "Absent values"): no null
anywhere, each value in the reference's type, crmgate's additions kept; crmgate's own document
saying so (no null in the answers' schemas, readOnly marks); and `crmgate contract-coverage`
reporting how each answer's schema compares with the reference's."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from conftest import Demo, make_settings
from crmgate.api.app import create_fastapi
from crmgate.connectors.catalogue import load_descriptors
from crmgate.contract.coverage import load_reference
from crmgate.contract.shape import answer_schema, conform, conformer, text

ROOT = Path(__file__).resolve().parents[1]


def nulls(value: Any, where: str = "") -> list[str]:
    if value is None:
        return [where or "(answer)"]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for v in value for n in nulls(v, f"{where}[]")]
    return []


# ---- the rules, on the reference's own schemas ---------------------------------------------------


def test_a_number_where_the_reference_has_a_string_is_sent_as_text() -> None:
    account = conformer("AccountEntity")({"employees": 230, "annual_revenue": 2500000.0})
    assert account == {"employees": "230", "annual_revenue": "2500000"}
    assert conformer("AccountEntity")({"annual_revenue": 23244.43552}) == {
        "annual_revenue": "23244.43552"
    }


def test_a_boolean_where_the_reference_has_a_string_is_true_or_false() -> None:
    assert text(True) == "true"
    assert text(False) == "false"
    assert conformer("ContactEntity")({"description": True}) == {"description": "true"}


def test_nulls_are_left_out_at_every_depth() -> None:
    shaped = conformer("AccountEntity")(
        {
            "id": "1",
            "description": None,
            "address": [{"type": "billing", "street": None, "city": "Seattle", "zip": None}, None],
            "relation": {"contact": [{"type": "contact", "entity": {"id": "9", "x": None}}]},
        }
    )
    assert shaped == {
        "id": "1",
        "address": [{"type": "billing", "city": "Seattle"}],
        "relation": {"contact": [{"type": "contact", "entity": {"id": "9"}}]},
    }


def test_properties_the_reference_does_not_name_are_kept_without_their_nulls() -> None:
    custom = {"Loyalty_Tier__c": "Gold", "Score__c": 7, "Empty__c": None, "Tags__c": [1, None]}
    shaped = conformer("ContactEntity")({"id": "1", **custom})
    assert shaped == {"id": "1", "Loyalty_Tier__c": "Gold", "Score__c": 7, "Tags__c": [1]}


def test_the_native_record_is_sent_as_the_crm_gave_it() -> None:
    native = {"Id": "1", "Fax": None, "NumberOfEmployees": 230}
    shaped = conformer("AccountEntity")({"id": "1", "employees": 230, "native": native})
    assert shaped == {"id": "1", "employees": "230", "native": native}


def test_arrays_of_reference_objects_are_shaped_item_by_item() -> None:
    user = conformer("UserEntity")(
        {
            "phone": [{"type": "work", "number": 2065550100}, {"type": None, "number": None}],
            "address": None,
            "messenger": [],
        }
    )
    assert user == {"phone": [{"type": "work", "number": "2065550100"}, {}], "messenger": []}


def test_a_single_value_where_the_reference_has_an_array_is_an_array_of_one() -> None:
    assert conformer("AccountEntity")({"industry": "Retail"}) == {"industry": ["Retail"]}


def test_a_value_with_no_form_in_the_reference_type_is_left_out() -> None:
    application = conformer("ApplicationEntityList")(
        {"key": "k", "user_id": "usr_abc", "user_key": "usr_abc", "url": {"not": "text"}}
    )
    assert application == {"key": "k", "user_key": "usr_abc"}
    assert conformer("ApplicationEntityList")({"user_id": "42"}) == {"user_id": 42}
    assert conformer("Count")({"total": True}) == {}


def test_number_and_boolean_take_their_text() -> None:
    campaign = conformer("CampaignEntity")({"budgeted_cost": "12.50", "actual_cost": "n/a"})
    assert campaign == {"budgeted_cost": 12.5}
    assert conformer("ContactEntity")({"do_not_call": "TRUE"}) == {"do_not_call": True}


def test_an_operation_answer_is_shaped_by_its_success_schema() -> None:
    assert answer_schema("getAccountCollection") == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/AccountEntity"},
    }
    listed = conform("getAccountCollection", [{"id": "1", "employees": 5, "type": None}])
    assert listed == [{"id": "1", "employees": "5"}]
    assert answer_schema("deleteAccountEntity") is None


# ---- through the HTTP API, on the demo's five simulated CRMs ------------------------------------


@cache
def _validator(operation_id: str) -> Any:
    answer = answer_schema(operation_id)
    assert answer is not None
    return jsonschema_rs.Draft4Validator({**answer, "components": load_reference()["components"]})


def _read(demo: Demo, operation_id: str, path: str, application: str | None = None) -> Any:
    headers = {"X-API2CRM-USER-KEY": demo.user_key}
    if application is not None:
        headers["X-API2CRM-APPLICATION-KEY"] = application
    answer = httpx.get(f"{demo.base_url}/v1{path}", headers=headers, timeout=30, trust_env=False)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert nulls(body) == [], f"{path}: {nulls(body)}"
    errors = [f"{e.instance_path}: {e.message}" for e in _validator(operation_id).iter_errors(body)]
    assert errors == [], f"{path}: {errors}"
    return body


def test_gateway_answers_hold_no_null_and_follow_the_reference(demo: Demo) -> None:
    applications = _read(demo, "getApplicationCollection", "/application/list")
    assert {a["type"] for a in applications} == set(demo.applications)
    assert all("user_id" not in a for a in applications)  # crmgate's user ids are not integers
    for key in demo.applications.values():
        one = _read(demo, "getApplicationEntity", f"/application/{key}")
        assert "plan" not in one
    platforms = _read(demo, "getPlatformCollection", "/platform/list")
    _read(demo, "getPlatformEntity", f"/platform/{platforms[0]['type']}")
    users = _read(demo, "getInternalUserCollection", "/user/list")
    _read(demo, "getInternalUserEntity", f"/user/{users[0]['key']}")


@pytest.mark.parametrize("entity", ["contact", "account"])
def test_record_answers_hold_no_null_and_follow_the_reference(demo: Demo, entity: str) -> None:
    name = entity.capitalize()
    mapped = {d.type for d in load_descriptors() if entity in d.entities}  # Google: no accounts
    for platform, key in demo.applications.items():
        if platform not in mapped:
            continue
        records = _read(demo, f"get{name}Collection", f"/application/entity/{entity}/list", key)
        assert records, platform
        for record in records[:3]:
            _read(demo, f"get{name}Entity", f"/application/entity/{entity}/{record['id']}", key)


def test_catalogue_and_fields_answers_hold_no_null(demo: Demo) -> None:
    key = demo.applications["Salesforce"]
    fields = _read(demo, "getFieldCollection", "/application/field/list?page_size=100", key)
    assert fields
    _read(demo, "getEntityCollection", "/application/entity/list", key)


# ---- crmgate's own document ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    document: dict[str, Any] = create_fastapi(
        make_settings(tmp_path_factory.mktemp("doc"))
    ).openapi()
    return document


def _has_null(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "null" or node.get("default", 0) is None:
            return True
        return any(_has_null(value) for value in node.values())
    if isinstance(node, list):
        return any(_has_null(value) for value in node)
    return False


def test_the_contract_answer_schemas_allow_no_null(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("AccountEntity", "Address", "UserEntity", "ApplicationEntityList"):
        assert not _has_null(schemas[name]), name
    assert schemas["AccountEntity"]["properties"]["employees"]["type"] == "string"


def test_request_bodies_keep_null_to_clear_a_field(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/application/entity/account"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AccountEntityWrite"
    }
    write = document["components"]["schemas"]["AccountEntityWrite"]["properties"]
    assert {"type": "null"} in write["description"]["anyOf"]


def test_ids_and_timestamps_are_read_only(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("ContactEntity", "ContactEntityWrite", "AccountEntity", "EntityItemEntity"):
        for prop in ("id", "created_at", "updated_at"):
            assert schemas[name]["properties"][prop].get("readOnly") is True, (name, prop)
    # the {id} a client sends to link records is not read-only
    assert "readOnly" not in schemas["AccountEntityRelation"]["properties"]["id"]
    assert schemas["ApplicationEntity"]["properties"]["created_at"]["readOnly"] is True


# ---- contract-coverage ---------------------------------------------------------------------------


def test_contract_coverage_reports_each_answers_conformance(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "crmgate.cli", "contract-coverage", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"CRMGATE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    answers = json.loads(run.stdout)["answers"]
    assert answers["differ_without_reason"] == 0
    assert answers["equal"] + answers["differ_on_purpose"] == answers["total"] > 300
    by_id = {op["operation_id"]: op for op in answers["operations"]}
    assert by_id["getContactCountCollection"]["equal"] is False  # total: always sent
    listed = {d["field"]: d for d in by_id["getApplicationCollection"]["differences"]}
    assert listed["[].user_id"]["kind"] == "declared"
    assert "strings" in listed["[].user_id"]["reason"]
    assert listed["[].requests_limit"]["kind"] == "added"
    account = {d["field"]: d for d in by_id["getAccountEntity"]["differences"]}
    assert account["id"]["kind"] == "readOnly"
    assert all(d["reason"] for d in account.values())
    assert by_id["createAccountEntity"]["equal"] is True
