"""The modules and fields of the simulated Zoho CRM org (API names and data types as Zoho's own
fields metadata names them), and their rendering by GET /crm/v8/settings/fields and /modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
class ZField:
    api_name: str
    data_type: str = "text"  # text textarea email phone website picklist integer double currency
    #                          date datetime boolean lookup ownerlookup bigint
    label: str = ""
    required: bool = False
    read_only: bool = False
    custom: bool = False
    options: tuple[str, ...] = ()
    lookup: tuple[str, ...] = ()  # the module(s) a lookup points to (several: What_Id)
    length: int = 255

    def describe(self, number: int) -> dict[str, Any]:
        label = self.label or self.api_name.replace("_", " ")
        answer: dict[str, Any] = {
            "api_name": self.api_name,
            "field_label": label,
            "display_label": label,
            "data_type": self.data_type,
            "json_type": _JSON_TYPES.get(self.data_type, "string"),
            "custom_field": self.custom,
            "read_only": self.read_only,
            "field_read_only": self.read_only,
            "system_mandatory": self.required,
            "visible": True,
            "length": self.length,
            "id": f"5725767000000{number:06d}",
            "sortable": self.data_type not in ("textarea", "lookup", "ownerlookup"),
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
                "web_update": not self.read_only,
                "api_create": not self.read_only,
                "web_create": not self.read_only,
                "api_update": not self.read_only,
                "api_read": True,
            },
        }
        if self.lookup and len(self.lookup) == 1:
            answer["lookup"] = {
                "display_label": self.lookup[0],
                "api_name": self.api_name,
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


def standard_modules() -> dict[str, Module]:
    def module(name: str, singular: str, display: str, *fields: ZField) -> Module:
        return Module(name, singular, display, {f.api_name: f for f in (*_system(), *fields)})

    person = (
        ZField("First_Name", label="First Name", length=40),
        ZField("Last_Name", label="Last Name", required=True, length=80),
        ZField("Full_Name", label="Full Name", read_only=True),
        ZField("Email", "email"),
        ZField("Phone", "phone"),
        ZField("Mobile", "phone"),
        ZField("Description", "textarea", length=32000),
        ZField("Lead_Source", "picklist", "Lead Source", options=LEAD_SOURCES),
    )
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
                ZField(
                    "Lead_Status",
                    "picklist",
                    "Lead Status",
                    options=("Not Contacted", "Attempted to Contact", "Contacted", "Junk Lead"),
                ),
                ZField("Industry", "picklist", options=("Technology", "Retail", "Farming")),
                ZField("Annual_Revenue", "currency", "Annual Revenue"),
                ZField("No_of_Employees", "integer", "No. of Employees"),
                ZField("Street"),
                ZField("City"),
                ZField("State"),
                ZField("Zip_Code", label="Zip Code"),
                ZField("Country"),
            ),
            module(
                "Contacts",
                "Contact",
                "Full_Name",
                *person,
                ZField("Title"),
                ZField("Department"),
                ZField("Home_Phone", "phone", "Home Phone"),
                ZField("Date_of_Birth", "date", "Date of Birth"),
                ZField("Mailing_Street", label="Mailing Street"),
                ZField("Mailing_City", label="Mailing City"),
                ZField("Mailing_State", label="Mailing State"),
                ZField("Mailing_Zip", label="Mailing Zip"),
                ZField("Mailing_Country", label="Mailing Country"),
                ZField("Account_Name", "lookup", "Account Name", lookup=("Accounts",)),
                ZField("Email_Opt_Out", "boolean", "Email Opt Out"),
            ),
            module(
                "Accounts",
                "Account",
                "Account_Name",
                ZField("Account_Name", label="Account Name", required=True, length=200),
                ZField("Phone", "phone"),
                ZField("Website", "website"),
                ZField("Description", "textarea", length=32000),
                ZField("Annual_Revenue", "currency", "Annual Revenue"),
                ZField("Employees", "integer"),
                ZField("Industry", "picklist", options=("Technology", "Retail", "Farming")),
                ZField(
                    "Account_Type",
                    "picklist",
                    "Account Type",
                    options=("Analyst", "Competitor", "Customer", "Partner", "Prospect"),
                ),
                ZField("Billing_Street", label="Billing Street"),
                ZField("Billing_City", label="Billing City"),
                ZField("Billing_State", label="Billing State"),
                ZField("Billing_Code", label="Billing Code"),
                ZField("Billing_Country", label="Billing Country"),
                ZField("Parent_Account", "lookup", "Parent Account", lookup=("Accounts",)),
            ),
            module(
                "Deals",
                "Deal",
                "Deal_Name",
                ZField("Deal_Name", label="Deal Name", required=True, length=120),
                ZField("Amount", "currency"),
                ZField(
                    "Stage",
                    "picklist",
                    required=True,
                    options=(
                        "Qualification",
                        "Needs Analysis",
                        "Value Proposition",
                        "Proposal/Price Quote",
                        "Negotiation/Review",
                        "Closed Won",
                        "Closed Lost",
                    ),
                ),
                ZField("Closing_Date", "date", "Closing Date", required=True),
                ZField("Probability", "integer", "Probability (%)"),
                ZField("Type", "picklist", options=("Existing Business", "New Business")),
                ZField("Lead_Source", "picklist", "Lead Source", options=LEAD_SOURCES),
                ZField("Next_Step", label="Next Step"),
                ZField("Description", "textarea", length=32000),
                ZField("Account_Name", "lookup", "Account Name", lookup=("Accounts",)),
                ZField("Contact_Name", "lookup", "Contact Name", lookup=("Contacts",)),
            ),
            module(
                "Tasks",
                "Task",
                "Subject",
                ZField("Subject", required=True),
                ZField("Due_Date", "date", "Due Date"),
                ZField(
                    "Status",
                    "picklist",
                    options=(
                        "Not Started",
                        "Deferred",
                        "In Progress",
                        "Completed",
                        "Waiting for input",
                    ),
                ),
                ZField(
                    "Priority", "picklist", options=("High", "Highest", "Low", "Lowest", "Normal")
                ),
                ZField("Description", "textarea", length=32000),
                ZField("Who_Id", "lookup", "Contact Name", lookup=("Contacts",)),
                ZField("What_Id", "lookup", "Related To", lookup=ACTIVITY_PARENTS),
                ZField("Closed_Time", "datetime", "Closed Time", read_only=True),
            ),
            module(
                "Calls",
                "Call",
                "Subject",
                ZField("Subject", required=True),
                ZField(
                    "Call_Type",
                    "picklist",
                    "Call Type",
                    required=True,
                    options=("Outbound", "Inbound", "Missed"),
                ),
                ZField("Call_Start_Time", "datetime", "Call Start Time", required=True),
                ZField("Call_Duration", label="Call Duration"),
                ZField(
                    "Call_Purpose",
                    "picklist",
                    "Call Purpose",
                    options=("Prospecting", "Administrative", "Negotiation", "Demo"),
                ),
                ZField("Call_Result", label="Call Result"),
                ZField("Description", "textarea", length=32000),
                ZField("Who_Id", "lookup", "Contact Name", lookup=("Contacts",)),
                ZField("What_Id", "lookup", "Related To", lookup=ACTIVITY_PARENTS),
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
                ZField("Description", "textarea", length=32000),
                ZField("Who_Id", "lookup", "Contact Name", lookup=("Contacts",)),
                ZField("What_Id", "lookup", "Related To", lookup=ACTIVITY_PARENTS),
            ),
            module(
                "Notes",
                "Note",
                "Note_Title",
                ZField("Note_Title", label="Note Title"),
                ZField("Note_Content", "textarea", "Note Content", required=True, length=32000),
                ZField(
                    "Parent_Id",
                    "lookup",
                    "Parent ID",
                    required=True,
                    lookup=(*ACTIVITY_PARENTS, "Contacts"),
                ),
            ),
        )
    }
