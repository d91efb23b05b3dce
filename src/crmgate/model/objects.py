"""The object and field descriptions every connector shares: what a CRM says about its objects
(standard or custom) and their fields, as the connected user sees them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldInfo:
    """One native field of a CRM object, as the CRM describes it to the connected user.
    ``kind`` is the contract's type: string, number, integer, boolean, date, date-time."""

    name: str
    label: str
    kind: str
    native_type: str
    required: bool = False  # must be given on create
    createable: bool = True
    updateable: bool = True
    filterable: bool = True
    sortable: bool = True
    custom: bool = False
    enum: tuple[str, ...] = ()
    reference_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectInfo:
    """A CRM object (standard or custom) and what the connected user may do with it."""

    name: str
    label: str
    plural_label: str = ""
    custom: bool = False
    queryable: bool = True
    createable: bool = False
    updateable: bool = False
    deletable: bool = False
    fields: tuple[FieldInfo, ...] = ()
    id_field: str = "Id"  # the column holding a record's id (hs_object_id, id, ...)

    def field(self, name: str) -> FieldInfo | None:
        return next((f for f in self.fields if f.name == name), None)
