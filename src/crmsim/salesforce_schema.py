"""The simulated org's sObjects: standard objects with the fields crmgate maps, as describe shows
them (names, types, required, picklists, references), plus custom objects added at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crmsim.columns import Column

_SIZED = ("string", "textarea", "email", "phone", "url", "picklist")  # types with a length


@dataclass
class SField(Column):
    """A field; ``type`` is Salesforce's (id, string, textarea, email, phone, url, picklist,
    boolean, int, double, currency, percent, date, datetime, reference, base64), ``options`` a
    picklist's values, ``required`` nillable False and not defaulted on create."""

    createable: bool = True
    updateable: bool = True
    default: Any = None
    reference_to: tuple[str, ...] = ()
    length: int = 255

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "length": self.length if self.type in _SIZED else 0,
            "nillable": not self.required and self.type != "boolean",
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.default is not None or self.name in SYSTEM_FIELDS,
            "defaultValue": self.default,
            "custom": self.custom,
            "unique": self.name == "Id",
            "calculated": False,
            "filterable": True,
            "sortable": self.type not in ("textarea", "base64"),
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.default,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.options
            ],
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2]
            if self.type == "reference" and self.name.endswith("Id")
            else None,
        }


def _fixed(name: str, type: str = "string", label: str = "", **extra: Any) -> SField:
    """A field Salesforce sets itself: neither createable nor updateable."""
    return SField(name, type, label, createable=False, updateable=False, **extra)


def _ref(name: str, label: str, *targets: str, **extra: Any) -> SField:
    return SField(name, "reference", label, reference_to=targets, **extra)


def _picklist(
    name: str, values: tuple[str, ...], default: str | None = None, *, required: bool = False
) -> SField:
    return SField(name, "picklist", options=values, default=default, required=required)


def _system() -> list[SField]:
    return [
        _fixed("Id", "id", "Record ID", length=18),
        _ref("OwnerId", "Owner ID", "User"),
        _fixed("IsDeleted", "boolean", "Deleted"),
        _fixed("CreatedDate", "datetime", "Created Date"),
        _fixed("LastModifiedDate", "datetime", "Last Modified Date"),
        _fixed("SystemModstamp", "datetime", "System Modstamp"),
    ]


SYSTEM_FIELDS = tuple(spec.name for spec in _system())


@dataclass
class SObject:
    name: str
    label: str
    key_prefix: str
    fields: list[SField]
    custom: bool = False
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    by_lower: dict[str, SField] = field(init=False)

    def __post_init__(self) -> None:
        self.fields = _system() + self.fields
        self.by_lower = {f.name.lower(): f for f in self.fields}

    def field(self, name: str) -> SField | None:
        return self.by_lower.get(name.lower())

    def spelled(self, name: str) -> str:
        """A field's name as the object spells it (names are case-insensitive)."""
        spec = self.field(name)
        return spec.name if spec is not None else name

    def add_field(self, spec: SField) -> None:
        """A custom field (``Name__c``) added to the object, as an admin would in Setup."""
        self.fields.append(spec)
        self.by_lower[spec.name.lower()] = spec

    def summary(self, version: str, writable: bool = True) -> dict[str, Any]:
        """The object as describeGlobal lists it; a describe says too what its user (not
        ``writable``: a read-only profile) may not do."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "createable": self.createable and writable,
            "updateable": self.updateable and writable,
            "deletable": self.deletable and writable,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)


def _address(prefix: str) -> list[SField]:
    return [
        SField(f"{prefix}Street", "textarea"),
        SField(f"{prefix}City"),
        SField(f"{prefix}State"),
        SField(f"{prefix}PostalCode", length=20),
        SField(f"{prefix}Country", length=80),
    ]


def _activity() -> list[SField]:
    """What a task or an event is about: a person (WhoId) and a record (WhatId)."""
    return [
        _ref("WhoId", "Name ID", "Contact", "Lead"),
        _ref("WhatId", "Related To ID", "Account", "Opportunity", "Case"),
    ]


def standard_objects() -> dict[str, SObject]:
    table: dict[tuple[str, str, str], list[SField]] = {  # name, label, key prefix: fields
        ("Account", "Account", "001"): [
            SField("Name", required=True),
            _picklist("Industry", ("Agriculture", "Banking", "Technology", "Retail")),
            SField("Phone", "phone"),
            SField("Website", "url"),
            SField("Description", "textarea"),
            SField("AnnualRevenue", "currency"),
            SField("NumberOfEmployees", "int"),
            *_address("Billing"),
        ],
        ("Contact", "Contact", "003"): [
            SField("FirstName", length=40),
            SField("LastName", required=True, length=80),
            SField("Email", "email"),
            SField("Phone", "phone"),
            SField("MobilePhone", "phone"),
            SField("Title", length=128),
            SField("Department", length=80),
            SField("Birthdate", "date"),
            SField("Description", "textarea"),
            _ref("AccountId", "Account ID", "Account"),
            *_address("Mailing"),
        ],
        ("Lead", "Lead", "00Q"): [
            SField("FirstName", length=40),
            SField("LastName", required=True, length=80),
            SField("Company", required=True),
            SField("Email", "email"),
            SField("Phone", "phone"),
            SField("Title", length=128),
            SField("Description", "textarea"),
            _picklist("Status", LEAD_STATUSES, LEAD_STATUSES[0]),
            _picklist("LeadSource", ("Web", "Phone Inquiry", "Partner Referral", "Other")),
            *_address(""),
        ],
        ("Opportunity", "Opportunity", "006"): [
            SField("Name", required=True, length=120),
            _picklist("StageName", STAGES, required=True),
            SField("CloseDate", "date", required=True),
            SField("Amount", "currency"),
            SField("Probability", "percent"),
            SField("Description", "textarea"),
            _ref("AccountId", "Account ID", "Account"),
            _picklist("Type", ("New Customer", "Existing Customer - Upgrade")),
        ],
        ("Task", "Task", "00T"): [
            SField("Subject"),
            SField("ActivityDate", "date"),
            SField("Description", "textarea"),
            _picklist("Status", ("Not Started", "In Progress", "Completed"), "Not Started"),
            _picklist("Priority", ("High", "Normal", "Low"), "Normal"),
            _picklist("TaskSubtype", ("Task", "Email", "Call"), "Task"),
            _picklist("CallType", ("Internal", "Inbound", "Outbound")),
            SField("CallDisposition", label="Call Result"),
            SField("CallDurationInSeconds", "int", "Call Duration"),
            *_activity(),
        ],
        ("Event", "Event", "00U"): [
            SField("Subject"),
            SField("StartDateTime", "datetime", required=True),
            SField("EndDateTime", "datetime", required=True),
            SField("Location"),
            SField("Description", "textarea"),
            SField("IsAllDayEvent", "boolean", default=False),
            *_activity(),
        ],
        ("Note", "Note", "002"): [
            SField("Title", required=True, length=80),
            SField("Body", "textarea"),
            _ref(
                "ParentId", "Parent ID", "Account", "Contact", "Opportunity", "Lead", required=True
            ),
            SField("IsPrivate", "boolean", default=False),
        ],
        ("Case", "Case", "500"): [
            SField("Subject"),
            SField("Description", "textarea"),
            _picklist("Status", ("New", "Working", "Escalated", "Closed"), "New"),
            _picklist("Priority", ("High", "Medium", "Low"), "Medium"),
            _picklist("Origin", ("Phone", "Email", "Web")),
            _picklist("Reason", ("Installation", "Performance", "Breakdown", "Other")),
            _picklist("Type", ("Mechanical", "Electrical", "Electronic", "Other")),
            SField("IsEscalated", "boolean", "Escalated", default=False),
            _fixed("IsClosed", "boolean", "Closed"),
            _fixed("ClosedDate", "datetime", "Closed Date"),
            _ref("AccountId", "Account ID", "Account"),
            _ref("ContactId", "Contact ID", "Contact"),
        ],
        ("Campaign", "Campaign", "701"): [
            SField("Name", required=True, length=80),
            _picklist("Status", ("Planned", "In Progress", "Completed")),
            _picklist("Type", ("Conference", "Webinar", "Email")),
            SField("StartDate", "date"),
            SField("EndDate", "date"),
            SField("IsActive", "boolean", default=False),
            SField("Description", "textarea"),
            SField("BudgetedCost", "currency"),
            SField("ActualCost", "currency"),
            SField("ExpectedRevenue", "currency"),
            SField("ExpectedResponse", "percent"),
            SField("NumberSent", "double"),
        ],
        ("Product2", "Product", "01t"): [
            SField("Name", required=True),
            SField("ProductCode"),
            SField("Description", "textarea"),
            SField("IsActive", "boolean", default=False),
            _picklist("Family", ("None",)),
            _picklist("QuantityUnitOfMeasure", ("Each", "Hour", "Licence")),
        ],
        ("Pricebook2", "Price Book", "01s"): [
            SField("Name", required=True),
            SField("IsActive", "boolean", default=False),
            SField("Description"),
            _fixed("IsStandard", "boolean", default=False),
        ],
        ("OpportunityLineItem", "Opportunity Product", "00k"): [
            _ref("OpportunityId", "", "Opportunity", required=True, updateable=False),
            _ref("PricebookEntryId", "", "PricebookEntry", updateable=False),
            _ref("Product2Id", "", "Product2", updateable=False),
            _fixed("Name", length=376),
            SField("Quantity", "double", required=True),
            SField("UnitPrice", "currency", "Sales Price"),
            _fixed("ListPrice", "currency"),
            SField("TotalPrice", "currency"),
            _fixed("Subtotal", "currency"),
            SField("Description"),
        ],
        ("Attachment", "Attachment", "00P"): [
            SField("Name", required=True),
            SField("Body", "base64", required=True),
            SField("ContentType", length=120),
            _ref("ParentId", "", "Account", "Contact", "Opportunity", "Case", required=True),
            SField("Description", "textarea"),
            SField("IsPrivate", "boolean", default=False),
        ],
        ("User", "User", "005"): [
            SField("Username", required=True, length=80),
            SField("FirstName", length=40),
            SField("LastName", required=True, length=80),
            _fixed("Name"),
            SField("Email", "email", required=True),
            SField("IsActive", "boolean", default=True),
            SField("Title"),
            SField("Department"),
            SField("Phone", "phone"),
        ],
    }
    objects = {key[0]: SObject(*key, fields) for key, fields in table.items()}
    users = objects["User"]  # users are managed in Setup, not through the API
    users.createable = users.updateable = users.deletable = False
    return objects
