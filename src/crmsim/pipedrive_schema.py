"""Pipedrive's objects as its API documents them: the collections (v1 and v2), their filter
and fields endpoints, the v2 sorts and query parameters, and each object's standard fields as
the ``*Fields`` endpoints describe them."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any

from crmsim.columns import Column

V2_OBJECTS = ("persons", "organizations", "deals", "activities")
# collection -> (the filter/condition object, the filter type, its fields endpoint)
OBJECTS: dict[str, tuple[str, str | None, str]] = {
    "persons": ("person", "people", "personFields"),
    "organizations": ("organization", "org", "organizationFields"),
    "deals": ("deal", "deals", "dealFields"),
    "activities": ("activity", "activity", "activityFields"),
    "leads": ("lead", "leads", "leadFields"),
    "notes": ("note", None, "noteFields"),
}
V2_SORTS = {
    c: ("id", "update_time", "add_time", *(("due_date",) if c == "activities" else ()))
    for c in V2_OBJECTS
}
# v1's dealFields and activityFields name the owner user_id (v2 records: owner_id)
OWNER_IS_USER_ID = ("deals", "activities")
# custom field types whose v2 value is not a plain one (the v2 migration guide)
V2_CUSTOM_SHAPES = ("monetary", "set", "address")
# the query parameters each v2 list takes besides filter_id (ignored when it is given)
V2_PARAMETERS = {
    "persons": ("ids", "owner_id", "org_id", "deal_id"),
    "organizations": ("owner_id",),
    "deals": ("ids", "owner_id", "person_id", "org_id"),
    "activities": ("ids", "owner_id", "deal_id", "lead_id", "person_id", "org_id"),
}
ACTIVITY_TYPES = ("call", "meeting", "task", "deadline", "email", "lunch")


@dataclass
class Field(Column):
    """A field; ``type`` is Pipedrive's ``field_type``, ``read_only`` what only Pipedrive sets
    (first_name, add_time...)."""

    id: int = 0

    def describe(self, order: int) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self.id,
            "key": self.name,
            "name": self.label,
            "order_nr": order,
            "field_type": self.type,
            "add_time": "2024-01-01 00:00:00",
            "update_time": "2024-01-01 00:00:00",
            "active_flag": True,
            "edit_flag": self.custom,
            "index_visible_flag": True,
            "details_visible_flag": True,
            "add_visible_flag": not self.read_only,
            "important_flag": False,
            "bulk_edit_allowed": not self.read_only,
            "searchable_flag": self.type in ("varchar", "text"),
            "filtering_allowed": True,
            "sortable_flag": True,
            "mandatory_flag": self.required,
        }
        if self.options:
            answer["options"] = [{"id": i + 1, "label": o} for i, o in enumerate(self.options)]
        return answer


_ids = itertools.count(9001)


def new_field(key: str, name: str, kind: str = "varchar", **extra: Any) -> Field:
    return Field(key, kind, name, id=next(_ids), **extra)


def standard_fields() -> dict[str, list[Field]]:
    def system() -> list[Field]:
        return [
            new_field("id", "ID", "int", read_only=True),
            new_field("add_time", "Created", "date", read_only=True),
            new_field("update_time", "Update time", "date", read_only=True),
        ]

    return {
        "persons": [
            *system(),
            new_field("name", "Name", required=True),
            new_field("first_name", "First name", read_only=True),
            new_field("last_name", "Last name", read_only=True),
            new_field("email", "Email"),
            new_field("phone", "Phone", "phone"),
            new_field("job_title", "Job title"),
            new_field("org_id", "Organization", "org"),
            new_field("owner_id", "Owner", "user"),
        ],
        "organizations": [
            *system(),
            new_field("name", "Name", required=True),
            new_field("address", "Address", "address"),
            new_field("owner_id", "Owner", "user"),
        ],
        "deals": [
            *system(),
            new_field("title", "Title", required=True),
            new_field("value", "Value", "monetary"),
            new_field("currency", "Currency", "varchar_options"),
            new_field("status", "Status", "status", options=("open", "won", "lost")),
            new_field("stage_id", "Stage", "stage"),
            new_field("probability", "Probability", "double"),
            new_field("expected_close_date", "Expected close date", "date"),
            new_field("org_id", "Organization", "org"),
            new_field("person_id", "Contact person", "people"),
            new_field("user_id", "Owner", "user"),
        ],
        "activities": [
            *system(),
            new_field("subject", "Subject", required=True),
            new_field("type", "Type", "enum", options=ACTIVITY_TYPES),
            new_field("due_date", "Due date", "date"),
            new_field("due_time", "Due time", "time"),
            new_field("duration", "Duration", "time"),
            new_field("done", "Done", "boolean"),
            new_field("note", "Note", "text"),
            new_field("location", "Location", "address"),
            new_field("deal_id", "Deal", "deal"),
            new_field("lead_id", "Lead", "lead"),
            new_field("person_id", "Contact person", "people"),
            new_field("org_id", "Organization", "org"),
            new_field("user_id", "Assigned to user", "user"),
        ],
        "leads": [
            new_field("id", "ID", "varchar", read_only=True),
            new_field("add_time", "Lead created", "date", read_only=True),
            new_field("update_time", "Update time", "date", read_only=True),
            new_field("title", "Title", required=True),
            new_field("person_id", "Contact person", "people"),
            new_field("organization_id", "Organization", "org"),
            new_field("owner_id", "Owner", "user"),
            new_field("expected_close_date", "Expected close date", "date"),
        ],
        "notes": [
            *system(),
            new_field("content", "Content", "text", required=True),
            new_field("deal_id", "Deal", "deal"),
            new_field("person_id", "Person", "people"),
            new_field("org_id", "Organization", "org"),
            new_field("lead_id", "Lead", "lead"),
            new_field("user_id", "User", "user", read_only=True),
        ],
    }


def custom_key() -> str:
    """A custom field's API key: a 40-character hash, as Pipedrive makes them."""
    return secrets.token_hex(20)
