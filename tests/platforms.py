"""The simulated platforms the connector conformance suite (tests/test_conformance.py) runs
against: one entry per CRM, as data plus a few small adapters over its simulator. A new platform
gets the whole suite by adding one entry to ``PLATFORMS``; what it claims (entities and their
methods, authorization types, paging batches) the suite reads from its descriptor.

An entry says:
- ``simulator`` and ``overrides``: how to make the CRM and point crmgate at it (what
  ``conftest.run_simulated`` takes);
- ``connect``: the simplest credential (``(authorization, credential)``, fresh each call) and
  ``wrong``: one the CRM refuses;
- ``samples``: a record per mapped entity that can be created (the name field, values to create
  with, a change) and what the CRM can do with it (the sort it has, whether the name filters);
- ``table``: where the simulator keeps an object's records (to start a life cycle from none),
  ``seed``: contacts made in the CRM without the API (to page through);
- ``throttle``: how to make the CRM answer 429 (and the Retry-After crmgate must pass on);
- ``refresh``: crmgate's OAuth client at the CRM and how its tokens expire and are revoked, for
  the oAuth-internal renewal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from crmsim.amocrm import AmoSimulator
from crmsim.amocrm import platform_overrides as amocrm_overrides
from crmsim.bitrix24 import Bitrix24Simulator
from crmsim.bitrix24 import platform_overrides as bitrix24_overrides
from crmsim.close import CloseSimulator
from crmsim.close import platform_overrides as close_overrides
from crmsim.dynamics import DynamicsSimulator
from crmsim.dynamics import platform_overrides as dynamics_overrides
from crmsim.faults import Fault
from crmsim.google import GoogleSimulator
from crmsim.google import platform_overrides as google_overrides
from crmsim.hubspot import HubSpotSimulator
from crmsim.hubspot import platform_overrides as hubspot_overrides
from crmsim.keap import KeapSimulator
from crmsim.keap import platform_overrides as keap_overrides
from crmsim.pipedrive import PipedriveSimulator
from crmsim.pipedrive import platform_overrides as pipedrive_overrides
from crmsim.salesforce import SalesforceSimulator
from crmsim.salesforce import platform_overrides as salesforce_overrides
from crmsim.zoho import ZohoSimulator
from crmsim.zoho import platform_overrides as zoho_overrides

Sim = Any  # each entry's own simulator class
Values = dict[str, Any]
NAME = "<name>"  # a sample's sort: by its name field


@dataclass(frozen=True)
class Sample:
    """One record of an entity: ``name`` is the field naming it (the life cycle names records
    "<entity> 3", "<entity> 1", "<entity> 2"), ``values`` more fields to create it with and
    ``change`` an update. ``sort`` is the field its lists sort by (``NAME``, ``"id"``: in the
    order made, another field: by ``numbered``'s values; None: the CRM has no sort for it),
    ``filters`` whether ``<name> eq`` works (else it must be refused, 400 or 403), ``ranges``
    whether ``<name> ge`` does too, ``parents`` the
    relations a record must have (made first from the platform's own samples), ``numbered``
    values that differ per record, ``raw`` the passthrough path ({native}, {id}) and the id's
    key in its answer, where it differs from the platform's. ``backwards`` whether the sort
    also goes descending (else ``-<sort>`` must be refused, 400: Google's names).
    ``listed_by`` names the parent (one of ``parents``) by which the CRM lists these records
    only (Bitrix24's timeline comments): every list and count of the suite filters by it
    (``relation.<listed_by> eq '<id>'``), and one without must be refused (403)."""

    name: str
    values: Values = field(default_factory=dict)
    change: Values = field(default_factory=dict)
    sort: str | None = NAME
    filters: bool = True
    ranges: bool = True
    parents: tuple[str, ...] = ()
    numbered: Callable[[int], Values] = lambda n: {}
    raw: tuple[str, str] | None = None
    backwards: bool = True
    listed_by: str | None = None

    @property
    def record(self) -> tuple[str, Values, Values]:
        """What conftest.check_life_cycle takes."""
        return self.name, self.values, self.change

    @property
    def complete(self) -> bool:
        """Whether the whole of conftest.check_life_cycle applies: sorts and filters (also
        ``ge``) on the name field, nothing per record, lists of every record."""
        complete = self.sort == NAME and self.filters and self.ranges and self.backwards
        return complete and not self.numbered(1) and self.listed_by is None


@dataclass(frozen=True)
class Throttle:
    """Makes the CRM refuse calls for their rate (``start``) until ``stop``; crmgate must give
    the client 429 with a Retry-After within ``retry_after`` (inclusive) and the CRM's reason,
    which holds ``says``."""

    start: Callable[[Sim], None]
    stop: Callable[[Sim], None]
    retry_after: tuple[int, int]
    says: str


@dataclass(frozen=True)
class Refresh:
    """oAuth-internal at this CRM: ``client`` registers crmgate's OAuth client there and gives
    its ``oauth_clients`` entry; ``credential`` is an access and a refresh token of it;
    ``token_calls`` counts the calls to the token endpoint; ``expire`` ends every access token,
    ``revoke`` every refresh token; a refused refresh's message holds ``refusal``."""

    client: Callable[[Sim], dict[str, str]]
    credential: Callable[[Sim, str], dict[str, str]]
    token_calls: Callable[[Sim], int]
    refusal: str
    expire: Callable[[Sim], None] = lambda sim: sim.expire_tokens()
    revoke: Callable[[Sim], None] = lambda sim: sim.refresh_tokens.clear()


@dataclass(frozen=True)
class Platform:
    type: str
    simulator: Callable[[], Sim]
    overrides: Callable[[str], dict[str, dict[str, Any]]]
    connect: Callable[[Sim, str], tuple[str, dict[str, str]]]  # (sim, base URL)
    wrong: Callable[[Sim, str], dict[str, str]]
    company: Callable[[Sim], str]  # the company id the application shows
    samples: dict[str, Sample]
    raw: tuple[str, str]  # the passthrough path of a record ({native}, {id}), its id's key
    missing_id: str  # a well-formed id of no contact
    table: Callable[[Sim, str], MutableMapping[str, Any]]  # the descriptor's object's records
    seed: Callable[[Sim, int], list[str]]  # n contacts made in the CRM; their ids
    throttle: Throttle
    add_user: Callable[[Sim, str, str], Any]  # a user of the CRM: (last name, email)
    refresh: Refresh | None = None
    # Lists read with OFFSET to this depth: each page is one call of its own (Salesforce's
    # SOQL OFFSET); deeper, batches as the descriptor's paging says.
    offset_pages: int = 0
    # What the CRM's own answer puts before a record's id (Google's resource names: people/).
    raw_prefix: str = ""


def _json(status: int, body: Any, seconds: int, **headers: str) -> Fault:
    return Fault(
        status,
        json.dumps(body),
        "application/json",
        headers={"Retry-After": str(seconds), **headers},
    )


# ---- Salesforce ---------------------------------------------------------------------------------


def _sf_user(sim: SalesforceSimulator) -> Any:
    return sim.add_user(f"u{len(sim.users)}@acme.example", "pw", name="Ada King")


def _sf_limit(sim: SalesforceSimulator) -> None:
    sim.data.quota.limit = sim.data.quota.used  # the org's daily limit: 403 REQUEST_LIMIT_EXCEEDED


def _sf_client(sim: SalesforceSimulator) -> dict[str, str]:
    sim.add_connected_app("sf-client", "sf-secret", ["https://app.example/cb"])
    return {"client_id": "sf-client", "client_secret": "sf-secret"}


def _sf_oauth(sim: SalesforceSimulator, base_url: str) -> dict[str, str]:
    user = _sf_user(sim)
    return {
        "instance_url": base_url,
        "access_token": sim.issue_session(user),
        "refresh_token": sim.issue_refresh_token(user),
    }


SALESFORCE = Platform(
    type="Salesforce",
    simulator=lambda: SalesforceSimulator(org_name="Acme Corp (sim)"),
    overrides=salesforce_overrides,
    connect=lambda sim, url: (
        "oAuth-external-refresh",
        {"instance_url": url, "access_token": sim.issue_session(_sf_user(sim))},
    ),
    wrong=lambda sim, url: {"instance_url": url, "access_token": "00Dnope!nope"},
    company=lambda sim: sim.org_id,
    samples={  # tests/test_api_entities.py's ENTITIES
        "contact": Sample("last_name", {"first_name": "Ann"}, {"position": "CFO"}),
        "lead": Sample("last_name", {"company": "Initech"}, {"status": "Working - Contacted"}),
        "account": Sample("name", {"employees": "120"}, {"description": "Key account"}),
        "opportunity": Sample(
            "name",
            {"pipeline_with_stage": "Prospecting", "expected_end_at": "2027-03-31T00:00:00+00:00"},
            {"amount": 2500.5},
        ),
        "task": Sample("subject", {"due_at": "2027-01-15T00:00:00+00:00"}, {"priority": "High"}),
        "call": Sample("subject", {"direction": "Outbound"}, {"result": "Left a message"}),
        "event": Sample(
            "subject",
            {"started_at": "2027-01-10T09:00:00+00:00", "ended_at": "2027-01-10T10:00:00+00:00"},
            {"location": "Room 1"},
        ),
        "meeting": Sample(
            "subject",
            {"started_at": "2027-01-11T09:00:00+00:00", "ended_at": "2027-01-11T09:30:00+00:00"},
            {"description": "Agenda attached"},
        ),
        "note": Sample(
            "subject", {"body": "Spoke today"}, {"body": "Spoke twice"}, parents=("account",)
        ),
        "case": Sample("subject", {"origin": "Web"}, {"priority": "High"}),
        "campaign": Sample("name", {"is_active": True}, {"status": "In Progress"}),
        "product": Sample("name", {"code": "P-1"}, {"is_active": True}),
        "priceBook": Sample("name", {"description": "2027"}, {"is_active": True}),
        "opportunityProduct": Sample(
            "description",
            {"quantity": 3, "sales_price": 10.0},
            {"quantity": 5},
            parents=("opportunity", "product"),
        ),
    },
    raw=("sobjects/{native}/{id}", "Id"),
    missing_id="003000000000000AAA",
    table=lambda sim, obj: sim.data.records[obj],
    seed=lambda sim, n: [sim.data.insert("Contact", {"LastName": f"C{i:03d}"}) for i in range(n)],
    offset_pages=2000,
    throttle=Throttle(
        _sf_limit,
        lambda sim: setattr(sim.data.quota, "limit", sim.data.quota.used + 10**6),
        (60, 60),
        "REQUEST_LIMIT_EXCEEDED",
    ),
    add_user=lambda sim, last, email: sim.add_user(email, "pw", name=f"Ann {last}"),
    refresh=Refresh(
        client=_sf_client,
        credential=_sf_oauth,
        token_calls=lambda sim: sim.calls.count(("POST", "/services/oauth2/token")),
        refusal="expired access/refresh token",
        expire=lambda sim: sim.expire_sessions(),
    ),
)


# ---- HubSpot ------------------------------------------------------------------------------------


def _hs_client(sim: HubSpotSimulator) -> dict[str, str]:
    sim.add_app("hs-client", "hs-secret")
    return {"client_id": "hs-client", "client_secret": "hs-secret"}


HUBSPOT_LIMITED = {
    "status": "error",
    "message": "You have reached your ten_secondly_rolling limit.",
    "errorType": "RATE_LIMIT",
    "category": "RATE_LIMITS",
}

HUBSPOT = Platform(
    type="HubSpot",
    simulator=lambda: HubSpotSimulator(ten_secondly=100_000),
    overrides=hubspot_overrides,
    connect=lambda sim, url: ("key", {"access_token": sim.add_private_app()}),
    wrong=lambda sim, url: {"access_token": "pat-x"},
    company=lambda sim: str(sim.portal_id),
    samples={  # tests/test_hubspot.py's ENTITIES
        "contact": Sample("last_name", {"first_name": "Ann"}, {"position": "CFO"}),
        "account": Sample("name", {"employees": "120"}, {"description": "Key account"}),
        "opportunity": Sample(
            "name",
            {
                "pipeline_with_stage": "qualifiedtobuy",
                "expected_end_at": "2027-03-31T00:00:00+00:00",
            },
            {"amount": 2500.5},
        ),
        "lead": Sample(
            "last_name",
            {"status": "new-stage-id", "rating": "WARM"},
            {"type": "UPSELL"},
            parents=("contact",),  # HubSpot makes a lead with its primary contact
        ),
        "task": Sample("subject", {"due_at": "2027-01-15T09:00:00+00:00"}, {"priority": "HIGH"}),
        "call": Sample(
            "subject", {"started_at": "2027-01-10T09:00:00+00:00"}, {"direction": "OUTBOUND"}
        ),
        "meeting": Sample(
            "subject", {"started_at": "2027-01-11T09:00:00+00:00"}, {"location": "Room 1"}
        ),
        "note": Sample("body", {}, {"body": "Edited"}),
    },
    raw=("crm/v3/objects/{native}/{id}", "id"),
    missing_id="999999",
    table=lambda sim, obj: sim.records[obj],
    seed=lambda sim, n: [sim.insert("contacts", {"lastname": f"C{i:03d}"}) for i in range(n)],
    throttle=Throttle(
        lambda sim: sim.faults.add(_json(429, HUBSPOT_LIMITED, 30)),
        lambda sim: sim.faults.clear(),
        (30, 30),
        "ten_secondly_rolling",
    ),
    add_user=lambda sim, last, email: sim.add_owner(email, "Ann", last),
    refresh=Refresh(
        client=_hs_client,
        credential=lambda sim, url: {
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.issue_refresh_token("hs-client"),
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/oauth/v1/token")),
        refusal="BAD_REFRESH_TOKEN",
    ),
)


# ---- Zoho CRM -----------------------------------------------------------------------------------


def _zoho_client(sim: ZohoSimulator) -> dict[str, str]:
    sim.add_app("1000.CLIENT", "zoho-secret")
    return {"client_id": "1000.CLIENT", "client_secret": "zoho-secret"}


ZOHO = Platform(
    type="ZohoCRM",
    simulator=ZohoSimulator,
    overrides=zoho_overrides,
    connect=lambda sim, url: (
        "oAuth-external-refresh",
        {"instance_url": url, "access_token": sim.issue_access_token()},
    ),
    wrong=lambda sim, url: {"instance_url": url, "access_token": "1000.nope"},
    company=lambda sim: sim.org_id,
    samples={  # tests/test_zoho.py's ENTITIES
        "contact": Sample("last_name", {"first_name": "Ann"}, {"position": "CFO"}),
        "lead": Sample("last_name", {"company": "Initech"}, {"status": "Contacted"}),
        "account": Sample("name", {"employees": "120"}, {"description": "Key account"}),
        "opportunity": Sample(
            "name",
            {
                "pipeline_with_stage": "Qualification",
                "expected_end_at": "2027-03-31T00:00:00+00:00",
            },
            {"amount": 2500.5},
        ),
        "task": Sample("subject", {"due_at": "2027-01-15T00:00:00+00:00"}, {"priority": "High"}),
        "call": Sample(
            "subject",
            {"direction": "Outbound", "started_at": "2027-01-10T09:00:00+00:00"},
            {"purpose": "Demo"},
        ),
        "meeting": Sample(
            "subject",
            {"started_at": "2027-01-11T09:00:00+00:00", "ended_at": "2027-01-11T10:00:00+00:00"},
            {"location": "Room 1"},
        ),
        "event": Sample(
            "subject",
            {"started_at": "2027-01-12T09:00:00+00:00", "ended_at": "2027-01-12T10:00:00+00:00"},
            {"is_all_day": True},
        ),
        # a note belongs to a record (Parent_Id is required)
        "note": Sample(
            "subject", {"body": "Met at the fair"}, {"body": "Edited"}, parents=("account",)
        ),
    },
    raw=("{native}/{id}", "data.0.id"),
    missing_id="5725767999999999999",
    table=lambda sim, obj: sim.records[obj],
    seed=lambda sim, n: [sim.insert("Contacts", {"Last_Name": f"C{i:03d}"}) for i in range(n)],
    # Zoho's fault hook (sim.fault) carries no headers: its own credit limit, whose reset is
    # hours away
    throttle=Throttle(
        lambda sim: setattr(sim.quota, "used", sim.quota.limit),
        lambda sim: setattr(sim.quota, "used", 0),
        (3600, 6 * 3600 + 5),
        "TOO_MANY_REQUESTS",
    ),
    add_user=lambda sim, last, email: sim.add_user("Ann", last, email),
    refresh=Refresh(
        client=_zoho_client,
        credential=lambda sim, url: {
            "instance_url": url,
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.issue_refresh_token("1000.CLIENT"),
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/oauth/v2/token")),
        refusal="invalid_code",
    ),
)


# ---- Microsoft Dynamics 365 ---------------------------------------------------------------------


def _dynamics_table(sim: DynamicsSimulator, entity_set: str) -> MutableMapping[str, Any]:
    (logical,) = [t.logical for t in sim.tables.values() if t.entity_set == entity_set]
    return sim.records[logical]


def _dynamics_client(sim: DynamicsSimulator) -> dict[str, str]:
    sim.add_app("crmgate-app", "crmgate-secret")
    return {"client_id": "crmgate-app", "client_secret": "crmgate-secret"}


def _dynamics_raw(id_key: str) -> tuple[str, str]:
    return ("{native}({id})", id_key)


DYNAMICS = Platform(
    type="MicrosoftDynamics",
    simulator=DynamicsSimulator,
    overrides=dynamics_overrides,
    connect=lambda sim, url: (
        "oAuth-external-refresh",
        {"instance_url": url, "access_token": sim.issue_access_token(lifetime=3600)},
    ),
    wrong=lambda sim, url: {"instance_url": url, "access_token": "nope"},
    company=lambda sim: sim.organization_id,
    samples={
        "contact": Sample(
            "last_name",
            {"first_name": "Ann", "email": [{"type": "work", "address": "ann@example.com"}]},
            {"position": "CFO"},
            raw=_dynamics_raw("contactid"),
        ),
        "lead": Sample(
            "last_name", {"company": "Initech"}, {"status": "2"}, raw=_dynamics_raw("leadid")
        ),
        "account": Sample(
            "name",
            {"employees": "120"},
            {"description": "Key account"},
            raw=_dynamics_raw("accountid"),
        ),
        "opportunity": Sample(
            "name",
            {"pipeline_with_stage": "1-Qualify", "expected_end_at": "2027-03-31T00:00:00+00:00"},
            {"amount": 2500.5},
            raw=_dynamics_raw("opportunityid"),
        ),
        "task": Sample(
            "subject",
            {"due_at": "2027-01-15T09:00:00+00:00"},
            {"priority": "2"},
            raw=_dynamics_raw("activityid"),
        ),
        "call": Sample(
            "subject",
            {"started_at": "2027-01-10T09:00:00+00:00"},
            {"status": "3"},
            raw=_dynamics_raw("activityid"),
        ),
        "meeting": Sample(
            "subject",
            {"location": "Room 1"},
            {"location": "Room 2"},
            raw=_dynamics_raw("activityid"),
        ),
        "event": Sample(
            "subject", {"is_all_day": True}, {"location": "Hall"}, raw=_dynamics_raw("activityid")
        ),
        "note": Sample(
            "subject",
            {"body": "Met at the fair"},
            {"body": "Edited"},
            raw=_dynamics_raw("annotationid"),
        ),
    },
    raw=_dynamics_raw("contactid"),
    missing_id="00000000-0000-0000-0000-000000000001",
    table=_dynamics_table,
    seed=lambda sim, n: [sim.insert("contact", {"lastname": f"C{i:03d}"}) for i in range(n)],
    # Dynamics' fault hook (sim.faults) carries no headers: its service protection limit
    throttle=Throttle(
        lambda sim: setattr(sim, "request_limit", 0),
        lambda sim: setattr(sim, "request_limit", 6000),
        (1, 301),
        "0x80072322",
    ),
    add_user=lambda sim, last, email: sim.add_user("Ann", last, email),
    refresh=Refresh(
        client=_dynamics_client,
        credential=lambda sim, url: {
            "instance_url": url,
            "access_token": sim.issue_access_token(lifetime=3600),
            "refresh_token": sim.issue_refresh_token("crmgate-app"),
            "tenant": "Contoso.example",
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/contoso.example/oauth2/v2.0/token")),
        refusal="invalid_grant",
    ),
)


# ---- Pipedrive ----------------------------------------------------------------------------------


def _pd_client(sim: PipedriveSimulator) -> dict[str, str]:
    sim.add_app("pd-client", "pd-secret")
    return {"client_id": "pd-client", "client_secret": "pd-secret"}


def _pd_seed(sim: PipedriveSimulator, n: int) -> list[str]:
    return [sim.insert("persons", {"name": f"C{i:03d}"}) for i in range(n)]


def _day(field_name: str) -> Callable[[int], Values]:
    return lambda n: {field_name: f"2027-01-0{n}"}


# v2 lists sort by id, created_at and updated_at only; activities by their dates
PD_V2 = ("api/v2/{native}/{id}", "data.id")
PIPEDRIVE = Platform(
    type="Pipedrive",
    simulator=lambda: PipedriveSimulator(burst=100_000),
    overrides=pipedrive_overrides,
    connect=lambda sim, url: ("key", {"instance_url": url, "api_token": sim.add_api_token()}),
    wrong=lambda sim, url: {"instance_url": url, "api_token": "not-a-token"},
    company=lambda sim: str(sim.company_id),
    samples={  # tests/test_pipedrive.py's ENTITIES and the activities' and notes' tests
        "contact": Sample(
            "last_name",
            {"first_name": "Ada", "position": "CFO"},
            {"position": "CEO"},
            sort="id",
            raw=PD_V2,
        ),
        "account": Sample("name", {}, {"name": "Renamed"}, sort="id", raw=PD_V2),
        "opportunity": Sample(
            "name",
            {"amount": 2500.5, "expected_end_at": "2027-03-31T00:00:00+00:00"},
            {"amount": 100.0, "state": "won"},
            sort="id",
            raw=PD_V2,
        ),
        "lead": Sample("description", parents=("account",)),
        "task": Sample(
            "subject",
            change={"description": "Agenda"},
            sort="due_at",
            numbered=_day("due_at"),
            raw=PD_V2,
        ),
        "call": Sample(
            "subject",
            change={"description": "Agenda"},
            sort="started_at",
            numbered=_day("started_at"),
            raw=PD_V2,
        ),
        "meeting": Sample(
            "subject",
            change={"location": "Room 1"},
            sort="started_at",
            numbered=_day("started_at"),
            raw=PD_V2,
        ),
        "note": Sample("body", change={"body": "Edited"}, filters=False, parents=("account",)),
    },
    raw=("v1/{native}/{id}", "data.id"),
    missing_id="999999",
    table=lambda sim, obj: sim.records[obj],
    seed=_pd_seed,
    throttle=Throttle(
        lambda sim: sim.faults.add(
            _json(429, {"success": False, "error": "Request over limit", "errorCode": 429}, 30)
        ),
        lambda sim: sim.faults.clear(),
        (30, 30),
        "Request over limit",
    ),
    add_user=lambda sim, last, email: sim.add_user(last, email),
    refresh=Refresh(
        client=_pd_client,
        credential=lambda sim, url: {
            "instance_url": url,
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.issue_refresh_token("pd-client"),
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/oauth/token")),
        refusal="invalid_grant",
    ),
)


# ---- Close --------------------------------------------------------------------------------------


def _close_client(sim: CloseSimulator) -> dict[str, str]:
    sim.add_app("close-client", "close-secret")
    return {"client_id": "close-client", "client_secret": "close-secret"}


def _close_seed(sim: CloseSimulator, n: int) -> list[str]:
    lead = sim.insert("lead", {"name": "Big Co"})
    return [sim.insert("contact", {"lead_id": lead, "name": f"C{i:03d}"}) for i in range(n)]


CLOSE_LIMITED = {"error": {"message": "API call count exceeded", "rate_reset": 30, "rate_limit": 1}}

# Only leads and contacts filter and sort by name (Close's advanced filtering API); the other
# lists filter by the lead they belong to.
CLOSE = Platform(
    type="CloseIO",
    simulator=lambda: CloseSimulator(burst=100_000),
    overrides=close_overrides,
    connect=lambda sim, url: ("key", {"api_key": sim.add_api_key()}),
    wrong=lambda sim, url: {"api_key": "api_not-a-key"},
    company=lambda sim: sim.org_id,
    samples={  # tests/test_close.py's ENTITIES
        "account": Sample(
            "name", {"description": "Makes things"}, {"description": "Sells things"}, ranges=False
        ),
        "contact": Sample(
            "last_name",
            {"position": "CFO", "email": [{"type": "work", "address": "cfo@acme.example"}]},
            {"position": "CEO"},
            ranges=False,  # the search API compares text with eq, contains and startswith
            parents=("account",),
        ),
        "opportunity": Sample(
            "description",
            {"amount": 2500.5, "probability": 40, "expected_end_at": "2027-03-31T00:00:00+00:00"},
            {"amount": 100.0, "probability": 90},
            sort=None,
            filters=False,
            parents=("account",),
        ),
        "task": Sample(
            "subject",
            {"due_at": "2027-03-31T09:00:00+00:00"},
            {"subject": "Renamed"},
            sort=None,
            filters=False,
            parents=("account",),
        ),
        "note": Sample(
            "body", {}, {"body": "Changed"}, sort=None, filters=False, parents=("account",)
        ),
        "call": Sample(
            "description",
            {"direction": "inbound"},
            {"direction": "outbound"},
            sort=None,
            filters=False,
            parents=("account",),
        ),
    },
    raw=("{native}/{id}/", "id"),
    missing_id="cont_missing",
    table=lambda sim, obj: sim.store[obj],
    seed=_close_seed,
    throttle=Throttle(
        lambda sim: sim.faults.add(_json(429, CLOSE_LIMITED, 30)),
        lambda sim: sim.faults.clear(),
        (30, 30),
        "API call count exceeded",
    ),
    add_user=lambda sim, last, email: sim.add_user("Ann", last, email),
    refresh=Refresh(
        client=_close_client,
        credential=lambda sim, url: {
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.tokens.issue_refresh("close-client", sim.admin),
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/oauth2/token/")),
        refusal="invalid_grant",
    ),
)


# ---- Keap (Infusionsoft) --------------------------------------------------------------------


def _keap_client(sim: KeapSimulator) -> dict[str, str]:
    sim.add_app("keap-client", "keap-secret")
    return {"client_id": "keap-client", "client_secret": "keap-secret"}


def _keap_seed(sim: KeapSimulator, n: int) -> list[str]:
    named = ({"given_name": "C", "family_name": f"C{i:03d}"} for i in range(n))
    return [sim.insert("contacts", values) for values in named]


KEAP_LIMITED = {
    "fault": {
        "faultstring": "Rate limit quota violation. Quota limit exceeded.",
        "detail": {"errorcode": "policies.ratelimit.QuotaViolation"},
    }
}

# Keap filters by name with == (a trailing * for a prefix) and sorts by the keys each list's
# order_by documents: contacts and tasks by id (the order made), companies and opportunities by
# their name.
KEAP = Platform(
    type="Infusionsoft",
    simulator=lambda: KeapSimulator(burst=100_000),
    overrides=keap_overrides,
    connect=lambda sim, url: ("key", {"api_key": sim.add_api_key()}),
    wrong=lambda sim, url: {"api_key": "KeapAK-not-a-key"},
    company=lambda sim: sim.tenant,
    samples={
        "account": Sample(
            "name", {"description": "Makes things"}, {"description": "Sells things"}, ranges=False
        ),
        "contact": Sample(
            "last_name",
            {"position": "CFO", "email": [{"type": "work", "address": "cfo@acme.example"}]},
            {"position": "CEO"},
            sort="id",
            ranges=False,
        ),
        "opportunity": Sample(
            "name",
            {"amount": 2500.5, "pipeline_with_stage": "1"},
            {"amount": 100.0},
            ranges=False,
            parents=("contact",),
        ),
        "task": Sample(
            "subject",
            {"description": "Call back"},
            {"subject": "Renamed"},
            sort="id",
            ranges=False,
        ),
        # a note's title matches by contains and startswith (Keap's title== is contains)
        "note": Sample(
            "subject",
            {"body": "Met at the fair"},
            {"body": "Edited"},
            sort="id",
            filters=False,
            parents=("contact",),
            raw=("{native}?filter=id=={id}", "notes.0.id"),
        ),
    },
    raw=("{native}/{id}", "id"),
    missing_id="999999999",
    table=lambda sim, obj: sim.store[obj],
    seed=_keap_seed,
    throttle=Throttle(
        lambda sim: sim.faults.add(_json(429, KEAP_LIMITED, 30)),
        lambda sim: sim.faults.clear(),
        (30, 30),
        "Rate limit quota violation",
    ),
    add_user=lambda sim, last, email: sim.add_user("Ann", last, email),
    refresh=Refresh(
        client=_keap_client,
        credential=lambda sim, url: {
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.tokens.issue_refresh("keap-client", sim.admin),
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/token")),
        refusal="invalid_grant",
    ),
)


# ---- Kommo (amoCRM) ----------------------------------------------------------------------------


def _amo_client(sim: AmoSimulator) -> dict[str, str]:
    sim.add_app("amo-client", "amo-secret")
    return {"client_id": "amo-client", "client_secret": "amo-secret"}


AMO_LIMITED = {"title": "Too Many Requests", "status": 429, "detail": "Too Many Requests"}

# Kommo's lists sort by id and dates only and filter names whole (not tasks'); its API deletes
# nothing.
AMOCRM = Platform(
    type="AmoCRM",
    simulator=lambda: AmoSimulator(per_second=100_000),
    overrides=amocrm_overrides,
    connect=lambda sim, url: ("key", {"instance_url": url, "api_key": sim.add_api_key()}),
    wrong=lambda sim, url: {"instance_url": url, "api_key": "not-a-token"},
    company=lambda sim: str(sim.account_id),
    samples={
        "account": Sample("name", change={"name": "Renamed"}, sort="id", ranges=False),
        "contact": Sample(  # a half of the name: Kommo's search, filtered in crmgate
            "last_name", {"first_name": "Ada"}, {"last_name": "Renamed"}, sort="id", ranges=False
        ),
        "opportunity": Sample("name", {"amount": 2500}, {"amount": 100}, sort="id", ranges=False),
        "task": Sample(
            "subject",
            {"due_at": "2027-03-31T09:00:00+00:00"},
            {"subject": "Renamed"},
            sort="id",
            filters=False,
        ),
        "note": Sample(  # a deal's: Kommo's id, in the deals' own list of notes
            "body",
            change={"body": "Changed"},
            sort="id",
            filters=False,
            parents=("opportunity",),
            raw=("leads/notes/{id}", "id"),
        ),
    },
    raw=("{native}/{id}", "id"),
    missing_id="999999",
    table=lambda sim, obj: sim.store[obj],
    seed=lambda sim, n: [sim.insert("contacts", {"name": f"C{i:03d}"}) for i in range(n)],
    throttle=Throttle(
        lambda sim: sim.faults.add(_json(429, AMO_LIMITED, 30)),
        lambda sim: sim.faults.clear(),
        (30, 30),
        "Too Many Requests",
    ),
    add_user=lambda sim, last, email: sim.add_user(last, email),
    refresh=Refresh(
        client=_amo_client,
        credential=lambda sim, url: {
            "instance_url": url,
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.issue_refresh_token("amo-client"),
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/oauth2/access_token")),
        refusal="invalid_grant",
    ),
)


# ---- Bitrix24 -----------------------------------------------------------------------------------


def _b24_client(sim: Bitrix24Simulator) -> dict[str, str]:
    sim.add_app("local.b24client", "b24-secret")
    return {"client_id": "local.b24client", "client_secret": "b24-secret"}


def _b24_seed(sim: Bitrix24Simulator, n: int) -> list[str]:
    return [sim.insert("contact", {"LAST_NAME": f"C{i:03d}"}) for i in range(n)]


B24_LIMITED = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}

BITRIX24 = Platform(
    type="Bitrix24",
    simulator=lambda: Bitrix24Simulator(burst=100_000),
    overrides=bitrix24_overrides,
    connect=lambda sim, url: ("key", {"webhook_url": f"{url}/rest/{sim.issue_key()}/"}),
    wrong=lambda sim, url: {"webhook_url": f"{url}/rest/1/notawebhook123/"},
    company=lambda sim: sim.base_url.removeprefix("https://").rpartition(":")[0],
    samples={
        "contact": Sample("last_name", {"first_name": "Ann"}, {"position": "CFO"}),
        "account": Sample("name", {"description": "Makes things"}, {"description": "Sells"}),
        "opportunity": Sample(
            "name", {"amount": 2500.5, "probability": 40}, {"amount": 100.0, "probability": 90}
        ),
        "lead": Sample("last_name", {"company": "Initech"}, {"position": "CTO"}),
        "task": Sample(
            "subject", {"description": "Send the quote"}, {"priority": "3"}, parents=("contact",)
        ),
        "call": Sample(
            "subject", {"direction": "2"}, {"description": "Left a message"}, parents=("contact",)
        ),
        "meeting": Sample(
            "subject", {"location": "Berlin"}, {"location": "Paris"}, parents=("account",)
        ),
        # a timeline comment on one record: listed by it only, sorted by id, its text unfiltered
        "note": Sample(
            "body",
            change={"body": "Edited"},
            sort="id",
            filters=False,
            parents=("account",),
            listed_by="account",
        ),
    },
    raw=("crm.{native}.get?id={id}", "result.ID"),
    missing_id="999999",
    table=lambda sim, obj: sim.store[obj],
    seed=_b24_seed,
    throttle=Throttle(
        lambda sim: sim.faults.add(Fault(503, json.dumps(B24_LIMITED), "application/json")),
        lambda sim: sim.faults.clear(),
        (1, 1),
        "Too many requests",
    ),
    add_user=lambda sim, last, email: sim.add_user("Ann", last, email),
    refresh=Refresh(
        client=_b24_client,
        credential=lambda sim, url: {
            "instance_url": url,
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.tokens.issue_refresh("local.b24client", sim.admin),
        },
        token_calls=lambda sim: sum(1 for c in sim.calls if c[1] == "/oauth/token/"),
        refusal="invalid_grant",
    ),
)


# ---- Google (GSuite) ------------------------------------------------------------------------


def _google_client(sim: GoogleSimulator) -> dict[str, str]:
    sim.add_app("google-client", "google-secret")
    return {"client_id": "google-client", "client_secret": "google-secret"}


def _google_seed(sim: GoogleSimulator, n: int) -> list[str]:
    names = ({"names": [{"givenName": "C", "familyName": f"C{i:03d}"}]} for i in range(n))
    return [sim.insert("people", values) for values in names]


GOOGLE_LIMITED = {
    "error": {
        "code": 429,
        "message": "Quota exceeded for quota metric 'Read requests' and limit 'Read requests "
        "per minute per user'",
        "status": "RESOURCE_EXHAUSTED",
    }
}
# Google's 429 says no time: its quotas are per minute.
_GOOGLE_THROTTLED = Fault(429, json.dumps(GOOGLE_LIMITED), "application/json")
_CALENDAR_RAW = ("calendar/v3/calendars/primary/events/{id}", "id")

# Contacts sort by name ascending only (the People API's sortOrder) and filter through its
# prefix search; events filter by title (Calendar's search), tasks do not (403); neither sorts
# by titles.
GOOGLE = Platform(
    type="GSuite",
    simulator=lambda: GoogleSimulator(per_minute=100_000),
    overrides=google_overrides,
    connect=lambda sim, url: ("oAuth-external-refresh", {"access_token": sim.issue_access_token()}),
    wrong=lambda sim, url: {"access_token": "ya29.not-a-token"},
    company=lambda sim: sim.domain,
    samples={
        "contact": Sample(
            "last_name",
            {
                "first_name": "Ann",
                "position": "CFO",
                "email": [{"type": "work", "address": "cfo@acme.example"}],
            },
            {"position": "CEO"},
            ranges=False,
            backwards=False,
        ),
        "meeting": Sample(
            "subject",
            {"started_at": "2027-03-31T09:00:00+00:00", "ended_at": "2027-03-31T10:00:00+00:00"},
            {"location": "Room 2"},
            sort=None,
            raw=_CALENDAR_RAW,
        ),
        "event": Sample(
            "subject",
            {"started_at": "2027-04-01T09:00:00+00:00", "ended_at": "2027-04-01T10:00:00+00:00"},
            {"description": "Moved"},
            sort=None,
            raw=_CALENDAR_RAW,
        ),
        "task": Sample(
            "subject",
            {"due_at": "2027-03-31T00:00:00+00:00"},
            {"subject": "Renamed"},
            sort=None,
            filters=False,
            raw=("tasks/v1/lists/@default/tasks/{id}", "id"),
        ),
    },
    raw=("v1/{native}/{id}?personFields=names", "resourceName"),
    raw_prefix="people/",
    missing_id="c1234567890123456789",
    table=lambda sim, obj: sim.store[obj],
    seed=_google_seed,
    throttle=Throttle(
        lambda sim: sim.faults.add(_GOOGLE_THROTTLED, times=None),  # retried: no Retry-After
        lambda sim: sim.faults.clear(),
        (60, 60),
        "Quota exceeded",
    ),
    add_user=lambda sim, last, email: sim.add_user("Ann", last, email),
    refresh=Refresh(
        client=_google_client,
        credential=lambda sim, url: {
            "access_token": sim.issue_access_token(),
            "refresh_token": sim.issue_refresh_token("google-client"),
        },
        token_calls=lambda sim: sim.calls.count(("POST", "/token")),
        refusal="invalid_grant",
    ),
)


PLATFORMS: dict[str, Platform] = {
    p.type: p
    for p in (SALESFORCE, HUBSPOT, ZOHO, DYNAMICS, PIPEDRIVE, CLOSE, KEAP, AMOCRM, BITRIX24, GOOGLE)
}
# Platforms served by another's connector and simulator (a descriptor that ``extends`` it).
VARIANTS = {"SalesforceSandbox": "Salesforce"}
