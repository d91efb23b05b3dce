"""A small, believable sales org for the demo: accounts with their contacts, leads, open
opportunities, tasks and notes (inserted through the simulator's own checks)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from crmsim.salesforce_data import SalesforceData

if TYPE_CHECKING:
    from crmsim.hubspot import HubSpotSimulator

_ACCOUNTS = [
    ("Northwind Traders", "Retail", "https://northwind.example", "Seattle", "US"),
    ("Contoso Pharmaceuticals", "Technology", "https://contoso.example", "Berlin", "DE"),
    ("Fabrikam Farms", "Agriculture", "https://fabrikam.example", "Lyon", "FR"),
]
_CONTACTS = [
    ("Nancy", "Davolio", "Sales Representative", 0),
    ("Andrew", "Fuller", "Vice President, Sales", 0),
    ("Janet", "Leverling", "Head of Research", 1),
    ("Margaret", "Peacock", "Procurement Lead", 1),
    ("Steven", "Buchanan", "Farm Manager", 2),
    ("Laura", "Callahan", "Operations Director", 2),
]
_LEADS = [
    ("Robert", "King", "Adatum Corporation", "Web"),
    ("Anne", "Dodsworth", "Litware Inc.", "Partner Referral"),
    ("Michael", "Suyama", "Proseware", "Phone Inquiry"),
]
# The same business, for the simulators that seed it in their own shapes (crmsim.zoho).
ACCOUNTS, CONTACTS, LEADS = _ACCOUNTS, _CONTACTS, _LEADS


def seed_sales_org(data: SalesforceData, owner: str | None = None) -> None:
    today = date.today()
    accounts: list[str] = []
    for name, industry, website, city, country in _ACCOUNTS:
        accounts.append(
            data.insert(
                "Account",
                {
                    "Name": name,
                    "Industry": industry,
                    "Website": website,
                    "BillingCity": city,
                    "BillingCountry": country,
                },
                owner,
            )
        )
    contacts: list[str] = []
    for first, last, title, employer in _CONTACTS:
        contacts.append(
            data.insert(
                "Contact",
                {
                    "FirstName": first,
                    "LastName": last,
                    "Title": title,
                    "Email": f"{first.lower()}.{last.lower()}@example.com",
                    "Phone": f"+1 206 555 01{len(contacts):02d}",
                    "AccountId": accounts[employer],
                },
                owner,
            )
        )
    for first, last, company, source in _LEADS:
        data.insert(
            "Lead",
            {
                "FirstName": first,
                "LastName": last,
                "Company": company,
                "LeadSource": source,
                "Email": f"{first.lower()}@{company.split()[0].lower()}.example",
            },
            owner,
        )
    stages = ["Prospecting", "Proposal/Price Quote", "Negotiation/Review"]
    for index, account in enumerate(accounts):
        opportunity = data.insert(
            "Opportunity",
            {
                "Name": f"{_ACCOUNTS[index][0]}: annual renewal",
                "StageName": stages[index],
                "CloseDate": (today + timedelta(days=30 * (index + 1))).isoformat(),
                "Amount": 12000.0 * (index + 1),
                "AccountId": account,
            },
            owner,
        )
        data.insert(
            "Task",
            {
                "Subject": f"Call {_CONTACTS[2 * index][0]} about the renewal",
                "ActivityDate": (today + timedelta(days=index + 2)).isoformat(),
                "Priority": "High" if index == 0 else "Normal",
                "WhoId": contacts[2 * index],
                "WhatId": opportunity,
            },
            owner,
        )
        data.insert(
            "Note",
            {
                "Title": "Meeting notes",
                "Body": f"{_CONTACTS[2 * index + 1][0]} wants a quote before the quarter ends.",
                "ParentId": account,
            },
            owner,
        )


def seed_hubspot_portal(portal: HubSpotSimulator) -> None:
    """The same small business, as a HubSpot portal: companies, contacts and open deals."""
    today = date.today()
    for name, industry, website, city, country in _ACCOUNTS:
        portal.insert(
            "companies",
            {
                "name": name,
                "domain": website.removeprefix("https://"),
                "city": city,
                "country": country,
                "industry": {"Retail": "RETAIL", "Agriculture": "FARMING"}.get(
                    industry, "COMPUTER_SOFTWARE"
                ),
            },
        )
    for first, last, title, _ in _CONTACTS:
        portal.insert(
            "contacts",
            {
                "firstname": first,
                "lastname": last,
                "jobtitle": title,
                "email": f"{first.lower()}.{last.lower()}@example.com",
            },
        )
    for index, (name, *_rest) in enumerate(_ACCOUNTS):
        portal.insert(
            "deals",
            {
                "dealname": f"{name}: annual renewal",
                "dealstage": ("appointmentscheduled", "qualifiedtobuy", "closedwon")[index],
                "amount": str(12000 * (index + 1)),
                "closedate": (today + timedelta(days=30 * (index + 1))).isoformat(),
            },
        )
