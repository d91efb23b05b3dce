"""The one error ladder (connectors/errors.py), read with each platform's [errors] descriptor."""

from __future__ import annotations

import time

import pytest

from crmgate.connectors.catalogue import ErrorFormat, load_descriptors
from crmgate.connectors.errors import (
    EntityNotFound,
    NotAllowed,
    NotValid,
    RateLimited,
    contract_error,
    read,
)
from crmgate.connectors.jsonpath import select


def _format(platform_type: str) -> ErrorFormat:
    return next(p for p in load_descriptors() if p.type == platform_type).errors


def test_json_paths_select_indexes_each_and_matching_elements() -> None:
    answer = {"data": [{"status": "success"}, {"status": "error", "code": "X"}]}
    assert select(answer, "data[status=error].code") == ["X"]
    assert select([{"a": 1}], "$[0].a") == [1]
    assert select({"e": [{"p": ["a", "b"]}, {"p": ["c"]}]}, "e[*].p[*]") == ["a", "b", "c"]
    assert select({"a": 1}, "b.c[0]") == []


def test_a_descriptor_with_a_broken_path_or_pattern_is_refused() -> None:
    with pytest.raises(ValueError):
        ErrorFormat(message=("a[0",))
    with pytest.raises(ValueError):
        ErrorFormat(fields_in_message=("no group",))
    with pytest.raises(ValueError):
        ErrorFormat(message_within=("no group",))
    with pytest.raises(ValueError):
        ErrorFormat.model_validate({"codes": {"X": "NOT_A_CONTRACT_CODE"}})


def test_the_reason_within_a_message_is_what_is_shown() -> None:
    errors = _format("MicrosoftDynamics")
    text = "Error in Payload ---->  InnerException : Microsoft.OData.ODataException: Bad value."
    answer = {"error": {"code": "0x80048d19", "message": text}}
    assert read(errors, 400, answer).message == "Microsoft.OData.ODataException: Bad value."
    plain = {"error": {"code": "0x80040217", "message": "contact Does Not Exist"}}
    assert read(errors, 404, plain).message == "contact Does Not Exist"


def test_the_crms_code_decides_before_the_status() -> None:
    errors = _format("Salesforce")
    answer = [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    limited = contract_error("Salesforce", errors, read(errors, 403, answer))
    assert isinstance(limited, RateLimited) and limited.retry_after == 60
    refused = contract_error("Salesforce", errors, read(errors, 403, [{"errorCode": "OTHER"}]))
    assert isinstance(refused, NotAllowed) and "(OTHER)" in refused.message


def test_fields_come_from_paths_and_from_the_message() -> None:
    hubspot = _format("HubSpot")
    answer = {"message": "bad", "errors": [{"context": {"propertyName": ["dealstage"]}}]}
    invalid = contract_error("HubSpot", hubspot, read(hubspot, 400, answer))
    assert isinstance(invalid, NotValid) and invalid.fields == ("dealstage",)
    assert invalid.message.endswith(", field dealstage")  # the CRM's words did not name it
    pipedrive = _format("Pipedrive")
    said = {"error": "Validation failed: title: required; value: not a number"}
    named = contract_error("Pipedrive", pipedrive, read(pipedrive, 400, said))
    assert isinstance(named, NotValid) and named.fields == ("title", "value")


def test_retry_after_is_read_as_seconds_or_as_a_moment() -> None:
    zoho = _format("ZohoCRM")
    reset = str((int(time.time()) + 120) * 1000)
    answer = {"code": "TOO_MANY_REQUESTS", "message": "too many"}
    moment = read(zoho, 429, answer, {"x-ratelimit-reset": reset})
    assert moment.retry_after is not None and 110 <= moment.retry_after <= 121
    assert read(zoho, 429, answer, {"Retry-After": "7"}).retry_after == 7
    plain = contract_error("Zoho CRM", zoho, read(zoho, 429, answer))
    assert isinstance(plain, RateLimited) and plain.retry_after == zoho.retry_after_default


def test_an_unknown_status_without_a_code_is_the_crm_unavailable() -> None:
    errors = _format("MicrosoftDynamics")
    failed = contract_error("Dynamics", errors, read(errors, 503, None))
    assert failed.code == "CRM_UNAVAILABLE" and "HTTP 503" in failed.message
    missing = contract_error("Dynamics", errors, read(errors, 404, {"error": {"code": "0x1"}}))
    assert isinstance(missing, EntityNotFound)


def test_fields_and_reasons_from_an_object_of_field_errors() -> None:
    errors = ErrorFormat(field_reasons=("field-errors",))
    answer = {"errors": [], "field-errors": {"name": "required", "value": "not a number"}}
    invalid = contract_error("Close", errors, read(errors, 400, answer))
    assert isinstance(invalid, NotValid) and invalid.fields == ("name", "value")
    assert "name: required; value: not a number" in invalid.message
    said = read(errors, 400, {"message": "Bad", "field-errors": {"name": "required"}})
    assert said.message == "Bad" and said.fields == ("name",)  # the CRM's own words first


def test_the_wait_said_in_the_body_when_no_header_says() -> None:
    errors = ErrorFormat(entry=("error",), retry_after_in=("rate_reset",))
    body = {"error": {"message": "slow down", "rate_reset": 7.2}}
    limited = contract_error("Close", errors, read(errors, 429, body))
    assert isinstance(limited, RateLimited) and limited.retry_after == 8
    assert read(errors, 429, body, {"Retry-After": "3"}).retry_after == 3  # a header wins
    assert read(errors, 429, {"error": {"rate_reset": "soon"}}).retry_after is None


def test_a_moment_said_in_the_body_is_the_wait_until_then() -> None:
    """Bitrix24's time.operating_reset_at: epoch seconds (or milliseconds), as a header's."""
    errors = ErrorFormat(retry_after_in=("time.operating_reset_at",))
    at = int(time.time()) + 120
    for moment in (at, at * 1000):
        said = read(errors, 429, {"error": "X", "time": {"operating_reset_at": moment}})
        assert said.retry_after is not None and 118 <= said.retry_after <= 120
    past = read(errors, 429, {"time": {"operating_reset_at": int(time.time()) - 5}})
    assert past.retry_after == 1
