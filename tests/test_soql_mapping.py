"""Field maps (unified <-> Salesforce) and the filter -> SOQL translation, run against the
simulator's SOQL over HTTPS: the values reach Salesforce as values, never as query text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from simple_salesforce import Salesforce

from conftest import SalesforceSim
from crmgate.connectors import soql
from crmgate.connectors.catalogue import Catalogue, CatalogueError, Platform
from crmgate.model.mapping import EntityMap, MappingError
from crmgate.query import Condition, QueryError, parse_filter, parse_sort
from test_salesforce_sdk import connect


@pytest.fixture(scope="module")
def platform() -> Platform:
    found = Catalogue.load(["salesforce"]).get("Salesforce")
    assert found is not None
    return found


@pytest.fixture
def contact(platform: Platform) -> EntityMap:
    return platform.entities["contact"]


@pytest.fixture
def sf(salesforce: SalesforceSim) -> Iterator[Salesforce]:
    client = connect(salesforce, salesforce.simulator.add_user("admin@acme.example", "pw"))
    yield client
    client.session.close()


def query(
    sf: Salesforce, entity: EntityMap, text: str | None, sort: str | None = None
) -> list[dict[str, Any]]:
    statement = soql.select(
        entity, entity.native_columns(), parse_filter(text), parse_sort(sort), limit=200
    )
    return [entity.to_unified(r) for r in sf.query(statement)["records"]]


UNIFIED = {
    "first_name": "Bill",
    "last_name": "Wall",
    "position": "CTO",
    "birth_date": "1980-02-29",
    "email": [{"type": "work", "address": "bill@acme.example"}],
    "phone": [{"type": "work", "number": "(817) 569-8900"}, {"type": "mobile", "number": "555"}],
    "address": [
        {
            "type": "mailing",
            "street": "1 Main St",
            "city": "Fort Worth",
            "state": "TX",
            "zip": "76102",
            "country": "US",
        }
    ],
}


def test_a_contact_round_trips_through_salesforce(sf: Salesforce, contact: EntityMap) -> None:
    account = sf.Account.create({"Name": "Acme"})["id"]
    record = {**UNIFIED, "relation": {"account": [{"entity": {"id": account}}]}}
    created = sf.Contact.create(contact.to_native(record))["id"]
    [found] = query(sf, contact, f"id eq '{created}'")
    for name, value in UNIFIED.items():
        assert found[name] == value, name
    assert found["relation"] == {"account": [{"type": "account", "entity": {"id": account}}]}
    assert found["created_at"].endswith("+00:00") and found["id"] == created


def test_filters_select_the_right_records(
    sf: Salesforce, salesforce: SalesforceSim, contact: EntityMap
) -> None:
    for name, email in (("Ann", "ann@x.example"), ("Bob", "bob@y.example"), ("Cy", None)):
        salesforce.simulator.data.insert(
            "Contact", {"LastName": name, "Email": email, "Birthdate": "1990-01-0" + str(len(name))}
        )
    names = lambda text, sort=None: [r["last_name"] for r in query(sf, contact, text, sort)]  # noqa: E731
    assert names("last_name eq 'Bob'") == ["Bob"]
    assert names("last_name ne 'Bob'", "last_name") == ["Ann", "Cy"]
    assert names("email contains 'Y.EXAMPLE'") == ["Bob"]
    assert names("last_name startswith 'a'") == ["Ann"]
    assert names("email eq null") == ["Cy"]
    assert names("birth_date ge '1990-01-03'", "-last_name") == ["Bob", "Ann"]
    assert names(None, "-last_name") == ["Cy", "Bob", "Ann"]
    count = sf.query(soql.count(contact, parse_filter("email ne null")))["totalSize"]
    assert count == 2


@pytest.mark.parametrize(
    "hostile",
    [
        "x' OR LastName != '",
        "x\\' OR LastName != \\'",
        "Wall' OR Id != null OR LastName = '",
        "%",
        "_",
        "\\",
        "a\nb",
        "' LIMIT 1 --",
        "Wall\\",
    ],
)
def test_quotes_and_soql_keywords_in_values_cannot_change_the_query(
    sf: Salesforce, salesforce: SalesforceSim, contact: EntityMap, hostile: str
) -> None:
    salesforce.simulator.data.insert("Contact", {"LastName": "Wall"})
    salesforce.simulator.data.insert("Contact", {"LastName": hostile})
    for op in ("eq", "contains", "startswith"):
        # Built directly: the filter grammar refuses control characters before SOQL is reached.
        statement = soql.select(
            contact, contact.native_columns(), [Condition("last_name", op, hostile)], limit=200
        )
        found = [r["LastName"] for r in sf.query(statement)["records"]]
        assert found == [hostile], (op, statement, found)
        if "\n" not in hostile:  # and through the filter parser, quotes doubled
            text = "last_name " + op + " '" + hostile.replace("'", "''") + "'"
            assert [r["last_name"] for r in query(sf, contact, text)] == [hostile]
    assert [r["last_name"] for r in query(sf, contact, "last_name eq 'Wall'")] == ["Wall"]


def test_unknown_or_mistyped_filters_are_refused(contact: EntityMap) -> None:
    with pytest.raises(QueryError, match="unknown field 'password'"):
        soql.Soql(contact).where(parse_filter("password eq 'x'"))
    with pytest.raises(QueryError, match="ISO 8601"):
        soql.Soql(contact).where(parse_filter("created_at gt 'yesterday'"))
    with pytest.raises(QueryError, match="text value"):
        soql.Soql(contact).where(parse_filter("last_name eq 5"))
    with pytest.raises(QueryError, match="text fields only"):
        soql.Soql(contact).where(parse_filter("birth_date contains '19'"))
    with pytest.raises(QueryError, match="unknown field"):
        soql.Soql(contact).order(parse_sort("-secret"))


def test_writing_refuses_what_cannot_be_written(contact: EntityMap) -> None:
    for record, field in (
        ({"id": "003x"}, "id"),
        ({"created_at": "2020-01-01"}, "created_at"),
        ({"nickname": "x"}, "nickname"),
        ({"email": [{"type": "home", "address": "a@b"}]}, "email[0].type"),
        ({"email": "a@b"}, "email"),
        ({"relation": {"campaign": [{"entity": {"id": "701x"}}]}}, "relation.campaign"),
        ({"relation": {"account": [{"entity": {}}]}}, "relation.account[0].entity.id"),
    ):
        with pytest.raises(MappingError) as refused:
            contact.to_native(record)
        assert refused.value.field == field


def test_a_partial_update_clears_only_the_list_it_names(contact: EntityMap) -> None:
    native = contact.to_native({"phone": [{"type": "mobile", "number": "1"}], "position": "VP"})
    assert native == {"Phone": None, "MobilePhone": "1", "Title": "VP"}


def test_descriptor_fields_are_checked_against_the_contract() -> None:
    with pytest.raises(ValueError, match="not fields of the contract"):
        EntityMap.model_validate(
            {"entity": "contact", "object": "Contact", "fields": {"shoe_size": "Shoe__c"}}
        )
    with pytest.raises(ValueError, match="no entity"):
        EntityMap.model_validate({"entity": "spaceship", "object": "Ship__c"})
    assert CatalogueError  # descriptor errors surface as CatalogueError at load (catalogue.py)


def test_a_map_listed_by_parent_names_relations_it_has() -> None:
    """``list_by``: the relations one of which each list must filter by (eq, a value)."""
    note = {"entity": "note", "object": "Note", "relations": {"account": "ParentId"}}
    with pytest.raises(ValueError, match="list_by"):
        EntityMap.model_validate({**note, "list_by": ["contact"]})
    listed = EntityMap.model_validate({**note, "list_by": ["account"]})
    assert listed.parent_wanted([]) == "relation.account eq '<id>'"
    assert listed.parent_wanted([Condition("relation.account", "ne", "1")]) != ""
    assert listed.parent_wanted([Condition("relation.account", "eq", "1")]) == ""
    assert EntityMap.model_validate(note).parent_wanted([]) == ""
