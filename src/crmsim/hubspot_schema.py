"""HubSpot's CRM objects as its API documents them: the object types, their
HUBSPOT_DEFINED association types, and each object's standard properties as
``GET /crm/v3/properties/{type}`` describes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crmsim.columns import Column

SINGULAR = {
    "contacts": "contact",
    "companies": "company",
    "deals": "deal",
    "tasks": "task",
    "notes": "note",
    "calls": "call",
    "meetings": "meeting",
    "leads": "lead",
}
# HubSpot's HUBSPOT_DEFINED association types: (from, to) -> {type id: (label, inverse id)},
# each pair written one way (the other is derived below). Unlabelled types have no label; a
# primary company is labelled "Primary".
_ONE_WAY: dict[tuple[str, str], dict[int, tuple[str | None, int]]] = {
    ("contacts", "companies"): {279: (None, 280), 1: ("Primary", 2)},
    ("deals", "companies"): {341: (None, 342), 5: ("Primary", 6)},
    ("deals", "contacts"): {3: (None, 4)},
    ("notes", "contacts"): {202: (None, 201)},
    ("notes", "companies"): {190: (None, 189)},
    ("notes", "deals"): {214: (None, 213)},
    ("tasks", "contacts"): {204: (None, 203)},
    ("tasks", "companies"): {192: (None, 191)},
    ("tasks", "deals"): {216: (None, 215)},
    ("calls", "contacts"): {194: (None, 193)},
    ("calls", "companies"): {182: (None, 181)},
    ("calls", "deals"): {206: (None, 205)},
    ("meetings", "contacts"): {200: (None, 199)},
    ("meetings", "companies"): {188: (None, 187)},
    ("meetings", "deals"): {212: (None, 211)},
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
ADDRESS = ("address", "city", "state", "zip", "country")


@dataclass
class Prop(Column):
    """A property; its ``type`` is string, number, date, datetime, enumeration or bool."""

    @property
    def field_type(self) -> str:
        return {
            "number": "number",
            "date": "date",
            "datetime": "date",
            "enumeration": "select",
            "bool": "booleancheckbox",
        }.get(self.type, "text")

    def describe(self, object_type: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "fieldType": self.field_type,
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


def standard_properties() -> dict[str, dict[str, Prop]]:
    def props(
        *items: Prop, created: str = "createdate", modified: str = "hs_lastmodifieddate"
    ) -> dict[str, Prop]:
        return {p.name: p for p in (*system_properties(created, modified), *items)}

    engagement = {"created": "hs_createdate", "modified": "hs_lastmodifieddate"}
    return {
        "contacts": props(
            Prop("firstname", label="First Name"),
            Prop("lastname", label="Last Name"),
            Prop("email", label="Email"),
            Prop("phone", label="Phone Number"),
            Prop("mobilephone", label="Mobile Phone Number"),
            Prop("jobtitle", label="Job Title"),
            Prop("company", label="Company Name"),
            Prop("website", label="Website URL"),
            *map(Prop, ADDRESS),
            Prop(
                "lifecyclestage",
                "enumeration",
                "Lifecycle Stage",
                ("subscriber", "lead", "marketingqualifiedlead", "opportunity", "customer"),
            ),
            modified="lastmodifieddate",
        ),
        "companies": props(
            Prop("name", label="Company name"),
            Prop("domain", label="Company Domain Name"),
            Prop("phone", label="Phone Number"),
            Prop("description", label="Description"),
            Prop("industry", "enumeration", "Industry", ("COMPUTER_SOFTWARE", "RETAIL", "FARMING")),
            Prop("numberofemployees", "number", "Number of Employees"),
            Prop("annualrevenue", "number", "Annual Revenue"),
            *map(Prop, ADDRESS),
        ),
        "deals": props(
            Prop("dealname", label="Deal Name", required=True),
            Prop("amount", "number", "Amount"),
            Prop(
                "dealstage",
                "enumeration",
                "Deal Stage",
                ("appointmentscheduled", "qualifiedtobuy", "closedwon", "closedlost"),
                required=True,
            ),
            Prop("pipeline", "enumeration", "Pipeline", ("default",)),
            Prop("closedate", "datetime", "Close Date"),
            Prop("description", label="Deal Description"),
        ),
        "tasks": props(
            Prop("hs_task_subject", label="Task Title"),
            Prop("hs_task_body", label="Task notes"),
            Prop(
                "hs_task_status",
                "enumeration",
                "Task Status",
                ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"),
            ),
            Prop("hs_task_priority", "enumeration", "Priority", ("LOW", "MEDIUM", "HIGH")),
            Prop("hs_timestamp", "datetime", "Due date", required=True),
            **engagement,
        ),
        "notes": props(
            Prop("hs_note_body", label="Note body"),
            Prop("hs_timestamp", "datetime", "Activity date", required=True),
            **engagement,
        ),
        "calls": props(
            Prop("hs_call_title", label="Call Title"),
            Prop("hs_call_body", label="Call notes"),
            Prop("hs_call_direction", "enumeration", "Call direction", ("INBOUND", "OUTBOUND")),
            Prop(
                "hs_call_status",
                "enumeration",
                "Call status",
                ("COMPLETED", "BUSY", "NO_ANSWER", "FAILED", "CANCELED"),
            ),
            Prop("hs_timestamp", "datetime", "Activity date", required=True),
            **engagement,
        ),
        "meetings": props(
            Prop("hs_meeting_title", label="Meeting name"),
            Prop("hs_meeting_body", label="Meeting description"),
            Prop("hs_meeting_location", label="Location"),
            Prop("hs_meeting_start_time", "datetime", "Start time"),
            Prop("hs_meeting_end_time", "datetime", "End time"),
            Prop("hs_timestamp", "datetime", "Activity date", required=True),
            **engagement,
        ),
        "leads": props(
            Prop("hs_lead_name", label="Lead name", required=True),
            Prop(
                "hs_lead_type",
                "enumeration",
                "Lead type",
                ("NEW_BUSINESS", "UPSELL", "RE_ATTEMPTING"),
            ),
            Prop("hs_lead_label", "enumeration", "Lead label", ("COLD", "WARM", "HOT")),
            Prop("hs_pipeline", "enumeration", "Pipeline", ("lead-pipeline-id",)),
            Prop(
                "hs_pipeline_stage",
                "enumeration",
                "Lead stage",
                (
                    "new-stage-id",
                    "attempting-stage-id",
                    "connected-stage-id",
                    "qualified-stage-id",
                    "unqualified-stage-id",
                ),
            ),
            **engagement,
        ),
    }
