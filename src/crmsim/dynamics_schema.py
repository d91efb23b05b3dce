"""The tables of a simulated Dataverse organisation: their attributes, lookups and the metadata the
Web API's ``EntityDefinitions`` serves for them (a subset of the real standard tables' columns,
with their real logical names, types and navigation properties)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

# AttributeType -> the metadata's @odata.type suffix and the Edm type of record values.
ATTRIBUTE_KINDS = {
    "String": ("StringAttributeMetadata", "Edm.String"),
    "Memo": ("MemoAttributeMetadata", "Edm.String"),
    "Integer": ("IntegerAttributeMetadata", "Edm.Int32"),
    "Decimal": ("DecimalAttributeMetadata", "Edm.Decimal"),
    "Double": ("DoubleAttributeMetadata", "Edm.Double"),
    "Money": ("MoneyAttributeMetadata", "Edm.Decimal"),
    "Boolean": ("BooleanAttributeMetadata", "Edm.Boolean"),
    "DateTime": ("DateTimeAttributeMetadata", "Edm.DateTimeOffset"),
    "Picklist": ("PicklistAttributeMetadata", "Edm.Int32"),
    "State": ("StateAttributeMetadata", "Edm.Int32"),
    "Status": ("StatusAttributeMetadata", "Edm.Int32"),
    "Uniqueidentifier": ("UniqueIdentifierAttributeMetadata", "Edm.Guid"),
    "Lookup": ("LookupAttributeMetadata", "Edm.Guid"),
    "Customer": ("LookupAttributeMetadata", "Edm.Guid"),
    "Owner": ("LookupAttributeMetadata", "Edm.Guid"),
}


def metadata_id(*parts: str) -> str:
    """A stable MetadataId for a table or column (real orgs have fixed GUIDs for these)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dataverse-sim:" + "/".join(parts)))


@dataclass
class Attr:
    name: str
    type: str = "String"  # an AttributeType of ATTRIBUTE_KINDS
    label: str = ""
    required: str = "None"  # RequiredLevel: None, ApplicationRequired, SystemRequired
    create: bool = True  # IsValidForCreate
    update: bool = True  # IsValidForUpdate
    custom: bool = False
    max_length: int = 100
    options: tuple[tuple[int, str], ...] = ()
    date_only: bool = False  # DateTime with DateOnly behaviour ("2024-05-31")
    # DateTime shown as a date (Format DateOnly) but with UserLocal behaviour: a date and time
    # is stored and read; only the DateTimeBehavior tells a date-only column
    date_format: bool = False
    targets: dict[str, str] = field(default_factory=dict)  # lookups: target -> navigation

    @property
    def is_lookup(self) -> bool:
        return self.type in ("Lookup", "Customer", "Owner")

    @property
    def edm(self) -> str:
        return ATTRIBUTE_KINDS[self.type][1]

    def describe(self, table: str) -> dict[str, Any]:
        kind = ATTRIBUTE_KINDS[self.type][0]
        label = self.label or self.name
        answer: dict[str, Any] = {
            "@odata.type": f"#Microsoft.Dynamics.CRM.{kind}",
            "MetadataId": metadata_id(table, self.name),
            "LogicalName": self.name,
            "SchemaName": self.name,
            "AttributeType": self.type,
            "AttributeTypeName": {"Value": f"{self.type}Type"},
            "EntityLogicalName": table,
            "IsCustomAttribute": self.custom,
            "IsPrimaryId": self.type == "Uniqueidentifier",
            "IsValidForCreate": self.create,
            "IsValidForUpdate": self.update,
            "IsValidForRead": True,
            "IsValidForAdvancedFind": {"Value": True, "CanBeChanged": False},
            "RequiredLevel": {"Value": self.required, "CanBeChanged": True},
            "DisplayName": _label(label),
            "Description": _label(""),
        }
        if self.type in ("String", "Memo"):
            answer["MaxLength"] = self.max_length
        if self.is_lookup:
            answer["Targets"] = list(self.targets)
        if self.type == "DateTime":
            shown = self.date_only or self.date_format
            answer["Format"] = "DateOnly" if shown else "DateAndTime"
            behavior = "DateOnly" if self.date_only else "UserLocal"
            answer["DateTimeBehavior"] = {"Value": behavior}
        return answer

    def option_set(self, table: str) -> dict[str, Any]:
        return {
            "MetadataId": metadata_id(table, self.name, "optionset"),
            "Name": f"{table}_{self.name}",
            "IsGlobal": False,
            "Options": [
                {"Value": value, "Label": _label(text), "Description": _label("")}
                for value, text in self.options
            ],
        }


def _label(text: str) -> dict[str, Any]:
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True}
    return {"LocalizedLabels": [localized] if text else [], "UserLocalizedLabel": localized}


@dataclass
class Table:
    logical: str
    entity_set: str
    primary_id: str
    primary_name: str
    label: str
    collection_label: str
    attrs: dict[str, Attr]
    custom: bool = False
    activity: bool = False

    @property
    def metadata_id(self) -> str:
        return metadata_id(self.logical)

    def navigation(self) -> dict[str, tuple[str, str]]:
        """Single-valued navigation property -> (lookup attribute, target table)."""
        return {nav: (a.name, t) for a in self.attrs.values() for t, nav in a.targets.items()}

    def definition(self) -> dict[str, Any]:
        return {
            "MetadataId": self.metadata_id,
            "LogicalName": self.logical,
            "SchemaName": self.logical.capitalize() if not self.custom else self.logical,
            "EntitySetName": self.entity_set,
            "PrimaryIdAttribute": self.primary_id,
            "PrimaryNameAttribute": self.primary_name,
            "DisplayName": _label(self.label),
            "DisplayCollectionName": _label(self.collection_label),
            "IsCustomEntity": self.custom,
            "IsActivity": self.activity,
            "IsPrivate": False,
            "IsValidForAdvancedFind": True,
            "OwnershipType": "UserOwned",
        }

    def relationships(self) -> list[dict[str, Any]]:
        """ManyToOneRelationships: one per lookup target, with its navigation property."""
        found = []
        for attr in self.attrs.values():
            for target, nav in attr.targets.items():
                name = f"{target}_{self.logical}_{attr.name}"
                found.append(
                    {
                        "MetadataId": metadata_id(self.logical, attr.name, target),
                        "SchemaName": name,
                        "ReferencedEntity": target,
                        "ReferencedAttribute": f"{target}id",
                        "ReferencingEntity": self.logical,
                        "ReferencingAttribute": attr.name,
                        "ReferencingEntityNavigationPropertyName": nav,
                        "ReferencedEntityNavigationPropertyName": name,
                        "RelationshipType": "OneToManyRelationship",
                        "IsCustomRelationship": attr.custom,
                    }
                )
        return found


def _common(primary_id: str) -> list[Attr]:
    return [
        Attr(primary_id, "Uniqueidentifier", "Id", create=True, update=False),
        Attr("createdon", "DateTime", "Created On", create=False, update=False),
        Attr("modifiedon", "DateTime", "Modified On", create=False, update=False),
        Attr(
            "statecode", "State", "Status", create=False, options=((0, "Active"), (1, "Inactive"))
        ),
        Attr("ownerid", "Owner", "Owner", targets={}),
    ]


def _address(prefix: str = "address1") -> list[Attr]:
    return [
        Attr(f"{prefix}_line1", label="Street 1", max_length=250),
        Attr(f"{prefix}_city", label="City", max_length=80),
        Attr(f"{prefix}_stateorprovince", label="State/Province", max_length=50),
        Attr(f"{prefix}_postalcode", label="ZIP/Postal Code", max_length=20),
        Attr(f"{prefix}_country", label="Country/Region", max_length=80),
    ]


def _regarding(activity: str) -> Attr:
    return Attr(
        "regardingobjectid",
        "Lookup",
        "Regarding",
        targets={
            t: f"regardingobjectid_{t}_{activity}"
            for t in ("account", "contact", "lead", "opportunity")
        },
    )


def _activity(logical: str, label: str, plural: str, *extra: Attr) -> Table:
    statuses = ((2, "Not Started"), (3, "In Progress"), (4, "Waiting"), (5, "Completed"))
    attrs = [
        *_common("activityid"),
        Attr("subject", label="Subject", required="ApplicationRequired", max_length=200),
        Attr("description", "Memo", "Description", max_length=2000),
        Attr("scheduledstart", "DateTime", "Start Date"),
        Attr("scheduledend", "DateTime", "Due Date"),
        Attr(
            "prioritycode", "Picklist", "Priority", options=((0, "Low"), (1, "Normal"), (2, "High"))
        ),
        Attr("statuscode", "Status", "Status Reason", options=statuses),
        _regarding(logical),
        *extra,
    ]
    return Table(
        logical,
        f"{logical}s",
        "activityid",
        "subject",
        label,
        plural,
        {a.name: a for a in attrs},
        activity=True,
    )


def standard_tables() -> dict[str, Table]:
    """logical name -> table, for the standard tables crmgate maps."""
    customer = {"account": "parentcustomerid_account", "contact": "parentcustomerid_contact"}
    tables = [
        Table(
            "account",
            "accounts",
            "accountid",
            "name",
            "Account",
            "Accounts",
            {
                a.name: a
                for a in [
                    *_common("accountid"),
                    Attr(
                        "name", label="Account Name", required="ApplicationRequired", max_length=160
                    ),
                    Attr("description", "Memo", "Description", max_length=2000),
                    Attr("telephone1", label="Main Phone", max_length=50),
                    Attr("telephone2", label="Other Phone", max_length=50),
                    Attr("emailaddress1", label="Email", max_length=100),
                    Attr("websiteurl", label="Website", max_length=200),
                    Attr("numberofemployees", "Integer", "Number of Employees"),
                    Attr("revenue", "Money", "Annual Revenue"),
                    Attr("tickersymbol", label="Ticker Symbol", max_length=10),
                    Attr("sic", label="SIC Code", max_length=20),
                    Attr(
                        "industrycode",
                        "Picklist",
                        "Industry",
                        options=((1, "Accounting"), (7, "Consulting"), (33, "Retail")),
                    ),
                    Attr(
                        "parentaccountid",
                        "Lookup",
                        "Parent Account",
                        targets={"account": "parentaccountid"},
                    ),
                    *_address(),
                ]
            },
        ),
        Table(
            "contact",
            "contacts",
            "contactid",
            "fullname",
            "Contact",
            "Contacts",
            {
                a.name: a
                for a in [
                    *_common("contactid"),
                    Attr("firstname", label="First Name", max_length=50),
                    Attr(
                        "lastname", label="Last Name", required="ApplicationRequired", max_length=50
                    ),
                    Attr("middlename", label="Middle Name", max_length=50),
                    Attr("fullname", label="Full Name", create=False, update=False, max_length=160),
                    Attr("salutation", label="Salutation", max_length=100),
                    Attr("jobtitle", label="Job Title", max_length=100),
                    Attr("department", label="Department", max_length=100),
                    Attr("description", "Memo", "Description", max_length=2000),
                    Attr("birthdate", "DateTime", "Birthday", date_only=True),
                    Attr("donotphone", "Boolean", "Do not allow Phone Calls"),
                    Attr("emailaddress1", label="Email", max_length=100),
                    Attr("emailaddress2", label="Email Address 2", max_length=100),
                    Attr("telephone1", label="Business Phone", max_length=50),
                    Attr("mobilephone", label="Mobile Phone", max_length=50),
                    Attr("websiteurl", label="Website", max_length=200),
                    Attr("parentcustomerid", "Customer", "Company Name", targets=customer),
                    *_address(),
                ]
            },
        ),
        Table(
            "lead",
            "leads",
            "leadid",
            "fullname",
            "Lead",
            "Leads",
            {
                a.name: a
                for a in [
                    *_common("leadid"),
                    Attr("subject", label="Topic", max_length=300),
                    Attr("firstname", label="First Name", max_length=50),
                    Attr(
                        "lastname", label="Last Name", required="ApplicationRequired", max_length=50
                    ),
                    Attr("fullname", label="Name", create=False, update=False, max_length=160),
                    Attr("companyname", label="Company Name", max_length=100),
                    Attr("jobtitle", label="Job Title", max_length=100),
                    Attr("description", "Memo", "Description", max_length=2000),
                    Attr("emailaddress1", label="Email", max_length=100),
                    Attr("telephone1", label="Business Phone", max_length=50),
                    Attr("mobilephone", label="Mobile Phone", max_length=50),
                    Attr("websiteurl", label="Website", max_length=200),
                    Attr("revenue", "Money", "Annual Revenue"),
                    Attr(
                        "statuscode",
                        "Status",
                        "Status Reason",
                        options=((1, "New"), (2, "Contacted"), (3, "Qualified"), (4, "Lost")),
                    ),
                    Attr(
                        "leadsourcecode",
                        "Picklist",
                        "Lead Source",
                        options=((1, "Advertisement"), (4, "Other"), (8, "Web")),
                    ),
                    Attr(
                        "leadqualitycode",
                        "Picklist",
                        "Rating",
                        options=((1, "Hot"), (2, "Warm"), (3, "Cold")),
                    ),
                    Attr(
                        "parentaccountid",
                        "Lookup",
                        "Parent Account for lead",
                        targets={"account": "parentaccountid"},
                    ),
                    Attr(
                        "parentcontactid",
                        "Lookup",
                        "Parent Contact for lead",
                        targets={"contact": "parentcontactid"},
                    ),
                    *_address(),
                ]
            },
        ),
        Table(
            "opportunity",
            "opportunities",
            "opportunityid",
            "name",
            "Opportunity",
            "Opportunities",
            {
                a.name: a
                for a in [
                    *_common("opportunityid"),
                    Attr("name", label="Topic", required="ApplicationRequired", max_length=300),
                    Attr("description", "Memo", "Description", max_length=2000),
                    Attr("estimatedvalue", "Money", "Est. Revenue"),
                    Attr("closeprobability", "Integer", "Probability"),
                    Attr("estimatedclosedate", "DateTime", "Est. Close Date", date_only=True),
                    Attr("stepname", label="Pipeline Phase", max_length=200),
                    Attr(
                        "parentaccountid",
                        "Lookup",
                        "Account",
                        targets={"account": "parentaccountid"},
                    ),
                    Attr(
                        "parentcontactid",
                        "Lookup",
                        "Contact",
                        targets={"contact": "parentcontactid"},
                    ),
                ]
            },
        ),
        _activity("task", "Task", "Tasks"),
        _activity(
            "phonecall",
            "Phone Call",
            "Phone Calls",
            Attr("phonenumber", label="Phone Number", max_length=200),
            Attr("directioncode", "Boolean", "Direction"),
        ),
        _activity(
            "appointment",
            "Appointment",
            "Appointments",
            Attr("location", label="Location", max_length=200),
            Attr("isalldayevent", "Boolean", "All Day Event"),
        ),
        Table(
            "annotation",
            "annotations",
            "annotationid",
            "subject",
            "Note",
            "Notes",
            {
                a.name: a
                for a in [
                    *_common("annotationid"),
                    Attr("subject", label="Title", max_length=500),
                    Attr("notetext", "Memo", "Description", max_length=100_000),
                    Attr(
                        "objectid",
                        "Lookup",
                        "Regarding",
                        targets={
                            t: f"objectid_{t}"
                            for t in ("account", "contact", "lead", "opportunity")
                        },
                    ),
                ]
            },
        ),
        Table(
            "systemuser",
            "systemusers",
            "systemuserid",
            "fullname",
            "User",
            "Users",
            {
                a.name: a
                for a in [
                    *_common("systemuserid"),
                    Attr("firstname", label="First Name", max_length=64),
                    Attr("lastname", label="Last Name", max_length=64),
                    Attr("fullname", label="Full Name", create=False, update=False, max_length=200),
                    Attr(
                        "domainname", label="User Name", required="SystemRequired", max_length=1024
                    ),
                    Attr("internalemailaddress", label="Primary Email", max_length=100),
                    Attr("title", label="Title", max_length=128),
                    Attr("mobilephone", label="Mobile Phone", max_length=64),
                    Attr("address1_telephone1", label="Main Phone", max_length=64),
                    Attr("isdisabled", "Boolean", "Status", create=False),
                ]
            },
        ),
    ]
    return {table.logical: table for table in tables}
