"""The outbound client's trust: the operator's extra CA file adds to the system's authorities."""

from __future__ import annotations

import ssl

from crmgate.outbound import Outbound
from crmsim.tls import Certificates


def test_an_extra_ca_file_adds_to_the_system_authorities(certificates: Certificates) -> None:
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    outbound = Outbound(ca_file=str(certificates.ca_file))
    context = outbound._ssl
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == system + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
