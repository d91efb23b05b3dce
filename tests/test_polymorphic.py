"""Polymorphic lookups as the descriptor's [polymorphic] table says them
(connectors/polymorphic.py): one column per object when read, the CRM's shape when written."""

from __future__ import annotations

import pytest

from crmgate.connectors import polymorphic
from crmgate.connectors.catalogue import Polymorphic
from crmgate.connectors.errors import NotValid
from crmgate.model.objects import FieldInfo

TABLE = {
    "What_Id": Polymorphic(object_field="$se_module", targets=("Accounts", "Deals")),
    "Parent_Id": Polymorphic(
        object_in="module.api_name", targets=("Accounts",), targets_in="modules[*].api_name"
    ),
}


def test_a_lookup_reads_as_one_column_per_object() -> None:
    record = {"What_Id": {"id": 7}, "$se_module": "Deals", "Parent_Id": None}
    assert polymorphic.read(TABLE, record) == {
        "What_Id.Accounts": None,
        "What_Id.Deals": "7",
        "Parent_Id.Accounts": None,
    }
    inside = {"Parent_Id": {"id": "9", "module": {"api_name": "Accounts"}}}
    assert polymorphic.read(TABLE, inside) == {"Parent_Id.Accounts": "9"}
    with pytest.raises(ValueError):
        polymorphic.read(TABLE, {"Parent_Id": {"id": "9", "module": "Accounts"}})


def test_a_write_puts_the_object_beside_or_inside_the_lookup() -> None:
    beside = polymorphic.write(TABLE, {"What_Id.Accounts": None, "What_Id.Deals": "7", "x": 1})
    assert beside == {"x": 1, "What_Id": {"id": "7"}, "$se_module": "Deals"}
    inside = polymorphic.write(TABLE, {"Parent_Id.Accounts": "9"})
    assert inside == {"Parent_Id": {"module": {"api_name": "Accounts"}, "id": "9"}}
    assert polymorphic.write(TABLE, {"Parent_Id.Accounts": ""}) == {"Parent_Id": None}
    with pytest.raises(NotValid):
        polymorphic.write(TABLE, {"What_Id.Accounts": "1", "What_Id.Deals": "2"})


def test_a_described_lookup_gains_a_column_per_object_it_names() -> None:
    info = FieldInfo("Parent_Id", "Parent", "string", "lookup")
    spec = {"modules": [{"api_name": "Leads"}, {"api_name": "Accounts"}]}
    names = [f.name for f in polymorphic.fields(TABLE, spec, info)]
    assert names == ["Parent_Id", "Parent_Id.Leads", "Parent_Id.Accounts"]
    assert polymorphic.sources(TABLE, "What_Id.Deals") == ["What_Id", "$se_module"]
    assert polymorphic.sources(TABLE, "Parent_Id.Accounts") == ["Parent_Id"]


def test_a_bare_lookup_holds_the_id_and_names_its_object_by_code() -> None:
    """Bitrix24's OWNER_ID: the id itself, its object's number beside it (3: a contact); an
    id of 0 links nothing."""
    owner = {
        "OWNER_ID": Polymorphic(
            object_field="OWNER_TYPE_ID",
            targets=("contact", "company"),
            codes={"contact": "3", "company": "4"},
            bare=True,
        )
    }
    read = polymorphic.read(owner, {"OWNER_ID": "12", "OWNER_TYPE_ID": "3"})
    assert read == {"OWNER_ID.contact": "12", "OWNER_ID.company": None}
    unset = polymorphic.read(owner, {"OWNER_ID": "0", "OWNER_TYPE_ID": "4"})
    assert unset == {"OWNER_ID.contact": None, "OWNER_ID.company": None}
    written = polymorphic.write(owner, {"OWNER_ID.contact": None, "OWNER_ID.company": "12"})
    assert written == {"OWNER_ID": "12", "OWNER_TYPE_ID": "4"}
