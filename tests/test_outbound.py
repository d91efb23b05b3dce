"""The outbound client's trust: the operator's extra CA file adds to the system's authorities."""

from __future__ import annotations

import ssl

from crmgate.outbound import Outbound
from crmsim.tls import Certificates


def test_an_extra_ca_file_adds_to_the_system_authorities(certificates: Certificates) -> None:
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    outbound = Outbound(ca_file=str(certificates.ca_file), allowed_networks=["127.0.0.0/8"])
    context = outbound._ssl
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == system + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_host_is_a_host_name_or_an_address_and_nothing_else() -> None:
    import pytest
    from yarl import URL

    from crmgate.outbound import OutboundRefused, check_url

    patterns = ["*.crm.dynamics.com", "127.0.0.1:8443"]
    assert check_url("https://org.crm.dynamics.com", patterns) == URL(
        "https://org.crm.dynamics.com"
    )
    assert check_url("https://127.0.0.1:8443/x", patterns).host == "127.0.0.1"
    for hostile in (
        "https://graph.microsoft.com mail.read x.crm.dynamics.com",  # words for an OAuth scope
        "https://a%20b.crm.dynamics.com",
        "https://-bad.crm.dynamics.com",
        "https://a_b.crm.dynamics.com",
        "https://a..crm.dynamics.com",
        "http://org.crm.dynamics.com",
        "https://user@org.crm.dynamics.com",
        "https://org.crm.dynamics.com.evil.example",
    ):
        with pytest.raises(OutboundRefused):
            check_url(hostile, patterns)
