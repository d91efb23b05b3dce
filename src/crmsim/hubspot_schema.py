"""HubSpot's CRM objects as its API documents them: the object types, their
HUBSPOT_DEFINED association types, and each object's standard properties as
``GET /crm/v3/properties/{type}`` describes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crmsim.columns import Column

OBJECTS = ("contacts", "companies", "deals", "tasks", "notes", "calls", "meetings", "leads")
SINGULAR = {name: "company" if name == "companies" else name[:-1] for name in OBJECTS}
PLURAL = {one: name for name, one in SINGULAR.items()}
# HubSpot's HUBSPOT_DEFINED association types: (from, to) -> {type id: (label, inverse id)},
# each pair written one way (the other is derived below). Unlabelled types have no label; a
# primary company is labelled "Primary".
_ONE_WAY: dict[tuple[str, str], dict[int, tuple[str | None, int]]] = {
    ("contacts", "companies"): {279: (None, 280), 1: ("Primary", 2)},
    ("deals", "companies"): {341: (None, 342), 5: ("Primary", 6)},
    ("deals", "contacts"): {3: (None, 4)},
    # an activity's types to a contact, a company and a deal (each inverse is one less)
    **{
        (activity, to): {kind: (None, kind - 1)}
        for activity, kinds in {
            "notes": (202, 190, 214),
            "tasks": (204, 192, 216),
            "calls": (194, 182, 206),
            "meetings": (200, 188, 212),
        }.items()
        for to, kind in zip(("contacts", "companies", "deals"), kinds, strict=True)
    },
    # A lead is created with its primary contact (578). The lead ids are HubSpot's; their
    # inverses (contact or company to lead) are this simulator's own numbers.
    ("leads", "contacts"): {608: (None, 90_608), 578: ("Primary", 90_578)},
    ("leads", "companies"): {610: (None, 90_610)},
}
ASSOCIATION_TYPES = {
    **_ONE_WAY,
    **{
        (to, start): {inverse: (label, kind) for kind, (label, inverse) in types.items()}
        for (start, to), types in _ONE_WAY.items()
    },
}
# each pair's unlabelled type, and the object type each type id leads to from an object
UNLABELLED = {
    pair: next(kind for kind, (label, _) in types.items() if not label)
    for pair, types in ASSOCIATION_TYPES.items()
}
LEADS_TO: dict[tuple[str, object], str] = {
    (start, kind): to for (start, to), types in ASSOCIATION_TYPES.items() for kind in types
}


# a property's type -> the fieldType it is shown with, and how its values compare and sort
# (a crmsim.records kind); text and text where not listed
_TYPES = {
    "number": ("number", "number"),
    "date": ("date", "datetime"),
    "datetime": ("date", "datetime"),
    "enumeration": ("select", "text"),
    "bool": ("booleancheckbox", "text"),
}


@dataclass
class Prop(Column):
    """A property; its ``type`` is string, number, date, datetime, enumeration or bool."""

    @property
    def kind(self) -> str:
        return _TYPES.get(self.type, ("text", "text"))[1]

    def describe(self, object_type: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "fieldType": _TYPES.get(self.type, ("text", "text"))[0],
            "groupName": f"{object_type[:-1]}information",
            "options": [
                {"label": o, "value": o, "displayOrder": i, "hidden": False}
                for i, o in enumerate(self.options)
            ],
            "hubspotDefined": not self.custom,
            "calculated": False,
            "hasUniqueValue": self.name == "hs_object_id",
            "modificationMetadata": {
                "archivable": True,
                "readOnlyDefinition": not self.custom,
                "readOnlyValue": self.read_only,
            },
        }


def system_properties(
    created: str = "createdate", modified: str = "hs_lastmodifieddate"
) -> list[Prop]:
    return [
        Prop("hs_object_id", "number", "Record ID", read_only=True),
        Prop(created, "datetime", "Create Date", read_only=True),
        Prop(modified, "datetime", "Last Modified Date", read_only=True),
    ]


# Each object's standard properties beside the system ones: (name, type, label, its options
# separated by spaces, "required" where a create must give it).
ADDRESS = tuple((name, "string", "") for name in ("address", "city", "state", "zip", "country"))
ACTIVITY_DATE = ("hs_timestamp", "datetime", "Activity date", "", "required")
_STANDARD: dict[str, tuple[tuple[str, ...], ...]] = {
    "contacts": (
        ("firstname", "string", "First Name"),
        ("lastname", "string", "Last Name"),
        ("email", "string", "Email"),
        ("phone", "string", "Phone Number"),
        ("mobilephone", "string", "Mobile Phone Number"),
        ("jobtitle", "string", "Job Title"),
        ("company", "string", "Company Name"),
        ("website", "string", "Website URL"),
        *ADDRESS,
        ("lifecyclestage", "enumeration", "Lifecycle Stage", "subscriber lead "
         "marketingqualifiedlead opportunity customer"),
    ),
    "companies": (
        ("name", "string", "Company name"),
        ("domain", "string", "Company Domain Name"),
        ("phone", "string", "Phone Number"),
        ("description", "string", "Description"),
        ("industry", "enumeration", "Industry", "COMPUTER_SOFTWARE RETAIL FARMING"),
        ("numberofemployees", "number", "Number of Employees"),
        ("annualrevenue", "number", "Annual Revenue"),
        *ADDRESS,
    ),
    "deals": (
        ("dealname", "string", "Deal Name", "", "required"),
        ("amount", "number", "Amount"),
        ("dealstage", "enumeration", "Deal Stage", "appointmentscheduled qualifiedtobuy "
         "closedwon closedlost", "required"),
        ("pipeline", "enumeration", "Pipeline", "default"),
        ("closedate", "datetime", "Close Date"),
        ("description", "string", "Deal Description"),
    ),
    "tasks": (
        ("hs_task_subject", "string", "Task Title"),
        ("hs_task_body", "string", "Task notes"),
        ("hs_task_status", "enumeration", "Task Status", "NOT_STARTED IN_PROGRESS WAITING "
         "COMPLETED DEFERRED"),
        ("hs_task_priority", "enumeration", "Priority", "LOW MEDIUM HIGH"),
        ("hs_timestamp", "datetime", "Due date", "", "required"),
    ),
    "notes": (("hs_note_body", "string", "Note body"), ACTIVITY_DATE),
    "calls": (
        ("hs_call_title", "string", "Call Title"),
        ("hs_call_body", "string", "Call notes"),
        ("hs_call_direction", "enumeration", "Call direction", "INBOUND OUTBOUND"),
        ("hs_call_status", "enumeration", "Call status", "COMPLETED BUSY NO_ANSWER FAILED "
         "CANCELED"),
        ACTIVITY_DATE,
    ),
    "meetings": (
        ("hs_meeting_title", "string", "Meeting name"),
        ("hs_meeting_body", "string", "Meeting description"),
        ("hs_meeting_location", "string", "Location"),
        ("hs_meeting_start_time", "datetime", "Start time"),
        ("hs_meeting_end_time", "datetime", "End time"),
        ACTIVITY_DATE,
    ),
    "leads": (
        ("hs_lead_name", "string", "Lead name", "", "required"),
        ("hs_lead_type", "enumeration", "Lead type", "NEW_BUSINESS UPSELL RE_ATTEMPTING"),
        ("hs_lead_label", "enumeration", "Lead label", "COLD WARM HOT"),
        ("hs_pipeline", "enumeration", "Pipeline", "lead-pipeline-id"),
        ("hs_pipeline_stage", "enumeration", "Lead stage", "new-stage-id attempting-stage-id "
         "connected-stage-id qualified-stage-id unqualified-stage-id"),
    ),
}  # fmt: skip
# Contacts say lastmodifieddate; the activities and leads (newer objects) hs_createdate.
_STAMPS = {"contacts": ("createdate", "lastmodifieddate")} | {
    name: ("hs_createdate", "hs_lastmodifieddate")
    for name in ("tasks", "notes", "calls", "meetings", "leads")
}


def _prop(name: str, kind: str, label: str, options: str = "", required: str = "") -> Prop:
    return Prop(name, kind, label, tuple(options.split()), required=required == "required")


def stamps(object_type: str) -> tuple[str, str]:
    """The names of an object's created and last-modified properties."""
    return _STAMPS.get(object_type, ("createdate", "hs_lastmodifieddate"))


def standard_properties() -> dict[str, dict[str, Prop]]:
    def props(name: str) -> list[Prop]:
        return [*system_properties(*stamps(name)), *(_prop(*spec) for spec in _STANDARD[name])]

    return {name: {p.name: p for p in props(name)} for name in OBJECTS}
