"""The simulated org's sObjects: standard objects with the fields crmgate maps, as describe shows
them (names, types, required, picklists, references), plus custom objects added at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SField:
    name: str
    type: str = "string"  # Salesforce field types: id, string, textarea, email, phone, url,
    # picklist, boolean, int, double, currency, percent, date, datetime, reference, base64
    label: str = ""
    required: bool = False  # nillable False and not defaulted on create
    createable: bool = True
    updateable: bool = True
    default: Any = None
    picklist: tuple[str, ...] = ()
    reference_to: tuple[str, ...] = ()
    custom: bool = False
    length: int = 255

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "length": self.length
            if self.type in ("string", "textarea", "email", "phone", "url", "picklist")
            else 0,
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
                for value in self.picklist
            ],
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2]
            if self.type == "reference" and self.name.endswith("Id")
            else None,
        }


SYSTEM_FIELDS = ("Id", "OwnerId", "CreatedDate", "LastModifiedDate", "SystemModstamp", "IsDeleted")


def _system() -> list[SField]:
    return [
        SField("Id", "id", "Record ID", createable=False, updateable=False, length=18),
        SField("OwnerId", "reference", "Owner ID", reference_to=("User",)),
        SField("IsDeleted", "boolean", "Deleted", createable=False, updateable=False),
        SField("CreatedDate", "datetime", "Created Date", createable=False, updateable=False),
        SField(
            "LastModifiedDate", "datetime", "Last Modified Date", createable=False, updateable=False
        ),
        SField("SystemModstamp", "datetime", "System Modstamp", createable=False, updateable=False),
    ]


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

    def add_field(self, spec: SField) -> None:
        """A custom field (``Name__c``) added to the object, as an admin would in Setup."""
        self.fields.append(spec)
        self.by_lower[spec.name.lower()] = spec

    def summary(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _picklist(
    name: str,
    values: tuple[str, ...],
    *,
    required: bool = False,
    default: str | None = None,
    label: str = "",
) -> SField:
    return SField(
        name,
        "picklist",
        label,
        required=required and default is None,
        default=default,
        picklist=values,
    )


STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)


def standard_objects() -> dict[str, SObject]:
    def address(prefix: str) -> list[SField]:
        return [
            SField(f"{prefix}Street", "textarea"),
            SField(f"{prefix}City"),
            SField(f"{prefix}State"),
            SField(f"{prefix}PostalCode", length=20),
            SField(f"{prefix}Country", length=80),
        ]

    objects = [
        SObject(
            "Account",
            "Account",
            "001",
            [
                SField("Name", required=True),
                _picklist("Industry", ("Agriculture", "Banking", "Technology", "Retail")),
                SField("Phone", "phone"),
                SField("Website", "url"),
                SField("Description", "textarea"),
                SField("AnnualRevenue", "currency"),
                SField("NumberOfEmployees", "int"),
                *address("Billing"),
            ],
        ),
        SObject(
            "Contact",
            "Contact",
            "003",
            [
                SField("FirstName", length=40),
                SField("LastName", required=True, length=80),
                SField("Email", "email"),
                SField("Phone", "phone"),
                SField("MobilePhone", "phone"),
                SField("Title", length=128),
                SField("Department", length=80),
                SField("Birthdate", "date"),
                SField("Description", "textarea"),
                SField("AccountId", "reference", "Account ID", reference_to=("Account",)),
                *address("Mailing"),
            ],
        ),
        SObject(
            "Lead",
            "Lead",
            "00Q",
            [
                SField("FirstName", length=40),
                SField("LastName", required=True, length=80),
                SField("Company", required=True),
                SField("Email", "email"),
                SField("Phone", "phone"),
                SField("Title", length=128),
                SField("Description", "textarea"),
                _picklist(
                    "Status",
                    (
                        "Open - Not Contacted",
                        "Working - Contacted",
                        "Closed - Converted",
                        "Closed - Not Converted",
                    ),
                    default="Open - Not Contacted",
                ),
                _picklist("LeadSource", ("Web", "Phone Inquiry", "Partner Referral", "Other")),
                *address(""),
            ],
        ),
        SObject(
            "Opportunity",
            "Opportunity",
            "006",
            [
                SField("Name", required=True, length=120),
                _picklist("StageName", STAGES, required=True),
                SField("CloseDate", "date", required=True),
                SField("Amount", "currency"),
                SField("Probability", "percent"),
                SField("Description", "textarea"),
                SField("AccountId", "reference", "Account ID", reference_to=("Account",)),
                _picklist("Type", ("New Customer", "Existing Customer - Upgrade")),
            ],
        ),
        SObject(
            "Task",
            "Task",
            "00T",
            [
                SField("Subject"),
                SField("ActivityDate", "date"),
                SField("Description", "textarea"),
                _picklist(
                    "Status", ("Not Started", "In Progress", "Completed"), default="Not Started"
                ),
                _picklist("Priority", ("High", "Normal", "Low"), default="Normal"),
                _picklist("TaskSubtype", ("Task", "Email", "Call"), default="Task"),
                _picklist("CallType", ("Internal", "Inbound", "Outbound")),
                SField("CallDisposition", label="Call Result"),
                SField("CallDurationInSeconds", "int", "Call Duration"),
                SField("WhoId", "reference", "Name ID", reference_to=("Contact", "Lead")),
                SField(
                    "WhatId",
                    "reference",
                    "Related To ID",
                    reference_to=("Account", "Opportunity", "Case"),
                ),
            ],
        ),
        SObject(
            "Event",
            "Event",
            "00U",
            [
                SField("Subject"),
                SField("StartDateTime", "datetime", required=True),
                SField("EndDateTime", "datetime", required=True),
                SField("Location"),
                SField("Description", "textarea"),
                SField("IsAllDayEvent", "boolean", default=False),
                SField("WhoId", "reference", "Name ID", reference_to=("Contact", "Lead")),
                SField(
                    "WhatId",
                    "reference",
                    "Related To ID",
                    reference_to=("Account", "Opportunity", "Case"),
                ),
            ],
        ),
        SObject(
            "Note",
            "Note",
            "002",
            [
                SField("Title", required=True, length=80),
                SField("Body", "textarea"),
                SField(
                    "ParentId",
                    "reference",
                    "Parent ID",
                    required=True,
                    reference_to=("Account", "Contact", "Opportunity", "Lead"),
                ),
                SField("IsPrivate", "boolean", default=False),
            ],
        ),
        SObject(
            "Case",
            "Case",
            "500",
            [
                SField("Subject"),
                SField("Description", "textarea"),
                _picklist("Status", ("New", "Working", "Escalated", "Closed"), default="New"),
                _picklist("Priority", ("High", "Medium", "Low"), default="Medium"),
                _picklist("Origin", ("Phone", "Email", "Web")),
                _picklist("Reason", ("Installation", "Performance", "Breakdown", "Other")),
                _picklist("Type", ("Mechanical", "Electrical", "Electronic", "Other")),
                SField("IsEscalated", "boolean", "Escalated", default=False),
                SField("IsClosed", "boolean", "Closed", createable=False, updateable=False),
                SField("ClosedDate", "datetime", "Closed Date", createable=False, updateable=False),
                SField("AccountId", "reference", "Account ID", reference_to=("Account",)),
                SField("ContactId", "reference", "Contact ID", reference_to=("Contact",)),
            ],
        ),
        SObject(
            "Campaign",
            "Campaign",
            "701",
            [
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
        ),
        SObject(
            "Product2",
            "Product",
            "01t",
            [
                SField("Name", required=True),
                SField("ProductCode"),
                SField("Description", "textarea"),
                SField("IsActive", "boolean", default=False),
                _picklist("Family", ("None",)),
                _picklist("QuantityUnitOfMeasure", ("Each", "Hour", "Licence")),
            ],
        ),
        SObject(
            "Pricebook2",
            "Price Book",
            "01s",
            [
                SField("Name", required=True),
                SField("IsActive", "boolean", default=False),
                SField("Description"),
                SField("IsStandard", "boolean", createable=False, updateable=False, default=False),
            ],
        ),
        SObject(
            "OpportunityLineItem",
            "Opportunity Product",
            "00k",
            [
                SField(
                    "OpportunityId",
                    "reference",
                    required=True,
                    reference_to=("Opportunity",),
                    updateable=False,
                ),
                SField(
                    "PricebookEntryId",
                    "reference",
                    reference_to=("PricebookEntry",),
                    updateable=False,
                ),
                SField("Product2Id", "reference", reference_to=("Product2",), updateable=False),
                SField("Name", createable=False, updateable=False, length=376),
                SField("Quantity", "double", required=True),
                SField("UnitPrice", "currency", "Sales Price"),
                SField("ListPrice", "currency", createable=False, updateable=False),
                SField("TotalPrice", "currency"),
                SField("Subtotal", "currency", createable=False, updateable=False),
                SField("Description"),
            ],
        ),
        SObject(
            "Attachment",
            "Attachment",
            "00P",
            [
                SField("Name", required=True),
                SField("Body", "base64", required=True),
                SField("ContentType", length=120),
                SField(
                    "ParentId",
                    "reference",
                    required=True,
                    reference_to=("Account", "Contact", "Opportunity", "Case"),
                ),
                SField("Description", "textarea"),
                SField("IsPrivate", "boolean", default=False),
            ],
        ),
        SObject(
            "User",
            "User",
            "005",
            [
                SField("Username", required=True, length=80),
                SField("FirstName", length=40),
                SField("LastName", required=True, length=80),
                SField("Name", createable=False, updateable=False),
                SField("Email", "email", required=True),
                SField("IsActive", "boolean", default=True),
                SField("Title"),
                SField("Department"),
                SField("Phone", "phone"),
            ],
            createable=False,
            updateable=False,
            deletable=False,
        ),
    ]
    return {obj.name: obj for obj in objects}
