"""One describe parser for every CRM (connectors/describe.py): each descriptor's ``[describe]``
reads its CRM's own answers (shaped as the CRMs document them) into the contract's fields and
objects; a malformed answer is one CRM_UNAVAILABLE error; the test language of flags."""

from __future__ import annotations

from typing import Any

import pytest

from crmgate.connectors.base import Connector
from crmgate.connectors.catalogue import Platform, load_descriptors
from crmgate.connectors.errors import CrmUnavailable
from crmgate.connectors.jsonpath import holds, select
from crmgate.outbound import Outbound


def platform(name: str) -> Platform:
    return next(p for p in load_descriptors() if p.type == name)


def records(name: str) -> Any:
    return Connector(platform(name), Outbound()).records


def test_a_salesforce_describe_reads_kinds_flags_picklists_and_references() -> None:
    answer = {
        "name": "Contact",
        "fields": [
            {"name": "LastName", "label": "Last Name", "type": "string", "createable": True,
             "updateable": True, "nillable": False, "defaultedOnCreate": False},
            {"name": "Birthdate", "label": "Birthdate", "type": "date", "createable": True,
             "updateable": True, "nillable": True, "filterable": False},
            {"name": "LeadSource", "type": "picklist", "createable": True, "picklistValues": [
                {"value": "Web", "active": True}, {"value": "Old", "active": False}]},
            {"name": "AccountId", "type": "reference", "referenceTo": ["Account"]},
            {"name": "DoNotCall", "type": "boolean", "createable": True, "nillable": False},
        ],
    }  # fmt: skip
    fields = {f.name: f for f in records("Salesforce").read_fields(answer)}
    assert fields["LastName"].required and fields["LastName"].kind == "string"
    assert fields["Birthdate"].kind == "date" and not fields["Birthdate"].filterable
    assert fields["LeadSource"].enum == ("Web",)  # an inactive value is not offered
    assert fields["LeadSource"].label == "LeadSource"  # no label: the name
    assert fields["AccountId"].reference_to == ("Account",)
    assert not fields["AccountId"].createable  # not said createable
    assert not fields["DoNotCall"].required  # a checkbox always has a value


def test_an_object_list_keeps_what_the_descriptor_keeps() -> None:
    answer = {
        "modules": [
            {"api_name": "Leads", "singular_label": "Lead", "plural_label": "Leads",
             "creatable": True, "editable": True, "deletable": True},
            {"api_name": "Hidden", "api_supported": False},
            {"api_name": "Custom_1", "generated_type": "custom", "viewable": False},
        ]
    }  # fmt: skip
    found = {o.name: o for o in records("ZohoCRM").read_objects(answer, "id")}
    assert set(found) == {"Leads", "Custom_1"}
    assert found["Leads"].label == "Lead" and found["Leads"].createable
    assert found["Custom_1"].custom and not found["Custom_1"].queryable
    assert found["Custom_1"].plural_label == "Custom_1"  # no plural said: the name


def test_a_hubspot_property_marked_read_only_is_not_written() -> None:
    answer = {
        "results": [
            {"name": "hs_object_id", "type": "number", "hubspotDefined": True,
             "modificationMetadata": {"readOnlyValue": True}},
            {"name": "tier", "label": "Tier", "type": "enumeration", "hubspotDefined": False,
             "options": [{"value": "gold"}, {"value": "silver"}]},
        ]
    }  # fmt: skip
    fields = {f.name: f for f in records("HubSpot").read_fields(answer)}
    assert fields["hs_object_id"].kind == "number" and not fields["hs_object_id"].updateable
    assert fields["tier"].custom and fields["tier"].enum == ("gold", "silver")


@pytest.mark.parametrize(
    "answer",
    [
        {"fields": "not a list"},
        {"fields": [1, 2]},
        {"fields": [{"api_name": "X", "lookup": {"module": "Accounts"}}]},  # module: an object
        {"fields": [{"api_name": "X", "pick_list_values": 3}]},
        {},
    ],
)
def test_an_answer_of_another_shape_is_one_clear_error(answer: Any) -> None:
    with pytest.raises(CrmUnavailable, match="Zoho CRM answered fields of an unexpected shape"):
        records("ZohoCRM").read_fields(answer)


def test_objects_the_crm_does_not_describe_are_described_by_the_descriptor() -> None:
    owners = platform("HubSpot").objects["owners"].info("owners", "hs_object_id")
    assert owners.id_field == "id" and not owners.createable
    assert {f.name: f.kind for f in owners.fields}["userId"] == "integer"
    assert all(not f.createable and not f.updateable for f in owners.fields)
    users = platform("ZohoCRM").objects["users"].info("users", "id")
    assert users.field("status") is not None
    assert users.field("status").enum == ("active", "disabled", "deleted", "not_confirmed")  # type: ignore[union-attr]


def test_the_test_language_reads_truth_equality_and_absence() -> None:
    entry = {"a": {"b": True}, "n": None, "t": "custom", "f": False}
    assert holds(entry, "a.b") and not holds(entry, "!a.b")
    assert holds(entry, "!missing") and holds(entry, "missing!=false")
    assert holds(entry, "f=false") and holds(entry, "n=null") and holds(entry, "missing=null")
    assert holds(entry, "t=custom") and not holds(entry, "t!=custom")
    with pytest.raises(ValueError):
        holds({"a": "text"}, "a.b")  # a name of something that is no object


def test_a_selector_can_keep_the_elements_whose_key_is_not_a_value() -> None:
    values = {"v": [{"type": "used", "x": 1}, {"type": "unused", "x": 2}, {"x": 3}]}
    assert select(values, "v[type!=unused].x") == [1, 3]
    assert select(values, "v[type=used].x") == [1]
