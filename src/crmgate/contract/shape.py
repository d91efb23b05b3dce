"""Answers in the contract's shape: every value as the reference document types it, none as null.

The reference never says ``nullable``, so a client generated from it (openapi-python-client, ...)
takes ``null`` for a broken answer. Every contract answer crmgate renders passes through a
*conformer* made from the reference's schema of the operation's success response; the rules, one
place for every route (docs/errors.md, "Absent values"):

- ``null`` is left out, at every depth: of an object, the property; of an array, the item.
- A value the reference types as a string is sent as one: a number as its decimal text (230 ->
  "230", 1.5 -> "1.5", 2500000.0 -> "2500000"), a boolean as ``"true"``/``"false"`` (JSON's own
  spelling). Integer, number and boolean accept their text ("42", "1.5", "true"); an array takes a
  single value as an array of one (Zoho's ``industry: "Retail"`` -> ``["Retail"]``).
- A value that has no form in the reference's type (an object where a string is due, a user id
  ``usr_...`` where an integer is due) is left out, like a value crmgate does not have.
- Properties the schema does not name (crmgate's additions: ``native``, custom fields,
  ``credential``) keep their values, with nulls left out the same way; ``native``, the CRM's own
  record, is sent exactly as the CRM gave it.

A conformer is compiled once per schema name (closures over the schema, no schema lookup per
value) and cached; ``$ref`` cycles (Relation -> AccountRelation -> ...) are bound on first use.
Measured: about 4.5 us of CPU per contact record, a 25-record page about as much as rendering it
as JSON (0.1 ms).
Error bodies never pass here: the reference gives them no schema, crmgate's error shape stays.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from crmgate.contract.coverage import load_reference

Shaper = Callable[[Any], Any]


class _Absent:
    """What a shaper returns for a value the answer leaves out."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
VERBATIM = "native"  # the CRM's own record (X-API2CRM-NATIVE-ENABLE): sent as the CRM gave it
_INTEGER = re.compile(r"^\s*-?\d+\s*$")
_NUMBER = re.compile(r"^\s*-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$")
# integral floats up to here are written without ".0" (2500000.0 -> "2500000"); beyond, a float
# is not exact in its last digits and keeps Python's shortest form ("1e+20")
_EXACT = 2.0**53


def text(value: Any) -> Any:
    """``value`` as the contract's string, or ABSENT."""
    if isinstance(value, str):
        return str(value)  # an enum's value, not its name
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ABSENT
        if value.is_integer() and abs(value) <= _EXACT:
            return str(int(value))
        return repr(value)
    return ABSENT


def _integer(value: Any) -> Any:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    return ABSENT  # bools too: True is not the integer 1 on the wire


def _number(value: Any) -> Any:
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else ABSENT
    if isinstance(value, str) and _NUMBER.match(value):
        number = float(value)
        if not math.isfinite(number):
            return ABSENT
        return int(number) if _INTEGER.match(value) else number
    return ABSENT


def _boolean(value: Any) -> Any:
    if value is True or value is False:
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return ABSENT


def without_nulls(value: Any) -> Any:
    """``value`` with every null left out, at every depth; nothing else changes."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value if v is not None]
    return value


def _any(value: Any) -> Any:
    return without_nulls(value)


def _free_object(value: Any) -> Any:
    return without_nulls(value) if isinstance(value, dict) else ABSENT


def _array(item: Shaper) -> Shaper:
    def shape(value: Any) -> Any:
        if not isinstance(value, list):
            value = [value]  # one value where the reference has a list: a list of one
        shaped = []
        for entry in value:
            if entry is not None:
                entry = item(entry)
                if entry is not ABSENT:
                    shaped.append(entry)
        return shaped

    return shape


def _object(properties: dict[str, Shaper]) -> Shaper:
    def shape(value: Any) -> Any:
        if not isinstance(value, dict):
            return ABSENT
        shaped = {}
        for name, entry in value.items():
            if entry is None:
                continue
            known = properties.get(name)
            if known is not None:
                entry = known(entry)
                if entry is ABSENT:
                    continue
            elif name != VERBATIM:
                entry = without_nulls(entry)
            shaped[name] = entry
        return shaped

    return shape


def _ref(name: str) -> Shaper:
    bound: list[Shaper] = []  # filled on first use: a schema may refer to itself, indirectly

    def shape(value: Any) -> Any:
        if not bound:
            bound.append(conformer(name))
        return bound[0](value)

    return shape


_SCALARS: dict[str, Shaper] = {
    "string": text,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
}


def compile_schema(schema: dict[str, Any]) -> Shaper:
    """The shaper of one schema of the reference (its ``$ref``s bound to the reference's)."""
    if "$ref" in schema:
        return _ref(schema["$ref"].rsplit("/", 1)[-1])
    kind = schema.get("type")
    if kind == "array":
        return _array(compile_schema(schema.get("items", {})))
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        if not properties:
            return _free_object
        return _object({name: compile_schema(each) for name, each in properties.items()})
    return _any


@cache
def conformer(name: str) -> Shaper:
    """The shaper of the reference's ``components/schemas/<name>``, made once."""
    return compile_schema(load_reference()["components"]["schemas"][name])


@cache
def answer_conformer(operation_id: str) -> Shaper | None:
    """The shaper of the success answer of the reference's operation ``operation_id``
    (``getContactCollection`` -> an array of ContactEntity), None if it answers no JSON."""
    schema = answer_schema(operation_id)
    return None if schema is None else compile_schema(schema)


def answer_schema(operation_id: str) -> dict[str, Any] | None:
    """The reference's JSON schema of the 200/201 answer of ``operation_id``."""
    operation = operations()[operation_id]
    for status, response in sorted(operation.get("responses", {}).items()):
        if status.startswith("2"):
            content = (response or {}).get("content", {}).get("application/json")
            return None if content is None else content.get("schema")
    return None


@cache
def operations() -> dict[str, dict[str, Any]]:
    """The reference's operations by operation id."""
    found = {}
    for operations in load_reference()["paths"].values():
        for operation in operations.values():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = operation
    return found


def conform(operation_id: str, content: Any) -> Any:
    """``content``, the answer of the reference's operation ``operation_id``, in its shape."""
    shaper = answer_conformer(operation_id)
    if shaper is None:
        return content
    shaped = shaper(content)
    return without_nulls(content) if shaped is ABSENT else shaped
