"""The Zoho CRM simulator checked with Zoho's official Python SDK (zohocrmsdk8-0, API v8): where
the SDK and the simulator disagree, the simulator is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store import FileStore
from zohocrmsdk.src.com.zoho.api.logger import Logger
from zohocrmsdk.src.com.zoho.crm.api.coql import BodyWrapper as CoqlBody
from zohocrmsdk.src.com.zoho.crm.api.coql import CoqlOperations
from zohocrmsdk.src.com.zoho.crm.api.coql import ResponseWrapper as CoqlResponse
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.fields import FieldsOperations, GetFieldsParam
from zohocrmsdk.src.com.zoho.crm.api.fields import ResponseWrapper as FieldsResponse
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.param import Param
from zohocrmsdk.src.com.zoho.crm.api.parameter_map import ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.record import (
    ActionWrapper,
    APIException,
    BodyWrapper,
    GetRecordsParam,
    Record,
    RecordOperations,
    ResponseWrapper,
    SuccessResponse,
)
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig
from zohocrmsdk.src.com.zoho.crm.api.users import GetUsersParam, UsersOperations
from zohocrmsdk.src.com.zoho.crm.api.users import ResponseWrapper as UsersResponse

from crmsim.server import RunningSimulator
from crmsim.tls import Certificates
from crmsim.zoho import ZohoSimulator


@pytest.fixture
def sim(
    certificates: Certificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ZohoSimulator]:
    simulator = ZohoSimulator()
    simulator.add_app("1000.SDK", "sdk-secret")
    refresh = simulator.issue_refresh_token("1000.SDK")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca_file))
    with RunningSimulator(simulator.app(), certificates) as running:
        simulator.base_url = running.base_url
        environment = DataCenter.Environment(
            running.base_url, f"{running.base_url}/oauth/v2/token", running.base_url
        )
        token = OAuthToken(client_id="1000.SDK", client_secret="sdk-secret", refresh_token=refresh)
        resources = tmp_path / "sdk"
        resources.mkdir()
        Initializer.initialize(
            environment=environment,
            token=token,
            store=FileStore(str(tmp_path / "tokens.csv")),
            sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=False),
            resource_path=str(resources),
            logger=Logger.get_instance(Logger.Levels.INFO, str(tmp_path / "sdk.log")),
        )
        yield simulator


def _record(**values: Any) -> Record:
    record = Record()
    for name, value in values.items():
        record.add_key_value(name, value)
    return record


def _created_ids(response: Any) -> list[str]:
    assert response is not None and response.get_status_code() in (200, 201), response
    wrapper = response.get_object()
    assert isinstance(wrapper, ActionWrapper), wrapper
    ids = []
    for item in wrapper.get_data():
        assert isinstance(item, SuccessResponse), item.get_message().get_value()
        ids.append(str(item.get_details()["id"]))
    return ids


def test_records_crud_through_the_sdk(sim: ZohoSimulator) -> None:
    contacts = RecordOperations("Contacts")
    body = BodyWrapper()
    body.set_data([_record(Last_Name="King", First_Name="Ada", Email="ada@example.com")])
    (made,) = _created_ids(contacts.create_records(body))
    assert sim.records["Contacts"][made]["Full_Name"] == "Ada King"
    assert any(c[1] == "/oauth/v2/token" for c in sim.queries)  # refresh token used

    got = contacts.get_record(int(made))
    assert got.get_status_code() == 200
    record = got.get_object().get_data()[0]
    assert isinstance(got.get_object(), ResponseWrapper)
    assert record.get_key_value("Last_Name") == "King" and str(record.get_id()) == made

    change = BodyWrapper()
    change.set_data([_record(Title="Countess")])
    assert _created_ids(contacts.update_record(int(made), change)) == [made]
    assert sim.records["Contacts"][made]["Title"] == "Countess"

    deleted = contacts.delete_record(int(made))
    assert deleted.get_status_code() == 200
    assert contacts.get_record(int(made)).get_status_code() == 204  # Zoho: no content


def test_list_paging_and_validation(sim: ZohoSimulator) -> None:
    for n in range(5):
        sim.insert("Leads", {"Last_Name": f"L{n}", "Company": "Initech"})
    leads = RecordOperations("Leads")
    params = ParameterMap()
    params.add(GetRecordsParam.fields, "Last_Name,Company")
    params.add(GetRecordsParam.per_page, 2)
    params.add(GetRecordsParam.sort_by, "id")
    params.add(GetRecordsParam.sort_order, "asc")
    first = leads.get_records(params)
    assert first.get_status_code() == 200
    wrapper = first.get_object()
    names = [r.get_key_value("Last_Name") for r in wrapper.get_data()]
    info = wrapper.get_info()
    assert names == ["L0", "L1"] and info.get_more_records() is True
    token = info.get_next_page_token()
    assert token
    following = ParameterMap()
    following.add(GetRecordsParam.fields, "Last_Name")
    following.add(GetRecordsParam.per_page, 2)
    following.add(GetRecordsParam.sort_by, "id")
    following.add(GetRecordsParam.sort_order, "asc")
    following.add(Param("page_token", "com.zoho.crm.api.Record.GetRecordsParam"), token)
    second = leads.get_records(following).get_object()
    assert [r.get_key_value("Last_Name") for r in second.get_data()] == ["L2", "L3"]

    no_fields = leads.get_records(ParameterMap())
    assert no_fields.get_status_code() == 400
    error = no_fields.get_object()
    assert isinstance(error, APIException)
    assert error.get_code().get_value() == "REQUIRED_PARAM_MISSING"

    body = BodyWrapper()
    body.set_data([_record(Company="No last name")])
    refused = leads.create_records(body)
    assert refused.get_status_code() == 400
    item = refused.get_object().get_data()[0]
    assert item.get_code().get_value() == "MANDATORY_NOT_FOUND"
    assert item.get_details()["api_name"] == "Last_Name"


def test_coql_fields_and_users(sim: ZohoSimulator) -> None:
    acme = sim.insert("Accounts", {"Account_Name": "Acme"})
    sim.insert("Contacts", {"Last_Name": "O'Hara", "Account_Name": {"id": acme}})
    sim.insert("Contacts", {"Last_Name": "Smith"})
    query = CoqlBody()
    query.set_select_query(
        "select Last_Name, Account_Name from Contacts where Last_Name = 'O''Hara' limit 10"
    )
    answer = CoqlOperations().get_records(query)
    assert answer.get_status_code() == 200
    wrapper = answer.get_object()
    assert isinstance(wrapper, CoqlResponse)
    (row,) = wrapper.get_data()
    assert row.get_key_value("Last_Name") == "O'Hara"
    count = CoqlBody()
    count.set_select_query("select COUNT(id) from Contacts where id is not null")
    (total,) = CoqlOperations().get_records(count).get_object().get_data()
    assert total.get_key_value("COUNT(id)") == 2
    sim.insert("Contacts", {"Last_Name": "back\\slash"})  # a backslash is a plain character
    slash = CoqlBody()
    slash.set_select_query("select Last_Name from Contacts where Last_Name = 'back\\slash'")
    (found,) = CoqlOperations().get_records(slash).get_object().get_data()
    assert found.get_key_value("Last_Name") == "back\\slash"
    unpaired = CoqlBody()
    unpaired.set_select_query(
        "select id from Contacts where id is not null and Last_Name = 'a' and Last_Name = 'b'"
    )
    assert CoqlOperations().get_records(unpaired).get_status_code() == 400

    params = ParameterMap()
    params.add(GetFieldsParam.module, "Deals")
    fields = FieldsOperations().get_fields(params).get_object()
    assert isinstance(fields, FieldsResponse)
    by_name = {f.get_api_name(): f for f in fields.get_fields()}
    stage = by_name["Stage"]
    assert stage.get_data_type() == "picklist" and stage.get_system_mandatory() is True
    assert "Closed Won" in [v.get_actual_value() for v in stage.get_pick_list_values()]
    assert by_name["Account_Name"].get_lookup().get_module().get_api_name() == "Accounts"

    users = ParameterMap()
    users.add(GetUsersParam.type, "CurrentUser")
    answer = UsersOperations().get_users(users)
    assert answer.get_status_code() == 200
    (me,) = answer.get_object().get_users()
    assert isinstance(answer.get_object(), UsersResponse)
    assert me.get_email() == sim.owner.email


def test_rate_limits_and_bad_tokens(sim: ZohoSimulator) -> None:
    contacts = RecordOperations("Contacts")
    params = ParameterMap()
    params.add(GetRecordsParam.fields, "Last_Name")
    assert contacts.get_records(params).get_status_code() == 204  # empty: no content
    sim.quota.used = sim.quota.limit  # no API credits left
    limited = contacts.get_records(params)
    assert limited.get_status_code() == 429
    assert limited.get_headers()["X-RATELIMIT-REMAINING"] == "0"
    assert limited.get_object().get_code().get_value() == "TOO_MANY_REQUESTS"
    sim.quota.used = sim.quota.limit - 100
    sim.tokens.access.clear()  # revoked: the SDK's stored token no longer works
    refused = contacts.get_records(params)
    assert refused.get_status_code() == 401
    assert refused.get_object().get_code().get_value() == "INVALID_OAUTHTOKEN"  # v8
