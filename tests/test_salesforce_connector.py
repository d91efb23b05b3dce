"""The Salesforce connector's identity calls, against the simulator over HTTPS on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import SalesforceSim
from crmgate.connectors.base import Verified
from crmgate.connectors.catalogue import Catalogue
from crmgate.connectors.errors import CredentialsRejected
from crmgate.connectors.salesforce import SalesforceConnector
from crmgate.outbound import Outbound, OutboundRefused


def verify(sim: SalesforceSim, authorization: str, credential: dict[str, str]) -> Verified:
    async def go() -> Verified:
        catalogue = Catalogue.load(["salesforce"], sim.overrides())
        platform = catalogue.get("Salesforce")
        assert platform is not None
        outbound = Outbound(ca_file=sim.ca_file, allowed_networks=["127.0.0.0/8"])
        try:
            return await SalesforceConnector(platform, outbound).verify(authorization, credential)
        finally:
            await outbound.close()

    return asyncio.run(go())


def test_oauth_token_is_verified_through_userinfo(salesforce: SalesforceSim) -> None:
    user = salesforce.simulator.add_user("ada@acme.example", "pw", name="Ada Lovelace")
    token = salesforce.simulator.issue_session(user)
    verified = verify(
        salesforce,
        "oAuth-external-refresh",
        {"instance_url": salesforce.base_url, "access_token": token},
    )
    assert verified.identity.user_id == user.id
    assert verified.identity.company_id == salesforce.simulator.org_id
    assert verified.identity.email == "ada@acme.example"
    assert ("GET", "/services/oauth2/userinfo") in salesforce.simulator.calls


def test_a_refused_token_is_credentials_rejected(salesforce: SalesforceSim) -> None:
    with pytest.raises(CredentialsRejected, match="Bad_OAuth_Token"):
        verify(
            salesforce,
            "oAuth-internal",
            {"instance_url": salesforce.base_url, "access_token": "00Dbogus", "refresh_token": "x"},
        )


def test_user_login_returns_a_session_and_the_identity(salesforce: SalesforceSim) -> None:
    user = salesforce.simulator.add_user("bo@acme.example", "s3cret", security_token="TOKEN123")
    verified = verify(
        salesforce,
        "user",
        {"login": user.username, "password": "s3cret", "security_token": "TOKEN123"},
    )
    assert verified.identity.username == "bo@acme.example"
    assert verified.identity.company_name == "Acme Corp (sim)"
    assert verified.derived["instance_url"] == salesforce.base_url
    assert verified.derived["session_id"] in salesforce.simulator.sessions


def test_a_wrong_password_is_credentials_rejected(salesforce: SalesforceSim) -> None:
    salesforce.simulator.add_user("bo@acme.example", "s3cret", security_token="T")
    with pytest.raises(CredentialsRejected, match=r"Invalid username"):
        verify(salesforce, "user", {"login": "bo@acme.example", "password": "wrong"})


@pytest.mark.parametrize(
    "instance_url",
    [
        "http://127.0.0.1:1",  # not https
        "https://login.salesforce.com.evil.example",  # look-alike
        "https://169.254.169.254",
        "https://user:pw@{host}",
    ],
)
def test_instance_urls_off_the_platform_hosts_are_refused(
    salesforce: SalesforceSim, instance_url: str
) -> None:
    url: Any = instance_url.format(host=salesforce.host)
    with pytest.raises(OutboundRefused):
        verify(salesforce, "oAuth-external-refresh", {"instance_url": url, "access_token": "t"})
    assert not salesforce.simulator.calls


def test_each_platform_type_gets_its_own_descriptor(tmp_path: Any) -> None:
    """Salesforce logs in at login.salesforce.com and its sandbox at test.salesforce.com, even
    though both are driven by the same connector code."""
    from conftest import make_settings, with_services

    settings = make_settings(tmp_path / "data")

    async def hosts(services: Any) -> dict[str, Any]:
        service = services.applications
        return {
            kind: (
                service.connector(service.catalogue.get(kind)).platform.login_url,
                service.connector(service.catalogue.get(kind)).platform.oauth.revoke_url,
            )
            for kind in ("Salesforce", "SalesforceSandbox")
        }

    assert with_services(settings, hosts) == {
        "Salesforce": (
            "https://login.salesforce.com",
            "https://login.salesforce.com/services/oauth2/revoke",
        ),
        "SalesforceSandbox": (
            "https://test.salesforce.com",
            "https://test.salesforce.com/services/oauth2/revoke",
        ),
    }


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://acme.my.salesforce.com", "https://acme.my.salesforce.com"),
        ("https://ACME.My.Salesforce.com./", "https://acme.my.salesforce.com"),
        (
            "https://acme--dev.sandbox.my.salesforce.com",
            "https://acme--dev.sandbox.my.salesforce.com",
        ),
        ("https://na1.salesforce.com", "https://na1.salesforce.com"),
        ("https://acme.my.salesforce.com.evil.example", None),
        ("https://evil.example#.my.salesforce.com", None),
        ("https://evil.example?.my.salesforce.com", None),
        ("https://x.my.salesforce.com@evil.example", None),
        ("https://evil.example\\.my.salesforce.com", None),
        ("https://salesforce.com", None),
        ("https://acme.my.salesforce.com:8443", None),
        ("https://acme.my.salesforce.com:0", None),
        ("http://acme.my.salesforce.com", None),
        ("https://xn--x.my.salesforce.com", "https://xn--x.my.salesforce.com"),
        ("https://acme.my.salesforce.com/services/apexrest/x", None),
        ("https://acme.my.salesforce.com/?q=1", None),
        ("https://acme.my.salesforce.com/#frag", None),
        ("not a url", None),
    ],
)
def test_instance_urls_against_the_real_salesforce_patterns(url: str, accepted: str | None) -> None:
    catalogue = Catalogue.load(["salesforce"])
    platform = catalogue.get("Salesforce")
    assert platform is not None
    connector = SalesforceConnector(platform, Outbound())
    if accepted is None:
        with pytest.raises(OutboundRefused):
            connector.instance_url(url)
    else:
        assert str(connector.instance_url(url)) == accepted


def test_an_org_without_api_access_is_api_not_enabled(salesforce: SalesforceSim) -> None:
    from crmgate.connectors.errors import ApiNotEnabled

    salesforce.simulator.add_user("bo@acme.example", "pw", security_token="T")
    salesforce.simulator.api_enabled = False
    with pytest.raises(ApiNotEnabled, match="API is not enabled"):
        verify(
            salesforce,
            "user",
            {"login": "bo@acme.example", "password": "pw", "security_token": "T"},
        )


def test_reprs_hide_the_derived_session() -> None:
    from crmgate.connectors.base import Identity

    verified = Verified(Identity("005", "Ada", "a@x", "ada", "00D"), {"session_id": "00D!SECRET"})
    assert "00D!SECRET" not in repr(verified)


def test_answers_are_read_whole_and_capped(salesforce: SalesforceSim) -> None:
    from yarl import URL

    from crmgate.outbound import OutboundFailed

    async def fetch(limit: int) -> int:
        outbound = Outbound(
            ca_file=salesforce.ca_file, max_response_bytes=limit, allowed_networks=["127.0.0.0/8"]
        )
        try:
            response = await outbound.request("GET", URL(salesforce.base_url) / "services/data")
            return len(response.body)
        finally:
            await outbound.close()

    size = asyncio.run(fetch(10_000))
    assert size > 100
    with pytest.raises(OutboundFailed, match="more than 100 bytes"):
        asyncio.run(fetch(100))
