"""The modules and fields of the simulated Zoho CRM org (API names and data types as Zoho's own
fields metadata names them), and their rendering by GET /crm/v8/settings/fields and /modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crmsim.columns import Column

# data_type -> json_type, as Zoho's fields metadata pairs them
_JSON_TYPES = {
    "integer": "integer",
    "bigint": "string",
    "double": "double",
    "currency": "double",
    "boolean": "boolean",
    "lookup": "jsonobject",
    "ownerlookup": "jsonobject",
}


@dataclass
class ZField(Column):
    """A field; ``type`` is Zoho's data_type: text textarea email phone website picklist
    integer double currency date datetime boolean lookup ownerlookup bigint."""

    type: str = "text"
    lookup: tuple[str, ...] = ()  # the module(s) a lookup points to (several: What_Id)
    length: int = 255

    def describe(self, number: int) -> dict[str, Any]:
        label = self.label or self.name.replace("_", " ")
        writable = not self.read_only
        answer: dict[str, Any] = {
            "api_name": self.name,
            "field_label": label,
            "display_label": label,
            "data_type": self.type,
            "json_type": _JSON_TYPES.get(self.type, "string"),
            "custom_field": self.custom,
            "read_only": self.read_only,
            "field_read_only": self.read_only,
            "system_mandatory": self.required,
            "visible": True,
            "length": self.length,
            "id": f"5725767000000{number:06d}",
            "sortable": self.type not in ("textarea", "lookup", "ownerlookup"),
            "pick_list_values": [
                {
                    "display_value": option,
                    "actual_value": option,
                    "reference_value": option,
                    "sequence_number": index + 1,
                    "type": "used",
                    "id": f"5725767000001{number:03d}{index:03d}",
                }
                for index, option in enumerate(self.options)
            ],
            "lookup": {},
            "operation_type": {
                **dict.fromkeys(("web_update", "api_create", "web_create", "api_update"), writable),
                "api_read": True,
            },
        }
        if self.lookup and len(self.lookup) == 1:
            answer["lookup"] = {
                "display_label": self.lookup[0],
                "api_name": self.name,
                "module": {"api_name": self.lookup[0], "id": _module_id(self.lookup[0])},
                "id": f"5725767000002{number:06d}",
            }
        elif self.lookup:
            answer["multi_module_lookup"] = {
                "modules": [{"api_name": m, "id": _module_id(m)} for m in self.lookup]
            }
        return answer


def _module_id(name: str) -> str:
    return f"5725767000000{sum(name.encode()) % 100_000:06d}"


@dataclass
class Module:
    api_name: str
    singular: str
    display_field: str  # the field whose value is a lookup's "name"
    fields: dict[str, ZField] = field(default_factory=dict)
    custom: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "api_name": self.api_name,
            "module_name": self.api_name,
            "singular_label": self.singular,
            "plural_label": self.api_name.replace("_", " "),
            "generated_type": "custom" if self.custom else "default",
            "api_supported": True,
            "creatable": True,
            "editable": True,
            "deletable": True,
            "viewable": True,
            "status": "visible",
            "visibility": 1,
            "id": _module_id(self.api_name),
            "sequence_number": 1,
        }

    def describe_fields(self) -> list[dict[str, Any]]:
        return [zfield.describe(number) for number, zfield in enumerate(self.fields.values())]


def _system() -> list[ZField]:
    return [
        ZField("id", "bigint", "Record Id", read_only=True),
        ZField("Owner", "ownerlookup", "Owner", lookup=("users",)),
        ZField("Created_Time", "datetime", "Created Time", read_only=True),
        ZField("Modified_Time", "datetime", "Modified Time", read_only=True),
        ZField("Created_By", "ownerlookup", "Created By", read_only=True, lookup=("users",)),
        ZField("Modified_By", "ownerlookup", "Modified By", read_only=True, lookup=("users",)),
    ]


LEAD_SOURCES = ("Advertisement", "Cold Call", "Employee Referral", "Web Download", "Trade Show")
ACTIVITY_PARENTS = ("Accounts", "Deals", "Leads")
INDUSTRIES = ("Technology", "Retail", "Farming")
STAGES = (
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
TASK_STATES = ("Not Started", "Deferred", "In Progress", "Completed", "Waiting for input")


def _texts(*names: str, prefix: str = "") -> list[ZField]:
    """Text fields labelled by their names (``Mailing_City``: "Mailing City")."""
    return [ZField(prefix + name) for name in names]


def standard_modules() -> dict[str, Module]:
    def module(name: str, singular: str, display: str, *fields: ZField) -> Module:
        return Module(name, singular, display, {f.name: f for f in (*_system(), *fields)})

    # the fields several modules have alike
    description = ZField("Description", "textarea", length=32000)
    lead_source = ZField("Lead_Source", "picklist", "Lead Source", options=LEAD_SOURCES)
    industry = ZField("Industry", "picklist", options=INDUSTRIES)
    revenue = ZField("Annual_Revenue", "currency", "Annual Revenue")
    account = ZField("Account_Name", "lookup", "Account Name", lookup=("Accounts",))
    who = ZField("Who_Id", "lookup", "Contact Name", lookup=("Contacts",))
    what = ZField("What_Id", "lookup", "Related To", lookup=ACTIVITY_PARENTS)
    person = (
        ZField("First_Name", label="First Name", length=40),
        ZField("Last_Name", label="Last Name", required=True, length=80),
        ZField("Full_Name", label="Full Name", read_only=True),
        ZField("Email", "email"),
        ZField("Phone", "phone"),
        ZField("Mobile", "phone"),
        description,
        lead_source,
    )
    lead_states = ("Not Contacted", "Attempted to Contact", "Contacted", "Junk Lead")
    account_types = ("Analyst", "Competitor", "Customer", "Partner", "Prospect")
    priorities = ("High", "Highest", "Low", "Lowest", "Normal")
    call_purposes = ("Prospecting", "Administrative", "Negotiation", "Demo")
    call_types = ("Outbound", "Inbound", "Missed")
    note_parents = (*ACTIVITY_PARENTS, "Contacts")
    return {
        m.api_name: m
        for m in (
            module(
                "Leads",
                "Lead",
                "Full_Name",
                *person,
                ZField("Company", length=200),
                ZField("Designation", label="Title"),
                ZField("Website", "website"),
                ZField("Lead_Status", "picklist", "Lead Status", options=lead_states),
                industry,
                revenue,
                ZField("No_of_Employees", "integer", "No. of Employees"),
                *_texts("Street", "City", "State", "Zip_Code", "Country"),
            ),
            module(
                "Contacts",
                "Contact",
                "Full_Name",
                *person,
                *_texts("Title", "Department"),
                ZField("Home_Phone", "phone", "Home Phone"),
                ZField("Date_of_Birth", "date", "Date of Birth"),
                *_texts("Street", "City", "State", "Zip", "Country", prefix="Mailing_"),
                account,
                ZField("Email_Opt_Out", "boolean", "Email Opt Out"),
            ),
            module(
                "Accounts",
                "Account",
                "Account_Name",
                ZField("Account_Name", label="Account Name", required=True, length=200),
                ZField("Phone", "phone"),
                ZField("Website", "website"),
                description,
                revenue,
                ZField("Employees", "integer"),
                industry,
                ZField("Account_Type", "picklist", "Account Type", options=account_types),
                *_texts("Street", "City", "State", "Code", "Country", prefix="Billing_"),
                ZField("Parent_Account", "lookup", "Parent Account", lookup=("Accounts",)),
            ),
            module(
                "Deals",
                "Deal",
                "Deal_Name",
                ZField("Deal_Name", label="Deal Name", required=True, length=120),
                ZField("Amount", "currency"),
                ZField("Stage", "picklist", required=True, options=STAGES),
                ZField("Closing_Date", "date", "Closing Date", required=True),
                ZField("Probability", "integer", "Probability (%)"),
                ZField("Type", "picklist", options=("Existing Business", "New Business")),
                lead_source,
                ZField("Next_Step", label="Next Step"),
                description,
                account,
                ZField("Contact_Name", "lookup", "Contact Name", lookup=("Contacts",)),
            ),
            module(
                "Tasks",
                "Task",
                "Subject",
                ZField("Subject", required=True),
                ZField("Due_Date", "date", "Due Date"),
                ZField("Status", "picklist", options=TASK_STATES),
                ZField("Priority", "picklist", options=priorities),
                description,
                who,
                what,
                ZField("Closed_Time", "datetime", "Closed Time", read_only=True),
            ),
            module(
                "Calls",
                "Call",
                "Subject",
                ZField("Subject", required=True),
                ZField("Call_Type", "picklist", "Call Type", required=True, options=call_types),
                ZField("Call_Start_Time", "datetime", "Call Start Time", required=True),
                ZField("Call_Duration", label="Call Duration"),
                ZField("Call_Purpose", "picklist", "Call Purpose", options=call_purposes),
                ZField("Call_Result", label="Call Result"),
                description,
                who,
                what,
            ),
            module(
                "Events",
                "Meeting",
                "Event_Title",
                ZField("Event_Title", label="Title", required=True),
                ZField("Start_DateTime", "datetime", "From", required=True),
                ZField("End_DateTime", "datetime", "To", required=True),
                ZField("Venue"),
                ZField("All_day", "boolean", "All day"),
                description,
                who,
                what,
            ),
            module(
                "Notes",
                "Note",
                "Note_Title",
                ZField("Note_Title", label="Note Title"),
                ZField("Note_Content", "textarea", "Note Content", required=True, length=32000),
                ZField("Parent_Id", "lookup", "Parent ID", required=True, lookup=note_parents),
            ),
        )
    }
