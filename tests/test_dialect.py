"""The filter dialect base (crmgate/connectors/dialect.py): the one walk over the conditions and
the refusals every CRM shares, seen through two small dialects declared here, one writing text
and one writing JSON objects."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest

from crmgate.connectors.dialect import Dialect, Scalar, Target, TextDialect, pattern
from crmgate.model.mapping import EntityMap
from crmgate.query import Condition, QueryError, SortKey


class Sql(TextDialect):
    crm = "Sql"
    max_terms = 4
    like_refuses = "%"
    like_refusal = "Sql's {op} cannot match {chars}"
    id_pattern = re.compile(r"^[0-9]{1,9}$")
    id_refusal = "{field} takes a Sql id"

    def like(self, target: Target, op: str, text: str) -> str:
        return f"{target.name} LIKE {self.quote(pattern(op, text))}"


class Search(Dialect[dict[str, Any]]):
    crm = "Search"
    operators: ClassVar[dict[str, str]] = {
        "eq": "is",
        "ne": "is_not",
        "gt": "after",
        "ge": "from",
        "lt": "before",
        "le": "until",
    }
    true_false = (True, False)

    def number(self, value: int | float) -> Scalar:
        return value

    def compare(self, target: Target, operator: str, literal: Scalar) -> dict[str, Any]:
        return {"field": target.name, "op": operator, "value": literal}

    def null(self, target: Target, op: str) -> dict[str, Any]:
        return {"field": target.name, "op": "missing" if op == "eq" else "present"}

    def like(self, target: Target, op: str, text: str) -> dict[str, Any]:
        return {"field": target.name, "op": op, "value": text}


@pytest.fixture
def deal() -> EntityMap:
    return EntityMap(
        entity="opportunity",
        object="Deal",
        id="Key",
        fields={"name": "Title", "amount": "Value", "expected_end_at": "CloseDate"},
        relations={"account": "AccountRef"},
        extra=("Active", "Created"),
        native_kinds={"CloseDate": "date", "Active": "boolean", "Created": "date-time"},
    )


def where(entity: EntityMap, *conditions: Condition) -> str:
    return Sql(entity).where(conditions)


def test_conditions_are_joined_in_order(deal: EntityMap) -> None:
    found = where(deal, Condition("name", "eq", "A"), Condition("amount", "gt", 5))
    assert found == "Title = 'A' AND Value > 5"


def test_no_condition_is_an_empty_expression(deal: EntityMap) -> None:
    assert where(deal) == ""


def test_the_maps_match_values_come_first(deal: EntityMap) -> None:
    typed = deal.model_copy(update={"match": {"Kind": "deal"}})
    assert where(typed, Condition("name", "eq", "A")) == "Kind = 'deal' AND Title = 'A'"


def test_a_quote_in_text_is_doubled(deal: EntityMap) -> None:
    assert where(deal, Condition("name", "eq", "O'Brien")) == "Title = 'O''Brien'"


def test_a_date_time_is_written_in_utc(deal: EntityMap) -> None:
    found = where(deal, Condition("Created", "ge", "2024-05-31T23:30:00-02:00"))
    assert found == "Created >= 2024-06-01T01:30:00Z"


def test_a_date_is_written_as_a_day(deal: EntityMap) -> None:
    assert where(deal, Condition("expected_end_at", "lt", "2024-05-31")) == "CloseDate < 2024-05-31"


def test_booleans_are_the_dialects_words(deal: EntityMap) -> None:
    assert where(deal, Condition("Active", "eq", False)) == "Active = false"


def test_a_value_that_does_not_fit_its_field_is_refused(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match="amount takes a number"):
        where(deal, Condition("amount", "eq", "many"))


def test_an_unknown_field_is_refused_naming_the_known_ones(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match=r"unknown field 'secret'; known: .*amount"):
        where(deal, Condition("secret", "eq", "x"))


def test_eq_null_and_ne_null_are_the_dialects_null_tests(deal: EntityMap) -> None:
    found = where(deal, Condition("name", "eq", None), Condition("amount", "ne", None))
    assert found == "Title = null AND Value != null"


def test_null_compares_with_eq_and_ne_only(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match="amount: use eq null or ne null"):
        where(deal, Condition("amount", "gt", None))


def test_contains_and_startswith_are_the_dialects_like(deal: EntityMap) -> None:
    found = where(deal, Condition("name", "contains", "cm"), Condition("name", "startswith", "A"))
    assert found == "Title LIKE '%cm%' AND Title LIKE 'A%'"


def test_contains_works_on_text_fields_only(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match="contains works on text fields only"):
        where(deal, Condition("amount", "contains", "5"))


def test_contains_on_a_record_id_is_refused(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match="startswith works on text fields only"):
        where(deal, Condition("relation.account", "startswith", "12"))


def test_characters_a_like_cannot_match_are_refused(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match="Sql's contains cannot match %"):
        where(deal, Condition("name", "contains", "50%"))


def test_a_record_id_is_written_bare(deal: EntityMap) -> None:
    assert where(deal, Condition("id", "eq", "42")) == "Key = 42"


def test_a_record_id_must_be_one_of_the_crms_ids(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match=r"relation\.account takes a Sql id"):
        where(deal, Condition("relation.account", "eq", "42 OR 1 = 1"))


def test_without_an_id_pattern_an_id_is_text(deal: EntityMap) -> None:
    assert Search(deal).terms([Condition("id", "eq", "42")]) == [
        {"field": "Key", "op": "is", "value": "42"}
    ]


def test_more_conditions_than_the_crm_takes_are_refused(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match="Sql takes at most 4 conditions"):
        where(deal, *[Condition("name", "ne", str(n)) for n in range(5)])


def test_the_cap_counts_the_maps_match_values(deal: EntityMap) -> None:
    typed = deal.model_copy(update={"match": {"Kind": "deal"}})
    with pytest.raises(QueryError, match="at most 4 conditions"):
        where(typed, *[Condition("name", "ne", str(n)) for n in range(4)])


def test_a_json_dialect_builds_objects_with_json_values(deal: EntityMap) -> None:
    found = Search(deal).terms(
        [
            Condition("amount", "ge", 2.5),
            Condition("Active", "eq", True),
            Condition("name", "eq", None),
            Condition("name", "startswith", "O'B"),
        ]
    )
    assert found == [
        {"field": "Value", "op": "from", "value": 2.5},
        {"field": "Active", "op": "is", "value": True},
        {"field": "Title", "op": "missing"},
        {"field": "Title", "op": "startswith", "value": "O'B"},
    ]


def test_the_order_ends_with_the_id(deal: EntityMap) -> None:
    assert Sql(deal).order([SortKey("name", descending=True)]) == "Title DESC, Key ASC"


def test_an_order_by_the_id_is_not_extended(deal: EntityMap) -> None:
    assert Sql(deal).order([SortKey("id", descending=True)]) == "Key DESC"


def test_a_sort_by_an_unknown_field_is_refused(deal: EntityMap) -> None:
    with pytest.raises(QueryError, match="sort: unknown field 'secret'"):
        Sql(deal).order([SortKey("secret")])
