"""The one input rule for text (docs/errors.md): every string crmgate accepts is valid Unicode
without NUL, or the request is refused with 422 NOT_VALID naming the field, before any CRM or the
store sees it; and a record a CRM holds with text that is not (a lone surrogate another client
wrote) is still read, with U+FFFD in its place.

Over real HTTP: crmgate on loopback, each of the five CRMs played by its simulator over HTTPS. The
module runs on SQLite: the rule sits in front of the store, whichever it is."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    AppClient,
    RunningGateway,
    create_account,
    make_settings,
    migrate_database,
    sqlite_only,
)
from crmgate.api.app import create_app
from crmgate.settings import Settings
from crmsim import dynamics, hubspot, pipedrive, salesforce, zoho
from crmsim.faults import Fault
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates

pytestmark = sqlite_only

SURROGATE = "\ud800x"  # an unpaired (high) surrogate: no Unicode text can hold it


@dataclass(frozen=True)
class Platform:
    """How to run one CRM's simulator, connect crmgate to it and write a contact straight into
    its record store, as another client of that CRM would have (native field names)."""

    simulator: Callable[[], Any]
    overrides: Callable[[str], dict[str, dict[str, Any]]]
    credential: Callable[[Any, str], tuple[str, dict[str, str]]]  # (authorization, credential)
    seed_contact: Callable[[Any, str], str]  # (simulator, last name) -> the record's id
    raw_contact: str  # the contact's passthrough path, with {id}
    store: Callable[[Any], dict[str, dict[str, Any]]] = lambda sim: sim.records


def _salesforce_credential(sim: salesforce.SalesforceSimulator, url: str) -> tuple[str, dict]:
    user = sim.add_user("ada@acme.example", "pw", name="Ada King")
    return "oAuth-external-refresh", {"instance_url": url, "access_token": sim.issue_session(user)}


PLATFORMS: dict[str, Platform] = {
    "Salesforce": Platform(
        lambda: salesforce.SalesforceSimulator(org_name="Acme Corp (sim)"),
        salesforce.platform_overrides,
        _salesforce_credential,
        lambda sim, last: sim.data.insert("Contact", {"LastName": last}),
        "sobjects/Contact/{id}",
        store=lambda sim: sim.data.records,
    ),
    "HubSpot": Platform(
        hubspot.HubSpotSimulator,
        hubspot.platform_overrides,
        lambda sim, url: ("key", {"access_token": sim.add_private_app()}),
        lambda sim, last: sim.insert("contacts", {"lastname": last}),
        "crm/v3/objects/contacts/{id}",
    ),
    "Pipedrive": Platform(
        pipedrive.PipedriveSimulator,
        pipedrive.platform_overrides,
        lambda sim, url: ("key", {"instance_url": url, "api_token": sim.add_api_token()}),
        lambda sim, last: sim.insert("persons", {"name": f"Ada {last}"}),
        "api/v2/persons/{id}",
    ),
    "ZohoCRM": Platform(
        zoho.ZohoSimulator,
        zoho.platform_overrides,
        lambda sim, url: (
            "oAuth-external-refresh",
            {"instance_url": url, "access_token": sim.issue_access_token()},
        ),
        lambda sim, last: sim.insert("Contacts", {"Last_Name": last}),
        "Contacts/{id}",
    ),
    "MicrosoftDynamics": Platform(
        dynamics.DynamicsSimulator,
        dynamics.platform_overrides,
        lambda sim, url: (
            "oAuth-external-refresh",
            {"instance_url": url, "access_token": sim.issue_access_token(lifetime=3600)},
        ),
        lambda sim, last: sim.insert("contact", {"lastname": last}),
        "contacts({id})",
    ),
}


class Crm(AppClient):
    """A client of one connected application, and the simulator behind it."""

    def __init__(self, client: httpx.Client, key: str, sim: Any, platform: Platform) -> None:
        super().__init__(client, key)
        self.sim = sim
        self.platform = platform

    def calls(self) -> int:
        """How many requests the CRM has received so far."""
        return len(self.sim.calls)

    def records(self) -> int:
        return sum(len(rows) for rows in self.platform.store(self.sim).values())

    def send(self, method: str, path: str, body: Any) -> httpx.Response:
        """``body`` as JSON text with every non-ASCII character escaped (\\ud800), as most JSON
        encoders write it (httpx's own would refuse to encode a lone surrogate)."""
        return self.call(
            method,
            path,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )


@pytest.fixture(params=sorted(PLATFORMS))
def crm(
    request: pytest.FixtureRequest, tmp_path: Path, certificates: Certificates
) -> Iterator[Crm]:
    platform = PLATFORMS[request.param]
    sim = platform.simulator()
    with RunningSimulator(sim.app(), certificates) as running:
        sim.base_url = running.base_url
        settings = make_settings(
            tmp_path / "data",
            platform_overrides=platform.overrides(running.base_url),
            outbound_ca_file=str(certificates.ca_file),
        )
        migrate_database(settings)
        admin = create_account(settings)
        authorization, credential = platform.credential(sim, running.base_url)
        body = {"type": request.param, "authorization": authorization, "credential": credential}
        with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
            created = client.post("/v1/application", json=body)
            assert created.status_code == 201, created.text
            yield Crm(client, created.json()["key"], sim, platform)


def refused(response: httpx.Response, *fields: str) -> None:
    """A 422 NOT_VALID in the contract's shape that names exactly ``fields``."""
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["status"] == 422 and answer["detail"]["code"] == "NOT_VALID", answer
    assert [error["field"] for error in answer["detail"]["errors"]] == list(fields), answer


# ---- refused at the edge ------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_record_is_refused_before_the_crm(crm: Crm) -> None:
    calls, records = crm.calls(), crm.records()
    refused(crm.send("POST", "/entity/contact", {"last_name": SURROGATE}), "last_name")
    refused(
        crm.send("POST", "/entity/contact", {"last_name": "Ok", "custom_fields": {"x": "\udfff"}}),
        "custom_fields.x",
    )
    # object keys are text too; the field names the key with its bad character escaped
    refused(
        crm.send("POST", "/entity/contact", {"last_name": "Ok", "custom_fields": {"a\udc00": 1}}),
        "custom_fields.a\\udc00",
    )
    refused(
        crm.send("POST", "/entity/contact/bulk", {"item": [{"last_name": "Ok"}, {"x": SURROGATE}]}),
        "item.1.x",
    )
    refused(crm.send("PUT", "/entity/contact/1", {"first_name": SURROGATE}), "first_name")
    # the same bytes sent raw (UTF-8's encoding of U+D800, which is not UTF-8) are refused too
    raw = crm.call(
        "POST",
        "/entity/contact",
        content=b'{"last_name": "\xed\xa0\x80x"}',
        headers={"Content-Type": "application/json"},
    )
    refused(raw, "last_name")
    assert crm.calls() == calls and crm.records() == records


def test_nul_in_a_record_is_refused_before_the_crm(crm: Crm) -> None:
    calls, records = crm.calls(), crm.records()
    refused(crm.send("POST", "/entity/contact", {"last_name": "Ada\u0000"}), "last_name")
    refused(
        crm.send("POST", "/entity/contact", {"last_name": "Ok", "custom_fields": {"x": "\x00"}}),
        "custom_fields.x",
    )
    refused(crm.send("PUT", "/entity/contact/1", {"first_name": "\x00"}), "first_name")
    # a path parameter is text as well
    refused(crm.call("GET", "/entity/contact/a%00b"), "path")
    assert crm.calls() == calls and crm.records() == records


def test_a_filter_that_is_not_valid_text_is_refused_before_the_crm(crm: Crm) -> None:
    calls = crm.calls()
    nul = crm.call("GET", "/entity/contact/list", params={"filter": "last_name eq 'a\x00'"})
    refused(nul, "filter")
    # %ED%A0%80 is U+D800 in UTF-8's form, %FF no UTF-8 at all: neither decodes to text
    for bad in ("%ED%A0%80", "%FF"):
        listed = crm.call("GET", f"/entity/contact/list?filter=last_name%20eq%20%27{bad}%27")
        refused(listed, "filter")
        refused(
            crm.call("GET", f"/entity/contact/count?filter=last_name%20eq%20%27{bad}%27"), "filter"
        )
    assert crm.calls() == calls


def test_passthrough_text_is_refused_before_the_crm(crm: Crm) -> None:
    calls = crm.calls()
    header = {"path": "x", "header": [{"name": "X-Note", "value": SURROGATE}]}
    refused(crm.send("POST", "/request", header), "header.0.value")
    refused(crm.send("POST", "/request", {"path": "x\x00y"}), "path")
    refused(crm.send("POST", "/request", {"path": "x", "method": "GET\ud83d"}), "method")
    assert crm.calls() == calls


def test_gateway_entities_refuse_the_same_text(sqlite_settings: Settings) -> None:
    admin = create_account(sqlite_settings)
    with (
        RunningGateway(create_app(sqlite_settings)) as gateway,
        gateway.client(admin.key) as client,
    ):
        before = client.get("/v1/user/count").json()
        for user, fields in (
            ({"name": "Mo\x00", "email": "mo@acme.example"}, ("name",)),
            ({"name": SURROGATE, "email": "x\udbff@acme.example"}, ("name", "email")),
        ):
            body = json.dumps(user).encode()
            headers = {"Content-Type": "application/json"}
            refused(client.post("/v1/user", content=body, headers=headers), *fields)
        assert client.get("/v1/user/count").json() == before
        refused(client.get("/v1/user/list", params={"filter": "name eq '\x00'"}), "filter")


# ---- read whatever the CRM holds ----------------------------------------------------------------


def test_a_record_the_crm_holds_with_a_lone_surrogate_is_read(crm: Crm) -> None:
    record_id = crm.platform.seed_contact(crm.sim, SURROGATE)
    # the CRM sends it as JSON servers do: the escape \ud800, which strict decoders refuse
    raw = crm.ok(
        "POST", "/request", 201, json={"path": crm.platform.raw_contact.format(id=record_id)}
    )
    assert raw["status_code"] == 200 and b"\\ud800x" in base64.b64decode(raw["content"])

    one = crm.call("GET", f"/entity/contact/{record_id}")
    assert one.status_code == 200, one.text
    assert one.json()["last_name"] == "\ufffdx"
    assert "\\ud800" not in one.text  # replaced, not passed on as an escape
    listed = crm.call("GET", "/entity/contact/list")
    assert listed.status_code == 200, listed.text
    assert "\ufffdx" in [r["last_name"] for r in listed.json()]
    # and a client that decodes strictly (as Rust and Go do) reads the answers
    one.content.decode("utf-8", "strict")
    listed.content.decode("utf-8", "strict")


@pytest.mark.parametrize("crm", ["MicrosoftDynamics"], indirect=True)
def test_an_answer_that_is_not_utf8_is_read_with_replacement_characters(crm: Crm) -> None:
    """A CRM that sends bytes that are not UTF-8 (played by the Dynamics simulator's fault
    queue, which answers the next call with the given bytes): each such byte reads as U+FFFD,
    the record is read, and the list holding it too."""
    record_id = crm.platform.seed_contact(crm.sim, "Plain")
    assert crm.ok("GET", f"/entity/contact/{record_id}")["last_name"] == "Plain"  # warm
    answers = {}
    for name, path in (("one", f"contacts({record_id})"), ("list", "contacts")):
        raw = crm.ok("POST", "/request", 201, json={"path": path})
        answers[name] = base64.b64decode(raw["content"]).replace(b'"Plain"', b'"Pl\xffin"')

    crm.sim.faults.add(Fault(200, answers["one"], "application/json"))
    one = crm.call("GET", f"/entity/contact/{record_id}")
    assert one.status_code == 200, one.text
    assert one.json()["last_name"] == "Pl\ufffdin"
    crm.sim.faults.add(Fault(200, answers["list"], "application/json"))
    listed = crm.call("GET", "/entity/contact/list")
    assert listed.status_code == 200, listed.text
    assert "Pl\ufffdin" in [r["last_name"] for r in listed.json()]
