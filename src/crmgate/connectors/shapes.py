"""Typed access to a CRM's parsed answer: each part read as the shape the CRM documents, and one
that is not is one clear CRM_UNAVAILABLE error naming the CRM and the part, raised where it is
read (never a TypeError further on, never a 500)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crmgate.connectors.errors import CrmUnavailable
from crmgate.connectors.jsonpath import select


def unexpected(crm: str, what: str) -> CrmUnavailable:
    return CrmUnavailable(f"{crm} answered {what} of an unexpected shape")


def obj(value: Any, crm: str, what: str = "an answer") -> dict[str, Any]:
    """``value`` if it is a JSON object; {} for null (absent)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise unexpected(crm, what)
    return value


def array(value: Any, crm: str, what: str = "a list") -> list[Any]:
    """``value`` if it is a JSON array; [] for null (absent)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise unexpected(crm, what)
    return value


def rows(answer: Any, path: str, crm: str, what: str = "a list") -> list[dict[str, Any]]:
    """The objects of the list at ``path`` (connectors/jsonpath.py) in ``answer``: [] for an
    empty answer (None); a missing list, or one holding anything but objects, is the CRM's
    fault."""
    if answer is None:
        return []
    found = select(answer, path)
    if len(found) != 1 or not isinstance(found[0], list):
        raise unexpected(crm, what)
    if not all(isinstance(row, dict) for row in found[0]):
        raise unexpected(crm, what)
    return found[0]


def text(value: Any, crm: str, what: str = "an id") -> str:
    """``value`` if it is a JSON string."""
    if not isinstance(value, str):
        raise unexpected(crm, what)
    return value


def integer(value: Any, crm: str, what: str = "a count") -> int:
    """``value`` if it is a JSON integer (a boolean is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise unexpected(crm, what)
    return value


def first(record: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The first object of ``record``'s list ``key``; {} where there is none (a Google person's
    names, organizations: the first entry of each is the one shown)."""
    items = record.get(key)
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def kept(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` without its None values: a value the CRM does not have is left out, not null."""
    return {key: value for key, value in row.items() if value is not None}
