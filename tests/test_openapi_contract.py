"""crmgate's OpenAPI document, the browsable docs, and the mechanical check against the contract."""

from __future__ import annotations

import copy
import json
import re

import pytest
from typer.testing import CliRunner

from conftest import RunningGateway
from crmgate.api.app import create_fastapi
from crmgate.cli import app as cli
from crmgate.contract import coverage
from crmgate.settings import Settings


@pytest.fixture(scope="module")
def document() -> dict:  # type: ignore[type-arg]
    return create_fastapi(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]


def test_openapi_document_and_docs_are_served(sqlite_gateway: RunningGateway) -> None:
    with sqlite_gateway.client() as client:
        served = client.get("/v1/openapi.json")
        docs = client.get("/docs")
        assets = [
            client.get(src)
            for src in re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text)
            if src.startswith("/")
        ]
    assert served.status_code == 200
    assert "/v1/user/list" in served.json()["paths"]
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    # Everything the docs page loads comes from the gateway itself: no CDN, works offline.
    assert not re.search(r"""(?:src|href)=["']https?://""", docs.text)
    assert len(assets) >= 2 and all(asset.status_code == 200 for asset in assets)


def test_every_routed_contract_operation_matches_the_reference(document: dict) -> None:  # type: ignore[type-arg]
    result = coverage.compare(document)
    assert result.mismatched == [], coverage.render(result)
    served = {(op.method.upper(), op.path) for op in result.matching}
    assert {
        ("GET", "/user/list"),
        ("GET", "/user/count"),
        ("POST", "/user"),
        ("GET", "/user/{internal_user_id}"),
        ("PUT", "/user/{internal_user_id}"),
        ("DELETE", "/user/{internal_user_id}"),
    } <= served
    assert result.total == sum(
        1
        for operations in coverage.load_reference()["paths"].values()
        for method in operations
        if method in coverage.METHODS
    )
    # every operation of the contract is routed and matches, the 297 entity routes included
    assert len(result.matching) == result.total == 336


def test_entity_routes_declare_the_application_key_and_keep_the_contracts_names(
    document: dict,  # type: ignore[type-arg]
) -> None:
    contact = document["paths"]["/v1/application/entity/contact/{contact_id}"]["get"]
    names = {(p["in"], p["name"]): p for p in contact["parameters"]}
    assert names[("header", "X-API2CRM-APPLICATION-KEY")]["required"] is True
    assert ("path", "contact_id") in names and ("header", "X-API2CRM-NATIVE-ENABLE") in names
    assert contact["operationId"] == "getContactEntity"
    case = document["paths"]["/v1/application/entity/case/list"]["get"]
    schema = case["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["items"]["$ref"].endswith("/CasesEntity")


def test_user_key_header_is_declared_required_on_every_operation(document: dict) -> None:  # type: ignore[type-arg]
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/user"):
            continue
        for method, operation in operations.items():
            headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
            assert headers["X-API2CRM-USER-KEY"]["required"] is True, (method, path)


def test_the_comparison_catches_what_breaks_the_contract(document: dict) -> None:  # type: ignore[type-arg]
    broken = copy.deepcopy(document)
    listing = broken["paths"]["/v1/user/list"]["get"]
    listing["parameters"] = [p for p in listing["parameters"] if p["name"] != "page_size"]
    for parameter in listing["parameters"]:
        if parameter["name"] == "X-API2CRM-USER-KEY":
            parameter["required"] = False
    listing["parameters"].append(
        {"name": "tenant", "in": "query", "required": True, "schema": {"type": "string"}}
    )
    broken["components"]["schemas"]["InternalUserEntity"]["properties"].pop("email")
    broken["components"]["schemas"]["Count"]["properties"]["total"] = {"type": "string"}
    del broken["paths"]["/v1/user/{internal_user_id}"]["delete"]["responses"]["204"]
    create_body = broken["components"]["schemas"]["InternalUserCreate"]
    assert create_body["additionalProperties"] is False
    create_body["properties"].pop("phone")
    result = coverage.compare(broken)
    problems = {f"{op.method} {op.path}": op.problems for op in result.mismatched}
    listed = "\n".join(problems["get /user/list"])
    assert "query parameter page_size: missing" in listed
    assert "header parameter X-API2CRM-USER-KEY: required=False" in listed
    assert "query parameter tenant: required, not in reference" in listed
    assert "response 200[].email: missing" in listed
    assert problems["get /user/count"] == [
        "response 200.total: type string where the reference has integer"
    ]
    assert "success status" in problems["delete /user/{internal_user_id}"][0]
    assert problems["post /user"] == ["request body.phone: refused, the reference accepts it"]
    counts = {name for name in problems if name.endswith("/count")}  # Count is shared
    assert all(problems[name] == problems["get /user/count"] for name in counts)
    assert set(problems) - counts == {
        "get /user/list",
        "get /user/{internal_user_id}",
        "delete /user/{internal_user_id}",
        "post /user",
    }
    assert "get /application/entity/contact/count" in counts
    assert len(result.matching) == len(coverage.compare(document).matching) - len(problems)


def test_contract_coverage_command_prints_the_number() -> None:
    result = CliRunner().invoke(cli, ["contract-coverage"])
    assert result.exit_code == 0, result.output
    match = re.search(r"serves (\d+) of the (\d+) operations", result.output)
    assert match and int(match[1]) >= 6 and int(match[2]) == 336
    as_json = json.loads(CliRunner().invoke(cli, ["contract-coverage", "--json"]).output)
    assert as_json["served"] == int(match[1]) and as_json["total"] == 336
    assert as_json["mismatched"] == []
