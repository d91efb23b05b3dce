"""Lookups that may point to records of several objects (the descriptor's ``[polymorphic]``) as
the entity maps see them: one column per object, ``<lookup>.<object>`` (``What_Id.Deals``), which
holds the linked record's id where the lookup points to that object and null in the others.

A lookup's value is an object with the linked record's ``id`` (or, ``bare``, the id itself); the
object it points to is named beside it, in a field of the record (``object_field``, by its name
or its ``codes`` entry: Bitrix24's OWNER_TYPE_ID 3 is a contact), or inside it (``object_in``).
Reading makes the per-object columns, a describe adds them to the lookup's field, and writing
puts them back in the CRM's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crmgate.connectors.catalogue import Polymorphic
from crmgate.connectors.errors import NotValid
from crmgate.connectors.jsonpath import select
from crmgate.model.objects import FieldInfo

Table = Mapping[str, Polymorphic]


def split(table: Table, column: str) -> tuple[str, Polymorphic | None, str]:
    """A per-object column as its lookup, the lookup's entry and the object (``What_Id.Deals``:
    What_Id, its entry, Deals); any other column as itself, None and ""."""
    base, dot, target = column.partition(".")
    lookup = table.get(base) if dot else None
    return (base, lookup, target) if lookup is not None else (column, None, "")


def sources(table: Table, column: str) -> list[str]:
    """The CRM's fields a column is read from: a per-object column's lookup, and the field
    naming its object where there is one."""
    base, lookup, _ = split(table, column)
    if lookup is None:
        return [column]
    return [base, lookup.object_field] if lookup.object_field else [base]


def read(table: Table, record: Mapping[str, Any]) -> dict[str, Any]:
    """The per-object columns of ``record``'s lookups (ValueError: a lookup's value where the
    object cannot be named as the table says)."""
    flat: dict[str, Any] = {}
    for column, lookup in table.items():
        if column not in record:
            continue
        value = record[column]
        if lookup.object_field:
            said = [record.get(lookup.object_field)]
        else:
            said = select(value, lookup.object_in, strict=True)
        flat |= {f"{column}.{target}": None for target in lookup.targets}
        named = {code: target for target, code in lookup.codes.items()}
        target = next(iter(said), None)
        target = named.get(str(target), target)
        if lookup.bare:  # an id of 0 links nothing (Bitrix24's unset OWNER_ID)
            linked = value if isinstance(value, (str, int)) and str(value) != "0" else None
        else:
            linked = value.get("id") if isinstance(value, dict) else None
        if linked and isinstance(target, str):
            flat[f"{column}.{target}"] = str(linked)
    return flat


def fields(table: Table, spec: Mapping[str, Any], info: FieldInfo) -> list[FieldInfo]:
    """A described field and, for a lookup of the table, a column per object it may point to:
    those its describe ``spec`` names (``targets_in``), then the table's (ValueError: a
    describe of the wrong shape)."""
    lookup = table.get(info.name)
    if lookup is None:
        return [info]
    said = select(spec, lookup.targets_in, strict=True) if lookup.targets_in else []
    return [info] + [
        FieldInfo(
            name=f"{info.name}.{target}",
            label=f"{info.label} ({target})",
            kind="string",
            native_type=info.native_type,
            createable=info.createable,
            updateable=info.updateable,
            sortable=False,
            reference_to=(target,),
        )
        for target in dict.fromkeys([*map(str, said), *lookup.targets])
    ]


def write(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each lookup's per-object columns as the lookup in the CRM's shape (``{id}``
    with its object beside or inside it; null when none is given): at most one may be given."""
    out: dict[str, Any] = {}
    given: dict[str, list[tuple[str, Any]]] = {}
    for name, value in values.items():
        base, lookup, target = split(table, name)
        if lookup is None:
            out[name] = value
        else:
            given.setdefault(base, []).append((target, value))
    for base, links in given.items():
        chosen = [(target, value) for target, value in links if value not in (None, "")]
        if len(chosen) > 1:
            raise NotValid(f"{base}: one related record only", (base,))
        lookup = table[base]
        said = lookup.codes.get(chosen[0][0], chosen[0][0]) if chosen else None
        link: Any = None
        if chosen:
            link = str(chosen[0][1]) if lookup.bare else {"id": str(chosen[0][1])}
        if lookup.object_field:
            out[base], out[lookup.object_field] = link, said
            continue
        named: Any = said
        for step in reversed(lookup.object_in.split(".")):
            named = {step: named}
        out[base] = {**named, **link} if link else None
    return out
