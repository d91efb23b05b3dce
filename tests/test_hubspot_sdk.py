"""The HubSpot simulator checked with HubSpot's official SDK (hubspot-api-client): where the SDK
and the simulator disagree, the simulator is wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hubspot import HubSpot as Client
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputForCreate,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException

from conftest import HubSpot


@pytest.fixture
def sdk(hubspot: HubSpot) -> Iterator[Client]:
    token = hubspot.simulator.add_private_app()
    yield Client(access_token=token, host=hubspot.base_url, ssl_ca_cert=hubspot.ca_file)


def test_contacts_crud(sdk: Client) -> None:
    api = sdk.crm.contacts.basic_api
    made = api.create(
        SimplePublicObjectInputForCreate(properties={"firstname": "Ada", "lastname": "King"})
    )
    assert made.id and made.properties["firstname"] == "Ada" and made.created_at is not None
    read = api.get_by_id(made.id, properties=["lastname", "email"])
    assert read.properties["lastname"] == "King" and read.properties["email"] is None
    api.update(made.id, SimplePublicObjectInput(properties={"email": "ada@example.com"}))
    assert api.get_by_id(made.id, properties=["email"]).properties["email"] == "ada@example.com"
    api.archive(made.id)
    with pytest.raises(ApiException) as missing:
        api.get_by_id(made.id)
    assert missing.value.status == 404


def test_search_paging_and_validation(sdk: Client) -> None:
    api = sdk.crm.contacts
    for name in ("Ann", "Bob", "Cy"):
        api.basic_api.create(SimplePublicObjectInputForCreate(properties={"lastname": name}))
    request = PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(filters=[Filter(property_name="lastname", operator="NEQ", value="Bob")])
        ],
        sorts=[{"propertyName": "lastname", "direction": "DESCENDING"}],
        properties=["lastname"],
        limit=1,
    )
    first = api.search_api.do_search(public_object_search_request=request)
    assert first.total == 2 and [r.properties["lastname"] for r in first.results] == ["Cy"]
    request.after = first.paging.next.after
    second = api.search_api.do_search(public_object_search_request=request)
    assert [r.properties["lastname"] for r in second.results] == ["Ann"]
    with pytest.raises(ApiException) as invalid:
        api.basic_api.create(SimplePublicObjectInputForCreate(properties={"shoe_size": "44"}))
    assert invalid.value.status == 400 and "PROPERTY_DOESNT_EXIST" in invalid.value.body


def test_batch_create_and_properties(sdk: Client) -> None:
    batch = sdk.crm.contacts.batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                SimplePublicObjectInputForCreate(properties={"lastname": f"B{n}"}) for n in range(3)
            ]
        )
    )
    assert batch.status == "COMPLETE" and len(batch.results) == 3
    properties = sdk.crm.properties.core_api.get_all("contacts")
    names = {p.name: p for p in properties.results}
    assert names["lifecyclestage"].type == "enumeration" and names["lifecyclestage"].options
    assert names["createdate"].modification_metadata.read_only_value is True


def test_rate_limits_and_bad_tokens(sdk: Client, hubspot: HubSpot) -> None:
    hubspot.simulator.ten_secondly = 0
    with pytest.raises(ApiException) as limited:
        sdk.crm.contacts.basic_api.get_page()
    assert limited.value.status == 429
    assert limited.value.headers["X-HubSpot-RateLimit-Max"] == "0"
    wrong = Client(access_token="pat-na1-wrong", host=hubspot.base_url, ssl_ca_cert=hubspot.ca_file)
    with pytest.raises(ApiException) as refused:
        wrong.crm.contacts.basic_api.get_page()
    assert refused.value.status == 401


def test_associations(sdk: Client) -> None:
    from hubspot.crm.associations.v4 import (
        AssociationSpec,
        BatchInputPublicFetchAssociationsBatchRequest,
        PublicFetchAssociationsBatchRequest,
    )
    from hubspot.crm.associations.v4.exceptions import ApiException as V4Error
    from hubspot.crm.deals import SimplePublicObjectInputForCreate as DealInput

    company = sdk.crm.companies.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"name": "Acme"})
    ).id
    deal = sdk.crm.deals.basic_api.create(
        DealInput(
            properties={"dealname": "Rockets", "dealstage": "closedwon"},
            associations=[
                {
                    "to": {"id": company},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}],
                }
            ],
        )
    ).id
    read = sdk.crm.deals.basic_api.get_by_id(deal, associations=["companies"])
    assert {(a.id, a.type) for a in read.associations["companies"].results} == {
        (company, "deal_to_company"),
        (company, "deal_to_company_unlabeled"),
    }
    contact = sdk.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"lastname": "Ada"})
    ).id
    v4 = sdk.crm.associations.v4
    made = v4.basic_api.create_default("deals", deal, "contacts", contact)
    assert made.results[0].association_spec.association_type_id == 3
    labelled = v4.basic_api.create(
        "contacts",
        contact,
        "companies",
        company,
        [AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=1)],
    )
    assert labelled.labels == ["Primary"]
    batch = v4.batch_api.get_page(
        "contacts",
        "companies",
        BatchInputPublicFetchAssociationsBatchRequest(
            inputs=[PublicFetchAssociationsBatchRequest(id=contact)]
        ),
    )
    types = {t.type_id for t in batch.results[0].to[0].association_types}
    assert str(batch.results[0].to[0].to_object_id) == company and types == {1, 279}
    v4.basic_api.archive("contacts", contact, "companies", company)
    with pytest.raises(V4Error) as wrong:
        v4.basic_api.create(
            "deals",
            deal,
            "companies",
            company,
            [AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=279)],
        )
    assert wrong.value.status == 400


def test_owners(sdk: Client, hubspot: HubSpot) -> None:
    for n in range(3):
        hubspot.simulator.add_owner(f"o{n}@portal.example", f"O{n}", "Owner")
    first = sdk.crm.owners.owners_api.get_page(limit=2)
    assert len(first.results) == 2 and first.paging.next.after
    rest = sdk.crm.owners.owners_api.get_page(limit=2, after=first.paging.next.after)
    assert [o.email for o in rest.results] == ["o1@portal.example", "o2@portal.example"]
    one = sdk.crm.owners.owners_api.get_by_id(int(rest.results[0].id))
    assert one.first_name == "O1" and one.archived is False
    by_email = sdk.crm.owners.owners_api.get_page(email="o2@portal.example")
    assert [o.last_name for o in by_email.results] == ["Owner"]
