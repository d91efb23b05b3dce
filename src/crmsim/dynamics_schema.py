"""The tables of a simulated Dataverse organisation: their attributes, lookups and the metadata the
Web API's ``EntityDefinitions`` serves for them (a subset of the real standard tables' columns,
with their real logical names, types and navigation properties)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

# AttributeType -> the metadata's @odata.type suffix, the Edm type of record values, and the kind
# of JSON value a write takes (crmsim/records.py's; a lookup's is written with @odata.bind).
ATTRIBUTE_KINDS = {
    "String": ("StringAttributeMetadata", "Edm.String", "text"),
    "Memo": ("MemoAttributeMetadata", "Edm.String", "text"),
    "Integer": ("IntegerAttributeMetadata", "Edm.Int32", "integer"),
    "Decimal": ("DecimalAttributeMetadata", "Edm.Decimal", "number"),
    "Double": ("DoubleAttributeMetadata", "Edm.Double", "number"),
    "Money": ("MoneyAttributeMetadata", "Edm.Decimal", "number"),
    "Boolean": ("BooleanAttributeMetadata", "Edm.Boolean", "boolean"),
    "DateTime": ("DateTimeAttributeMetadata", "Edm.DateTimeOffset", "datetime"),
    "Picklist": ("PicklistAttributeMetadata", "Edm.Int32", "integer"),
    "State": ("StateAttributeMetadata", "Edm.Int32", "integer"),
    "Status": ("StatusAttributeMetadata", "Edm.Int32", "integer"),
    "Uniqueidentifier": ("UniqueIdentifierAttributeMetadata", "Edm.Guid", "text"),
    "Lookup": ("LookupAttributeMetadata", "Edm.Guid", ""),
    "Customer": ("LookupAttributeMetadata", "Edm.Guid", ""),
    "Owner": ("LookupAttributeMetadata", "Edm.Guid", ""),
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

    @property
    def value_kind(self) -> str:
        return ATTRIBUTE_KINDS[self.type][2]

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


# The shapes of column most tables repeat, each a line of the tables below.


def _text(name: str, label: str, length: int, required: str = "None") -> Attr:
    return Attr(name, "String", label, required, max_length=length)


def _memo(name: str, label: str, length: int = 2000) -> Attr:
    return Attr(name, "Memo", label, max_length=length)


def _computed(name: str, label: str, length: int) -> Attr:
    """A column Dataverse sets itself (a person's full name)."""
    return Attr(name, label=label, create=False, update=False, max_length=length)


def _choice(name: str, label: str, options: dict[int, str], kind: str = "Picklist") -> Attr:
    return Attr(name, kind, label, options=tuple(options.items()))


def _lookup(name: str, label: str, *targets: str, suffix: str = "", kind: str = "Lookup") -> Attr:
    """A lookup; its navigation property is its name where it has one target, else one per
    target (``parentcustomerid_account``, ``regardingobjectid_contact_task``)."""
    navs = {t: name if len(targets) == 1 else f"{name}_{t}{suffix}" for t in targets}
    return Attr(name, kind, label, targets=navs)


_RECORDS = ("account", "contact", "lead", "opportunity")  # what activities and notes regard


def _table(
    logical: str,
    entity_set: str,
    names: tuple[str, str],
    labels: tuple[str, str],
    *attrs: Attr,
    activity: bool = False,
) -> Table:
    """A standard table with the columns every one has (id, dates, state, owner) and ``attrs``:
    ``names`` are its primary id and name columns, ``labels`` its singular and plural."""
    primary_id = names[0]
    common = [
        Attr(primary_id, "Uniqueidentifier", "Id", create=True, update=False),
        Attr("createdon", "DateTime", "Created On", create=False, update=False),
        Attr("modifiedon", "DateTime", "Modified On", create=False, update=False),
        Attr(
            "statecode", "State", "Status", create=False, options=((0, "Active"), (1, "Inactive"))
        ),
        Attr("ownerid", "Owner", "Owner", targets={}),
    ]
    columns = {a.name: a for a in (*common, *attrs)}
    return Table(logical, entity_set, primary_id, names[1], *labels, columns, activity=activity)


def _address() -> list[Attr]:
    return [
        _text("address1_line1", "Street 1", 250),
        _text("address1_city", "City", 80),
        _text("address1_stateorprovince", "State/Province", 50),
        _text("address1_postalcode", "ZIP/Postal Code", 20),
        _text("address1_country", "Country/Region", 80),
    ]


def _activity(logical: str, label: str, plural: str, *extra: Attr) -> Table:
    statuses = {2: "Not Started", 3: "In Progress", 4: "Waiting", 5: "Completed"}
    return _table(
        logical,
        f"{logical}s",
        ("activityid", "subject"),
        (label, plural),
        _text("subject", "Subject", 200, "ApplicationRequired"),
        _memo("description", "Description"),
        Attr("scheduledstart", "DateTime", "Start Date"),
        Attr("scheduledend", "DateTime", "Due Date"),
        _choice("prioritycode", "Priority", {0: "Low", 1: "Normal", 2: "High"}),
        _choice("statuscode", "Status Reason", statuses, "Status"),
        _lookup("regardingobjectid", "Regarding", *_RECORDS, suffix=f"_{logical}"),
        *extra,
        activity=True,
    )


def standard_tables() -> dict[str, Table]:
    """logical name -> table, for the standard tables crmgate maps."""
    tables = [
        _table(
            "account",
            "accounts",
            ("accountid", "name"),
            ("Account", "Accounts"),
            _text("name", "Account Name", 160, "ApplicationRequired"),
            _memo("description", "Description"),
            _text("telephone1", "Main Phone", 50),
            _text("telephone2", "Other Phone", 50),
            _text("emailaddress1", "Email", 100),
            _text("websiteurl", "Website", 200),
            Attr("numberofemployees", "Integer", "Number of Employees"),
            Attr("revenue", "Money", "Annual Revenue"),
            _text("tickersymbol", "Ticker Symbol", 10),
            _text("sic", "SIC Code", 20),
            _choice("industrycode", "Industry", {1: "Accounting", 7: "Consulting", 33: "Retail"}),
            _lookup("parentaccountid", "Parent Account", "account"),
            *_address(),
        ),
        _table(
            "contact",
            "contacts",
            ("contactid", "fullname"),
            ("Contact", "Contacts"),
            _text("firstname", "First Name", 50),
            _text("lastname", "Last Name", 50, "ApplicationRequired"),
            _text("middlename", "Middle Name", 50),
            _computed("fullname", "Full Name", 160),
            _text("salutation", "Salutation", 100),
            _text("jobtitle", "Job Title", 100),
            _text("department", "Department", 100),
            _memo("description", "Description"),
            Attr("birthdate", "DateTime", "Birthday", date_only=True),
            Attr("donotphone", "Boolean", "Do not allow Phone Calls"),
            _text("emailaddress1", "Email", 100),
            _text("emailaddress2", "Email Address 2", 100),
            _text("telephone1", "Business Phone", 50),
            _text("mobilephone", "Mobile Phone", 50),
            _text("websiteurl", "Website", 200),
            _lookup("parentcustomerid", "Company Name", "account", "contact", kind="Customer"),
            *_address(),
        ),
        _table(
            "lead",
            "leads",
            ("leadid", "fullname"),
            ("Lead", "Leads"),
            _text("subject", "Topic", 300),
            _text("firstname", "First Name", 50),
            _text("lastname", "Last Name", 50, "ApplicationRequired"),
            _computed("fullname", "Name", 160),
            _text("companyname", "Company Name", 100),
            _text("jobtitle", "Job Title", 100),
            _memo("description", "Description"),
            _text("emailaddress1", "Email", 100),
            _text("telephone1", "Business Phone", 50),
            _text("mobilephone", "Mobile Phone", 50),
            _text("websiteurl", "Website", 200),
            Attr("revenue", "Money", "Annual Revenue"),
            _choice(
                "statuscode",
                "Status Reason",
                {1: "New", 2: "Contacted", 3: "Qualified", 4: "Lost"},
                "Status",
            ),
            _choice("leadsourcecode", "Lead Source", {1: "Advertisement", 4: "Other", 8: "Web"}),
            _choice("leadqualitycode", "Rating", {1: "Hot", 2: "Warm", 3: "Cold"}),
            _lookup("parentaccountid", "Parent Account for lead", "account"),
            _lookup("parentcontactid", "Parent Contact for lead", "contact"),
            *_address(),
        ),
        _table(
            "opportunity",
            "opportunities",
            ("opportunityid", "name"),
            ("Opportunity", "Opportunities"),
            _text("name", "Topic", 300, "ApplicationRequired"),
            _memo("description", "Description"),
            Attr("estimatedvalue", "Money", "Est. Revenue"),
            Attr("closeprobability", "Integer", "Probability"),
            Attr("estimatedclosedate", "DateTime", "Est. Close Date", date_only=True),
            _text("stepname", "Pipeline Phase", 200),
            _lookup("parentaccountid", "Account", "account"),
            _lookup("parentcontactid", "Contact", "contact"),
        ),
        _activity("task", "Task", "Tasks"),
        _activity(
            "phonecall",
            "Phone Call",
            "Phone Calls",
            _text("phonenumber", "Phone Number", 200),
            Attr("directioncode", "Boolean", "Direction"),
        ),
        _activity(
            "appointment",
            "Appointment",
            "Appointments",
            _text("location", "Location", 200),
            Attr("isalldayevent", "Boolean", "All Day Event"),
        ),
        _table(
            "annotation",
            "annotations",
            ("annotationid", "subject"),
            ("Note", "Notes"),
            _text("subject", "Title", 500),
            _memo("notetext", "Description", 100_000),
            _lookup("objectid", "Regarding", *_RECORDS),
        ),
        _table(
            "systemuser",
            "systemusers",
            ("systemuserid", "fullname"),
            ("User", "Users"),
            _text("firstname", "First Name", 64),
            _text("lastname", "Last Name", 64),
            _computed("fullname", "Full Name", 200),
            _text("domainname", "User Name", 1024, "SystemRequired"),
            _text("internalemailaddress", "Primary Email", 100),
            _text("title", "Title", 128),
            _text("mobilephone", "Mobile Phone", 64),
            _text("address1_telephone1", "Main Phone", 64),
            Attr("isdisabled", "Boolean", "Status", create=False),
        ),
    ]
    return {table.logical: table for table in tables}
