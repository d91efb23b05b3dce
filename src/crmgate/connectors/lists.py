"""A record's typed lists (a contact's emails and phones, each item with a label) as the flat
columns the entity maps name, ``<prefix>_<label>``, and back: the descriptor's ``lists``.

Reading shows each label's first item that has a value (a primary one first, where items say
so); writing sends a list again, whole, from the columns a write gives of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crmgate.connectors.catalogue import TypedList


def of_column(lists: Sequence[TypedList], column: str) -> TypedList | None:
    """The list a flat column shows a label of (``email_work``: the emails)."""
    return next((typed for typed in lists if column.startswith(typed.prefix + "_")), None)


def read(lists: Sequence[TypedList], record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its lists as flat columns: each known label's column (None when no item
    has it), and those of the other labels its items name."""
    names = {typed.name for typed in lists}
    flat: dict[str, Any] = {k: v for k, v in record.items() if k not in names}
    for typed in (typed for typed in lists if typed.name in record):
        flat.update(dict.fromkeys(f"{typed.prefix}_{label}" for label in typed.labels))
        items = record[typed.name] if isinstance(record[typed.name], list) else []
        valued = [i for i in items if isinstance(i, dict) and i.get(typed.value) not in (None, "")]
        for item in sorted(valued, key=lambda i: not (typed.primary and i.get(typed.primary))):
            label = str(item.get(typed.label) or typed.default)
            if typed.labels and label not in typed.labels:
                label = "other"
            if flat.get(f"{typed.prefix}_{label}") is None:
                flat[f"{typed.prefix}_{label}"] = item[typed.value]
    return flat


def write(lists: Sequence[TypedList], values: Mapping[str, Any]) -> dict[str, Any]:
    """A write's flat columns with the lists' ones as the lists again: a list some column of
    which is given is sent whole, its items in the order given (the first one primary, where
    items say so), an empty value left out."""
    body = {k: v for k, v in values.items() if of_column(lists, k) is None}
    for typed in lists:
        start = len(typed.prefix) + 1
        given = [(k[start:], v) for k, v in values.items() if k.startswith(typed.prefix + "_")]
        if not given:
            continue
        items = [{typed.label: label, typed.value: v} for label, v in given if v not in (None, "")]
        if typed.primary:
            items = [{**item, typed.primary: n == 0} for n, item in enumerate(items)]
        body[typed.name] = items
    return body
