"""How a CRM's own descriptions of its objects and fields become the contract's ``ObjectInfo``
and ``FieldInfo``: the descriptor's ``[describe]`` section says where the list is in the CRM's
answer and where each property is (JSON paths, connectors/jsonpath.py), with a table of the
CRM's types to the contract's kinds; one parser reads them all. The objects a CRM does not
describe (HubSpot's owners, users) are described in the descriptor itself (``KnownField``).

A flag (required, createable, custom, ...) is ``true``/``false`` or a list of tests that must
all hold, each ``path`` (a truthy value), ``!path`` (a falsy or missing one), ``path=value`` or
``path!=value`` (the value as JSON writes it: ``true``, ``null``, ``text``; a missing value is
``null``). What no path can say (Dynamics' navigation properties) is a connector's hook over
the ``FieldInfo`` read here; a polymorphic lookup's columns are connectors/polymorphic.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from crmgate.connectors.jsonpath import holds, select, steps
from crmgate.model.objects import FieldInfo, ObjectInfo

Kind = Literal["string", "number", "integer", "boolean", "date", "date-time"]
Flag = bool | tuple[str, ...]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _checked(value: Any) -> Any:
    """A flag's tests, each checked to name a JSON path."""
    tests = (value,) if isinstance(value, str) else value
    if isinstance(tests, (list, tuple)):
        for test in tests:
            steps(str(test).lstrip("!").split("!=")[0].split("=")[0])
        return tuple(tests)
    return value


def flag(entry: Any, value: Flag) -> bool:
    if isinstance(value, bool):
        return value
    return all(holds(entry, test) for test in value)


def text(entry: Any, paths: tuple[str, ...], default: str = "") -> str:
    """The first non-empty scalar the paths find, as text; ``default`` when none does."""
    for path in paths:
        for value in select(entry, path, strict=True):
            if value not in (None, "") and not isinstance(value, (dict, list)):
                return str(value)
    return default


class FieldTable(_Frozen):
    """Where a describe answer lists an object's fields, and where each field says what."""

    list: str = "$"  # the field list in the answer
    keep: tuple[str, ...] = ()  # tests a field must pass to be shown at all
    name: str = "name"
    label: tuple[str, ...] = ("label",)  # the first that says; else the name
    type: str = "type"
    default_type: str = "string"
    kinds: dict[str, Kind] = {}  # the CRM's types -> the contract's kinds (others: string)
    required: Flag = False
    createable: Flag = True
    updateable: Flag = True
    filterable: Flag = True
    sortable: Flag = True
    custom: Flag = False
    options: str = ""  # the picklist's option objects ...
    option_value: tuple[str, ...] = ("value",)  # ... and where each says its value
    reference_to: str = ""  # the objects a reference points to

    @field_validator(
        "keep",
        "required",
        "createable",
        "updateable",
        "filterable",
        "sortable",
        "custom",
        mode="before",
    )
    @classmethod
    def _tests(cls, value: Any) -> Any:
        return _checked(value)

    def read(self, spec: Mapping[str, Any]) -> FieldInfo | None:
        """One field of the answer (None: it has no name, or the descriptor keeps it out)."""
        name = text(spec, (self.name,))
        if not name or not all(holds(spec, test) for test in self.keep):
            return None
        native = text(spec, (self.type,), self.default_type)
        options = select(spec, self.options, strict=True) if self.options else []
        references = select(spec, self.reference_to, strict=True) if self.reference_to else []
        return FieldInfo(
            name=name,
            label=text(spec, self.label, name),
            kind=self.kinds.get(native, "string"),
            native_type=native,
            required=flag(spec, self.required),
            createable=flag(spec, self.createable),
            updateable=flag(spec, self.updateable),
            filterable=flag(spec, self.filterable),
            sortable=flag(spec, self.sortable),
            custom=flag(spec, self.custom),
            enum=tuple(text(o, self.option_value) for o in options),
            reference_to=tuple(str(r) for r in references if r not in (None, "")),
        )


class ObjectTable(_Frozen):
    """Where the CRM's list of objects is, and where each object says what."""

    list: str
    keep: tuple[str, ...] = ()
    name: str = "name"
    label: tuple[str, ...] = ("label",)
    plural: tuple[str, ...] = ()
    plural_or_name: bool = False  # no plural said: the name (else none)
    custom: Flag = False
    queryable: Flag = True
    createable: Flag = False
    updateable: Flag = False
    deletable: Flag = False

    @field_validator(
        "keep", "custom", "queryable", "createable", "updateable", "deletable", mode="before"
    )
    @classmethod
    def _tests(cls, value: Any) -> Any:
        return _checked(value)

    def read(self, entry: Mapping[str, Any], id_field: str, **more: Any) -> ObjectInfo | None:
        name = text(entry, (self.name,))
        if not name or not all(holds(entry, test) for test in self.keep):
            return None
        return ObjectInfo(
            name=name,
            label=text(entry, self.label, name),
            plural_label=text(entry, self.plural, name if self.plural_or_name else ""),
            custom=flag(entry, self.custom),
            queryable=flag(entry, self.queryable),
            createable=flag(entry, self.createable),
            updateable=flag(entry, self.updateable),
            deletable=flag(entry, self.deletable),
            id_field=id_field,
            **more,
        )


class Describe(_Frozen):
    """The descriptor's ``[describe]``: how the CRM describes its objects and their fields."""

    fields: FieldTable = FieldTable()
    objects: ObjectTable | None = None
    id_field: str = "Id"  # the column holding a record's id, for every object


class KnownField(_Frozen):
    """A field of an object the CRM does not describe (users, owners), as the descriptor says
    it (``native`` defaults to the kind)."""

    name: str
    label: str
    kind: Kind = "string"
    native: str = ""
    enum: tuple[str, ...] = ()

    def info(self, writable: bool) -> FieldInfo:
        return FieldInfo(
            self.name,
            self.label,
            self.kind,
            self.native or self.kind,
            createable=writable,
            updateable=writable,
            enum=self.enum,
        )


Amend = Callable[[Mapping[str, Any], FieldInfo], list[FieldInfo]]


def listed(answer: Any, path: str) -> list[dict[str, Any]]:
    """The objects of the list at ``path``; ValueError if there is no such list of objects."""
    found = select(answer, path, strict=True)
    if len(found) != 1 or not isinstance(found[0], list):
        raise ValueError(f"{path}: not a list")
    if not all(isinstance(entry, dict) for entry in found[0]):
        raise ValueError(f"{path}: not a list of objects")
    return found[0]


def read_fields(table: FieldTable, answer: Any, amend: Amend | None = None) -> list[FieldInfo]:
    """The fields of a describe ``answer``; ``amend`` (a connector's hook) may turn one into
    several, change it, or drop it (``[]``). ValueError if the answer is not of the shape the
    descriptor says (``Records.read_fields`` makes that the CRM's fault)."""
    found: list[FieldInfo] = []
    for spec in listed(answer, table.list):
        info = table.read(spec)
        if info is not None:
            found += amend(spec, info) if amend else [info]
    return found


def read_objects(table: ObjectTable, answer: Any, id_field: str) -> list[ObjectInfo]:
    """The objects of a CRM's object list ``answer`` (ValueError as ``read_fields``)."""
    found = [table.read(entry, id_field) for entry in listed(answer, table.list)]
    return [info for info in found if info is not None]
