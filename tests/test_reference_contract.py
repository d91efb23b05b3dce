"""The Data2CRM.API v1 reference document as the oracle: schemathesis generates requests from the
reference itself and checks crmgate's answers against the reference's schemas, on each platform
``crmgate serve --demo`` serves (five simulated CRMs, each connected as an application).

Three tests per platform, so that a failure names its platform:

- every GET operation of the reference (158): first one plain request (the required headers and,
  where the path names a record, a real id looked up beforehand: a GET on a random id is a 404,
  which the reference gives no schema to check), then a few generated ones with the same ids;
- create, update and delete of contact, lead, account, opportunity, task and note (single and
  bulk): generated bodies, valid and invalid for the reference (crmgate refuses most with 422:
  the reference's bodies list the read-only id, created_at and updated_at), on records made for
  the run, which it deletes again with whatever the generated requests created;
- one realistic round per entity (create, get, update, get, delete, get), each answer checked
  against the reference.

Checks: schemathesis's not_a_server_error, response_schema_conformance (formats too) and
content_type_conformance, all against the reference; and every answer with a body is JSON.
Not status_code_conformance: the reference lists only 2xx/400/404/422, and crmgate's 401, 403
(NOT_SUPPORTED on a platform that lacks the object), 406, 415 and 429 are its own contract, tested
elsewhere. Rate limits: the demo fixture lifts them (tests/test_limits.py tests them).

Cost: a few examples per operation, no shrinking (a violation is recorded, never raised into
hypothesis), hypothesis seeded per operation and platform so that a run repeats exactly.
"""

from __future__ import annotations

import copy
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

import crmgate.contract
from conftest import Demo

REFERENCE = Path(crmgate.contract.__file__).with_name("data2crm-api-v1.openapi.json")
PLATFORMS = (
    "Salesforce",
    "HubSpot",
    "Pipedrive",
    "ZohoCRM",
    "MicrosoftDynamics",
    "CloseIO",
    "Infusionsoft",
    "AmoCRM",
    "Bitrix24",
    "GSuite",
)
WRITTEN = ("contact", "lead", "account", "opportunity", "task", "note")


def written(platform: str) -> list[str]:
    """The entities of WRITTEN that ``platform`` maps with create, update and delete (Close
    has no lead: its leads are companies, the account)."""
    from crmgate.connectors.catalogue import load_descriptors

    (descriptor,) = [p for p in load_descriptors() if p.type == platform]
    return [
        entity
        for entity in WRITTEN
        if entity in descriptor.entities
        and {"create", "update", "delete"} <= set(descriptor.entities[entity].methods)
    ]


USER_KEY = "X-API2CRM-USER-KEY"
APPLICATION_KEY = "X-API2CRM-APPLICATION-KEY"
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
SEED = 20261207
GET_EXAMPLES = 3
WRITE_EXAMPLES = {GenerationMode.POSITIVE: 3, GenerationMode.NEGATIVE: 2}

# Realistic records in the reference's shape, and a change to each; a platform gets the fields
# its describe says it can create, a stage and links copied from one of its own records.
RECORDS: dict[str, dict[str, Any]] = {
    "contact": {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "position": "Analyst",
        "description": "Met at the engine exhibition",
        "email": [{"type": "work", "address": "ada@engines.example"}],
        "phone": [{"type": "work", "number": "+44 20 7946 0000"}],
    },
    "lead": {
        "first_name": "Charles",
        "last_name": "Babbage",
        "company": "Difference Engines",
        "description": "Asked for a demonstration",
        "email": [{"type": "work", "address": "charles@engines.example"}],
    },
    "account": {
        "name": "Analytical Engines Ltd",
        "description": "Engine makers",
        "website": [{"type": "work", "address": "https://engines.example"}],
    },
    "opportunity": {
        "name": "Ten engines",
        "amount": 1200.5,
        "description": "Ten engines by the summer",
        "expected_end_at": "2027-06-30T00:00:00+00:00",
    },
    "task": {
        "subject": "Call Ada",
        "description": "About the engines",
        "due_at": "2027-01-15T09:00:00+00:00",
    },
    "note": {"subject": "Engines", "body": "Ada wants ten engines."},
}
CHANGES: dict[str, dict[str, Any]] = {
    "contact": {"position": "Chief analyst"},
    "lead": {"description": "Wants a quote"},
    "account": {"description": "Engine makers since 1834"},
    "opportunity": {"description": "Twelve engines"},
    "task": {"description": "About twelve engines"},
    "note": {"body": "Ada wants twelve engines."},
}
# values only the CRM knows (its own pipeline stages), taken from one of its records
FROM_THE_CRM = {"opportunity": ("pipeline_with_stage",)}


# ---- the reference, and the copy the generators read ------------------------------------------


def generator_copy(reference: dict[str, Any]) -> dict[str, Any]:
    """The reference with its request parameters made generable; answers' schemas untouched."""
    patched = copy.deepcopy(reference)
    for item in patched["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                pattern = schema.get("pattern", "")
                if pattern.startswith("/") and pattern.endswith("/"):
                    # PHP's preg delimiters (/^...$/): as an ECMA regex nothing matches them
                    schema["pattern"] = pattern[1:-1]
                if parameter["in"] == "header" and schema.get("format") == "date-time":
                    # its pattern asks for a -0700 offset, which RFC 3339's date-time refuses
                    del schema["format"]
    return patched


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(REFERENCE.read_text())
    return document


@pytest.fixture(scope="module")
def schema(reference: dict[str, Any]) -> BaseSchema:
    return schemathesis.openapi.from_dict(generator_copy(reference))


def test_the_generators_copy_keeps_every_answer_schema(reference: dict[str, Any]) -> None:
    patched = generator_copy(reference)
    assert patched["components"] == reference["components"]
    for path, item in reference["paths"].items():
        for method, operation in item.items():
            assert patched["paths"][path][method]["responses"] == operation["responses"]
            assert patched["paths"][path][method].get("requestBody") == operation.get("requestBody")


# ---- what is checked, and how a violation is told ---------------------------------------------


@dataclass
class Violation:
    operation: str
    what: str  # the check's title and its message's first line
    where: str  # the reference's schema the answer broke, and the place in the answer
    status: int
    sent: str  # the request, as curl
    count: int = 1


@dataclass
class Findings:
    """Every violation of one test, grouped by operation and kind, for one report."""

    platform: str
    found: dict[tuple[str, str, str], Violation] = field(default_factory=dict)

    def add(self, operation: str, what: str, where: str, status: int, sent: str) -> None:
        key = (operation, what, where.split(" at answer")[0])
        if key in self.found:
            self.found[key].count += 1
        else:
            self.found[key] = Violation(operation, what, where, status, sent)

    def assert_none(self) -> None:
        if self.found:
            pytest.fail(self.report(), pytrace=False)

    def report(self) -> str:
        lines = [f"{self.platform}: {len(self.found)} kinds of violation of the reference"]
        for violation in sorted(self.found.values(), key=lambda v: (v.operation, v.where)):
            lines.append(
                f"- {violation.operation} [{violation.status}] {violation.what}"
                f"{' — ' + violation.where if violation.where else ''} ({violation.count}x)"
            )
            lines.append(f"    sent: {violation.sent[:400]}")
        return "\n".join(lines)


def not_json(response: Response) -> str | None:
    """Why an answer with a body is not JSON, whatever its status (the reference documents
    bodies for 2xx only; a 400/403/404/422 of crmgate's must still be JSON)."""
    if not response.content:
        return None
    media_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    if media_type != "application/json":
        return f"answer with a body is {media_type or 'untyped'}, not application/json"
    try:
        response.json()
    except ValueError as error:
        return f"answer is not JSON: {error}"
    return None


def check(case: Case, response: Response, findings: Findings, base_url: str) -> None:
    """Run the checks on one answer; record what fails, never raise (no shrinking)."""
    try:
        case.validate_response(response, checks=CHECKS)
    except (FailureGroup, Failure) as error:
        failures = error.exceptions if isinstance(error, FailureGroup) else (error,)
        for failure in failures:
            message = failure.message
            schema_at = re.search(r"Schema at (\S+):", message)
            where = schema_at.group(1) if schema_at else ""
            instance_path = getattr(failure, "instance_path", None)
            if instance_path is not None:
                where += f" at answer{''.join(f'[{part!r}]' for part in instance_path)}"
            first_line = message.strip().splitlines()[0] if message.strip() else ""
            findings.add(
                case.operation.label,
                f"{failure.title}: {first_line}",
                where,
                response.status_code,
                case.as_curl_command(base_url=base_url),
            )
    reason = not_json(response)
    if reason:
        sent = case.as_curl_command(base_url=base_url)
        findings.add(case.operation.label, reason, "", response.status_code, sent)


# ---- running operations -----------------------------------------------------------------------


@dataclass
class Gateway:
    """The demo gateway as one platform's client sees it."""

    demo: Demo
    platform: str
    session: requests.Session

    @property
    def base_url(self) -> str:
        return self.demo.base_url + "/v1"  # the reference's paths are relative to /v1

    def headers_for(self, operation: APIOperation) -> dict[str, str]:
        """The keys, fixed (never generated), for the operations that declare them."""
        keys = {
            USER_KEY: self.demo.user_key,
            APPLICATION_KEY: self.demo.applications[self.platform],
        }
        declared = {parameter.name for parameter in operation.headers}
        return {name: value for name, value in keys.items() if name in declared}

    def send(self, case: Case, findings: Findings) -> Response:
        response = case.call(base_url=self.base_url, session=self.session)
        check(case, response, findings, self.base_url)
        return response

    def client(self) -> httpx.Client:
        headers = {
            USER_KEY: self.demo.user_key,
            APPLICATION_KEY: self.demo.applications[self.platform],
        }
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, trust_env=False)


@pytest.fixture
def gateway(demo: Demo, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    with requests.Session() as session:
        session.trust_env = False
        yield Gateway(demo, request.param, session)


def fuzz(
    gateway: Gateway,
    operation: APIOperation,
    findings: Findings,
    ids: dict[str, str],
    mode: GenerationMode,
    examples: int,
    answered: Callable[[Case, Response], None] | None = None,
) -> None:
    """``examples`` generated requests for ``operation``, with the keys and the path's ids fixed
    (and a bulk body's too: a generated "1" is a seeded record of some CRMs)."""
    strategy = operation.as_strategy(
        mode,
        headers=gateway.headers_for(operation),
        path_parameters={p.name: ids[p.name] for p in operation.path_parameters if p.name in ids},
    )
    if operation.path.endswith("/bulk") and ids:
        strategy = strategy.map(lambda case: own_ids(case, next(iter(ids.values()))))

    # seeded by operation and platform: reproducible, yet not the same draws everywhere
    @seed(SEED ^ zlib.crc32(f"{gateway.platform} {operation.label} {mode.value}".encode()))
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case: Case) -> None:
        response = gateway.send(case, findings)
        if answered is not None:
            answered(case, response)

    try:
        run()
    except Unsatisfiable:
        # with the keys and ids fixed, some operations have nothing left to make invalid
        assert mode is GenerationMode.NEGATIVE, operation.label


def own_ids(case: Case, record: str) -> Case:
    """The case with every bulk item's id (a string or a number crmgate might read as one)
    made ``record``, a record of the run's own."""
    items = case.body.get("item") if isinstance(case.body, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and type(item.get("id")) in (str, int, float):
            item["id"] = record
    return case


def operations(schema: BaseSchema, wanted: Callable[[APIOperation], bool]) -> list[APIOperation]:
    found = [result.ok() for result in schema.get_all_operations()]
    return [operation for operation in found if wanted(operation)]


# ---- real ids -------------------------------------------------------------------------------


def first_id(client: httpx.Client, path: str, key: str = "id", **params: Any) -> str | None:
    answer = client.get(path, params={"page_size": 1, **params})
    records = answer.json() if answer.status_code == 200 else []
    return str(records[0][key]) if isinstance(records, list) and records else None


def real_ids(gateway: Gateway, reference: dict[str, Any]) -> dict[str, str]:
    """A record for each path parameter the platform has one for, by the parameter's name."""
    ids = {"key": gateway.demo.applications[gateway.platform], "type": gateway.platform}
    unified = sorted(
        {
            match.group(1)
            for path in reference["paths"]
            if (match := re.fullmatch(r"/application/entity/(\w+)/\{\1_id\}", path))
        }
    )
    with gateway.client() as client:
        found = {
            f"{entity}_id": first_id(client, f"/application/entity/{entity}/list")
            for entity in unified
        }
        found["internal_user_id"] = first_id(client, "/user/list", key="key")
        catalogue = client.get("/application/entity/list").json()
        listed = [e["id"] for e in catalogue if e.get("methods", {}).get("list")]
        for entity_id in listed:
            item = first_id(client, f"/application/entity/{entity_id}/list")
            if item is not None:
                found |= {"entity_id": entity_id, "entity_item_id": item}
                break
        fields = client.get("/application/field/list", params={"page_size": 100}).json()
        for enum in (f["id"] for f in fields if f.get("isEnum")):
            item = first_id(client, f"/application/field/{enum}/list")
            if item is not None:
                found |= {"field_id": enum, "field_item_id": item}
                break
    return ids | {name: value for name, value in found.items() if value is not None}


# ---- the tests ------------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("gateway", PLATFORMS, indirect=True)
def test_every_get_answers_as_the_reference_says(
    gateway: Gateway, schema: BaseSchema, reference: dict[str, Any]
) -> None:
    ids = real_ids(gateway, reference)
    findings = Findings(gateway.platform)
    gets = operations(schema, lambda operation: operation.method == "get")
    assert len(gets) == 158
    for operation in gets:
        plain = operation.Case(
            headers=gateway.headers_for(operation),
            # an id the platform lacks (an object it does not support): any id, a 400/403/404
            path_parameters={p.name: ids.get(p.name, "1") for p in operation.path_parameters},
        )
        gateway.send(plain, findings)
        fuzz(gateway, operation, findings, ids, GenerationMode.POSITIVE, GET_EXAMPLES)
    findings.assert_none()


def realistic(client: httpx.Client, entity: str) -> dict[str, Any]:
    """RECORDS[entity] as the platform can create it: the fields its describe names, a stage
    of its own, and the links one of its records has (or, with none, a link the describe
    offers: a HubSpot lead needs its contact)."""
    described = client.get(f"/application/entity/{entity}/describe")
    assert described.status_code == 200, described.text
    creatable: dict[str, Any] = described.json()["schema"]["create"]["fields"]
    top = {name.split(".")[0] for name in creatable}
    body = {name: value for name, value in RECORDS[entity].items() if name in top}
    answer = client.get(f"/application/entity/{entity}/list", params={"page_size": 1})
    listed = answer.json() if answer.status_code == 200 else []  # 403: listed per parent only
    sample: dict[str, Any] = listed[0] if listed else {}
    for name in FROM_THE_CRM.get(entity, ()):
        if sample.get(name) is not None:
            body[name] = sample[name]
    links = {
        kind: link
        for kind, link in (sample.get("relation") or {}).items()
        if f"relation.{kind}" in creatable
    }
    if not links:
        for kind in (name.removeprefix("relation.") for name in creatable):
            if kind in WRITTEN and kind != entity and (target := first_id_of(client, kind)):
                links = {kind: [{"type": kind, "entity": {"id": target}}]}
                break
    if links:
        body["relation"] = links
    return body


def change_of(entity: str, body: dict[str, Any]) -> dict[str, Any]:
    """CHANGES[entity] where the platform has those fields, else a new name."""
    change = {name: value for name, value in CHANGES[entity].items() if name in body}
    if change:
        return change
    name = next(name for name, value in body.items() if isinstance(value, str))
    return {name: f"{body[name]} (changed)"}


def first_id_of(client: httpx.Client, entity: str) -> str | None:
    return first_id(client, f"/application/entity/{entity}/list")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("gateway", PLATFORMS, indirect=True)
def test_generated_writes_answer_as_the_reference_says(
    gateway: Gateway, schema: BaseSchema
) -> None:
    findings = Findings(gateway.platform)
    made: dict[str, list[str]] = {entity: [] for entity in written(gateway.platform)}

    def keep_what_was_made(case: Case, response: Response) -> None:
        entity = case.operation.path.split("/")[3]
        if response.status_code != 201:
            return
        answer = response.json()
        if case.operation.path.endswith("/bulk"):
            made[entity] += [i["id"] for i in answer.get("item", []) if i.get("status") == 201]
        elif isinstance(answer, dict) and "id" in answer:
            made[entity].append(str(answer["id"]))

    with gateway.client() as client:
        try:
            for entity in written(gateway.platform):
                body = realistic(client, entity)
                # two records of the run's own: one to update, one to delete
                targets = []
                for _ in range(2):
                    created = client.post(f"/application/entity/{entity}", json=body)
                    assert created.status_code == 201, (entity, body, created.text)
                    targets.append(created.json()["id"])
                made[entity] += targets
                writes = operations(
                    schema,
                    lambda operation, entity=entity: (
                        operation.method != "get"
                        and re.fullmatch(
                            rf"/application/entity/{entity}(/bulk|/\{{{entity}_id\}})?",
                            operation.path,
                        )
                        is not None
                    ),
                )
                assert len(writes) == 6, [w.label for w in writes]
                for operation in writes:
                    record = targets[1] if operation.method == "delete" else targets[0]
                    for mode, examples in WRITE_EXAMPLES.items():
                        fuzz(
                            gateway,
                            operation,
                            findings,
                            {f"{entity}_id": record},
                            mode,
                            examples,
                            keep_what_was_made,
                        )
        finally:
            for entity, ids in made.items():
                for record in ids:
                    client.delete(f"/application/entity/{entity}/{record}")
    findings.assert_none()


def step(
    gateway: Gateway,
    findings: Findings,
    operation: APIOperation,
    expected: int,
    record: str | None = None,
    body: Any = None,
) -> Any:
    """One request of a round, checked; an unexpected status is a finding too. The answer's
    JSON when it is the expected 201."""
    named = {p.name: record for p in operation.path_parameters} if record else None
    extra = {"body": body} if body is not None else {}
    case = operation.Case(headers=gateway.headers_for(operation), path_parameters=named, **extra)
    response = gateway.send(case, findings)
    if response.status_code != expected:
        findings.add(
            operation.label,
            f"the round expected {expected}: {response.text[:300]}",
            "",
            response.status_code,
            case.as_curl_command(base_url=gateway.base_url),
        )
    return response.json() if response.status_code == expected == 201 else None


@pytest.mark.timeout(300)
@pytest.mark.parametrize("gateway", PLATFORMS, indirect=True)
def test_a_realistic_round_answers_as_the_reference_says(
    gateway: Gateway, schema: BaseSchema
) -> None:
    """Per entity: create, get, update, get, delete, get, each answer checked as schemathesis
    checks a generated one, and each status the one the round expects."""
    findings = Findings(gateway.platform)
    with gateway.client() as client:
        for entity in written(gateway.platform):
            collection = schema[f"/application/entity/{entity}"]
            one = schema[f"/application/entity/{entity}/{{{entity}_id}}"]
            body = realistic(client, entity)
            created = step(gateway, findings, collection["POST"], 201, body=body)
            if not created or "id" not in created:
                continue
            record = str(created["id"])
            step(gateway, findings, one["GET"], 200, record)
            step(gateway, findings, one["PUT"], 200, record, change_of(entity, body))
            step(gateway, findings, one["GET"], 200, record)
            step(gateway, findings, one["DELETE"], 204, record)
            step(gateway, findings, one["GET"], 404, record)
    findings.assert_none()
