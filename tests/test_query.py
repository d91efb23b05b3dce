"""The filter / sort / fields language (crmgate/query.py, docs/querying.md)."""

from __future__ import annotations

import pytest

from crmgate.query import Condition, QueryError, SortKey, parse_fields, parse_filter, parse_sort


def test_conditions_joined_by_and() -> None:
    assert parse_filter("name eq 'Bill' and age ge 30 and score lt 2.5") == (
        Condition("name", "eq", "Bill"),
        Condition("age", "ge", 30),
        Condition("score", "lt", 2.5),
    )


def test_operators_and_keywords_are_case_insensitive() -> None:
    assert parse_filter("name EQ 'x' AND active Eq TRUE") == (
        Condition("name", "eq", "x"),
        Condition("active", "eq", True),
    )


def test_quotes_are_doubled_inside_text_and_keywords_in_text_stay_text() -> None:
    parsed = parse_filter("name eq 'O''Brien and x eq 1' and note contains ' or 1=1 --'")
    assert parsed == (
        Condition("name", "eq", "O'Brien and x eq 1"),
        Condition("note", "contains", " or 1=1 --"),
    )


def test_null_true_false_and_negative_numbers() -> None:
    assert parse_filter("a eq null and b ne false and c gt -3") == (
        Condition("a", "eq", None),
        Condition("b", "ne", False),
        Condition("c", "gt", -3),
    )


def test_empty_filter_is_no_condition() -> None:
    assert parse_filter(None) == ()
    assert parse_filter("   ") == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name", "expected: field operator value"),
        ("name eq", "expected: field operator value"),
        ("name eq 'x' or b eq 1", "expected 'and' at 13"),
        ("name like 'x'", "unknown operator 'like'"),
        ("name eq Bill", "expected a value"),
        ("name eq 'open", "unexpected character"),
        ("name eq 'x' and", "expected: field operator value"),
        ("(name eq 'x')", "unexpected character '('"),
        ("name eq 'x'; drop table users", "unexpected character ';'"),
    ],
)
def test_bad_filters_say_what_and_where(text: str, fragment: str) -> None:
    with pytest.raises(QueryError) as error:
        parse_filter(text)
    assert fragment in str(error.value)
    assert error.value.parameter == "filter"


def test_filter_size_is_bounded() -> None:
    with pytest.raises(QueryError, match="more than 20 conditions"):
        parse_filter(" and ".join(f"f{i} eq {i}" for i in range(21)))
    with pytest.raises(QueryError, match="longer than"):
        parse_filter("name eq '" + "x" * 3000 + "'")


def test_sort_keys() -> None:
    assert parse_sort("name, -created_at,email desc,phone asc") == (
        SortKey("name"),
        SortKey("created_at", True),
        SortKey("email", True),
        SortKey("phone"),
    )
    assert parse_sort(None) == ()


@pytest.mark.parametrize("text", ["name,", "name sideways", "na-me", "a b c"])
def test_bad_sorts(text: str) -> None:
    with pytest.raises(QueryError):
        parse_sort(text)


def test_fields() -> None:
    assert parse_fields("name, email,name") == ("name", "email")
    assert parse_fields(None) is None
    with pytest.raises(QueryError):
        parse_fields("name,e mail")
