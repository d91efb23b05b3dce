"""The Bitrix24 simulator checked with Bitrix24's official Python SDK (``b24pysdk``): where the
SDK and the simulator disagree, the simulator is wrong."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from b24pysdk import BitrixApp, BitrixToken, BitrixWebhook, Client
from b24pysdk.api.requesters.bitrix_oauth_requester import BitrixOAuthRequester
from b24pysdk.errors import BitrixAPIError, BitrixAPIServiceUnavailable

from crmsim.bitrix24 import Bitrix24Simulator
from crmsim.faults import Fault
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates


@pytest.fixture
def sim(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Bitrix24Simulator, Client, BitrixWebhook]]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca_file))  # requests' trust
    simulator = Bitrix24Simulator(burst=100_000)
    with RunningSimulator(simulator.app(), certificates) as running:
        simulator.base_url = running.base_url
        token = simulator.webhook_url().removeprefix(running.base_url + "/rest/")
        webhook = BitrixWebhook(
            domain=running.base_url.removeprefix("https://"), webhook_token=token
        )
        yield simulator, Client(webhook), webhook


Sim = tuple[Bitrix24Simulator, Client, BitrixWebhook]


def test_contacts_crud(sim: Sim) -> None:
    simulator, client, _ = sim
    email = [{"VALUE": "ann@acme.example", "VALUE_TYPE": "WORK"}]
    made = client.crm.contact.add(fields={"NAME": "Ann", "LAST_NAME": "Lee", "EMAIL": email})
    contact_id = made.result
    assert isinstance(contact_id, int) and str(contact_id) in simulator.store["contact"]
    read = client.crm.contact.get(bitrix_id=contact_id).result
    assert read["NAME"] == "Ann" and read["EMAIL"][0]["VALUE"] == "ann@acme.example"
    assert client.crm.contact.update(bitrix_id=contact_id, fields={"POST": "CFO"}).result is True
    assert client.crm.contact.get(bitrix_id=contact_id).result["POST"] == "CFO"
    listed = client.crm.contact.list(select=["ID", "NAME"], filter={"=NAME": "Ann"}).result
    assert [row["ID"] for row in listed] == [str(contact_id)]
    assert client.crm.contact.delete(bitrix_id=contact_id).result is True
    with pytest.raises(BitrixAPIError) as gone:
        _ = client.crm.contact.get(bitrix_id=contact_id).result
    assert gone.value.error_description == "Not found"


def test_lists_page_by_fifty_with_next_and_total(sim: Sim) -> None:
    simulator, client, _ = sim
    for n in range(120):
        simulator.insert("contact", {"LAST_NAME": f"C{n:03d}"})
    first = client.crm.contact.list(select=["ID"], order={"ID": "ASC"})
    assert len(first.result) == 50
    assert first.response.next == 50 and first.response.total == 120
    whole = client.crm.contact.list(select=["ID", "LAST_NAME"]).as_list().result
    assert [row["LAST_NAME"] for row in whole] == [f"C{n:03d}" for n in range(120)]


def test_a_batch_runs_each_command_and_keeps_their_errors(sim: Sim) -> None:
    simulator, client, webhook = sim
    one = simulator.insert("contact", {"NAME": "One"})
    answer = webhook.call_batch(
        {
            "made": (
                "crm.contact.add",
                {"fields": {"NAME": "Two", "EMAIL": [{"VALUE": "t@x.io"}]}},
            ),
            "read": ("crm.contact.get", {"id": one}),
            "gone": ("crm.contact.get", {"id": 999999}),
            "list": ("crm.contact.list", {"select": ["ID"]}),
        }
    )["result"]
    made = answer["result"]["made"]
    assert simulator.store["contact"][str(made)]["EMAIL"][0]["VALUE"] == "t@x.io"
    assert answer["result"]["read"]["NAME"] == "One"
    assert answer["result_error"]["gone"]["error_description"] == "Not found"
    assert answer["result_total"]["list"] == 2, answer
    batched = client.call_batch(
        {"a": client.crm.contact.get(bitrix_id=int(one)), "b": client.crm.contact.fields()}
    )
    assert batched.result.result["a"]["NAME"] == "One" and "EMAIL" in batched.result.result["b"]
    listed = webhook.call_batch([("crm.contact.get", {"id": one})])["result"]
    assert listed["result"][0]["NAME"] == "One" and listed["result_error"] == []  # PHP's lists


def test_errors_are_the_sdks_exceptions(sim: Sim) -> None:
    simulator, client, _ = sim
    limited = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    simulator.faults.add(Fault(503, json.dumps(limited), "application/json"), times=None)
    with pytest.raises(BitrixAPIServiceUnavailable) as busy:
        _ = client.crm.contact.list().result
    assert busy.value.error == "QUERY_LIMIT_EXCEEDED"
    simulator.faults.clear()
    wrong = BitrixWebhook(
        domain=simulator.base_url.removeprefix("https://"), webhook_token="1/nope1234"
    )
    with pytest.raises(BitrixAPIError) as refused:
        _ = Client(wrong).crm.contact.list().result
    assert refused.value.error == "INVALID_CREDENTIALS"


def test_an_expired_oauth_token_is_refreshed_at_the_token_server_with_get(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's token host (oauth.bitrix24.tech) played by the simulator: on expired_token
    it refreshes with a GET and calls again with the new token."""
    simulator, _, _ = sim
    monkeypatch.setattr(
        BitrixOAuthRequester, "_OAUTH_TOKEN_URL", f"{simulator.base_url}/oauth/token/"
    )
    simulator.add_app("local.sdk", "sdk-secret")
    simulator.insert("contact", {"NAME": "Ann"})
    token = BitrixToken(
        domain=simulator.base_url.removeprefix("https://"),
        auth_token=simulator.issue_access_token(),
        refresh_token=simulator.issue_refresh_token("local.sdk"),
        bitrix_app=BitrixApp(client_id="local.sdk", client_secret="sdk-secret"),
    )
    old = token.auth_token
    simulator.expire_tokens()
    assert [row["NAME"] for row in Client(token).crm.contact.list().result] == ["Ann"]
    assert token.auth_token != old
    assert [c for c in simulator.calls if c[1] == "/oauth/token/"] == [("GET", "/oauth/token/")]


def test_timeline_comments_name_their_record_and_its_list_requires_it(sim: Sim) -> None:
    simulator, client, _ = sim
    company = int(simulator.insert("company", {"TITLE": "Acme"}))
    comments = client.crm.timeline.comment
    files = [["a.txt", base64.b64encode(b"hi").decode()]]
    fields = {"ENTITY_ID": company, "ENTITY_TYPE": "company", "COMMENT": "Hello", "FILES": files}
    made = comments.add(fields=fields).result
    assert isinstance(made, int)
    read = comments.get(bitrix_id=made).result
    assert (read["ENTITY_TYPE"], read["ENTITY_ID"], read["COMMENT"]) == (
        "company",
        str(company),
        "Hello",
    )
    assert [(f["name"], f["size"]) for f in read["FILES"].values()] == [("a.txt", 2)]
    assert comments.update(bitrix_id=made, fields={"COMMENT": "Changed"}).result == made
    on = {"ENTITY_ID": company, "ENTITY_TYPE": "company"}
    listed = comments.list(filter=on, select=["ID", "COMMENT"], order={"ID": "DESC"})
    assert [(row["ID"], row["COMMENT"]) for row in listed.result] == [(str(made), "Changed")]
    assert listed.response.total == 1
    assert [row["ID"] for row in comments.list(filter=on).as_list().result] == [str(made)]
    with pytest.raises(BitrixAPIError) as unnamed:
        _ = comments.list(filter={}).result
    assert unnamed.value.error_description == "ENTITY_TYPE is not defined or invalid."
    described = comments.fields().result
    assert described["ENTITY_ID"]["isRequired"] and described["ENTITY_ID"]["isImmutable"]
    assert comments.delete(bitrix_id=made).result is None
    with pytest.raises(BitrixAPIError) as gone:
        _ = comments.get(bitrix_id=made).result
    assert gone.value.error_description == "Not found."
    with pytest.raises(BitrixAPIError) as unknown:
        _ = comments.update(bitrix_id=made, fields={"COMMENT": "x"}).result
    assert unknown.value.error == "NOT_FOUND"
    with pytest.raises(BitrixAPIError) as orphan:
        _ = comments.add(fields={**fields, "ENTITY_ID": 999999}).result
    assert orphan.value.error == "OWNER_NOT_FOUND"
