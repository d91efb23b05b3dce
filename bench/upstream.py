"""The gateway benchmark's upstream: Salesforce answers recorded from crmsim, served by nginx.

The answers (OAuth userinfo, the Contact describe and a SOQL query page of 25 contacts, the very
statement crmgate sends for ``/application/entity/contact/list?page_size=25``) come from crmsim's
Salesforce simulator, so they are shaped as crmgate's tests expect. nginx then serves them as
static files over HTTPS (crmgate calls https only), so the upstream costs a few microseconds a
request and the paths' own costs are what the benchmark sees. ``/services/__echo`` answers the
Authorization header it received: the benchmark checks that every proxy adds it.

The nginx configurations here are for throw-away instances under a temporary directory: one
worker each, on loopback, never the system service.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

from crmgate.connectors import soql
from crmgate.connectors.catalogue import load_descriptors
from crmsim.salesforce import API_VERSION, SalesforceSimulator
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates

QUERY = f"/services/data/v{API_VERSION}/query"
DESCRIBE = f"/services/data/v{API_VERSION}/sobjects/Contact/describe"
USERINFO = "/services/oauth2/userinfo"
ECHO = "/services/__echo"
# What paths A, B and C ask for (D asks for the same through the passthrough route).
LIST_QUERY = QUERY + "?q=SELECT+Id,FirstName,LastName,Email+FROM+Contact+LIMIT+25"


def contact_statement() -> str:
    """The SOQL crmgate sends for the first page of 25 unified contacts (its own builder)."""
    platform = next(p for p in load_descriptors() if p.type == "Salesforce")
    contact = platform.entities["contact"]
    return soql.select(contact, contact.native_columns(), limit=25, offset=0)


def record_answers(certificates: Certificates, directory: Path) -> dict[str, bytes]:
    """Ask crmsim's Salesforce for the answers the benchmark needs; write them as
    ``directory``/{userinfo,describe,query}.json and return them by file name."""
    simulator = SalesforceSimulator(org_name="Benchmark Org (crmsim)")
    user = simulator.add_user("bench@example.com", "bench-password", name="Bench User")
    account = simulator.data.insert("Account", {"Name": "Northwind Traders"}, user.id)
    for i in range(25):
        simulator.data.insert(
            "Contact",
            {
                "FirstName": f"First{i}",
                "LastName": f"Last{i}",
                "Title": "Buyer",
                "Department": "Purchasing",
                "Description": f"Contact number {i} of the benchmark page.",
                "Birthdate": f"19{60 + i}-0{1 + i % 9}-1{i % 10}",
                "Email": f"first{i}.last{i}@example.com",
                "Phone": f"+1 206 555 01{i:02d}",
                "MobilePhone": f"+1 425 555 01{i:02d}",
                "MailingStreet": f"{i + 1} Pike Street",
                "MailingCity": "Seattle",
                "MailingState": "WA",
                "MailingPostalCode": "98101",
                "MailingCountry": "US",
                "AccountId": account,
            },
            user.id,
        )
    token = simulator.issue_session(user)
    paths = {
        "userinfo.json": USERINFO,
        "describe.json": DESCRIBE,
        "query.json": QUERY + "?" + urllib.parse.urlencode({"q": contact_statement()}),
    }
    answers = {}
    with RunningSimulator(simulator.app(), certificates) as running:
        for name, path in paths.items():
            request = urllib.request.Request(  # noqa: S310 - https on loopback
                running.base_url + path, headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(  # noqa: S310
                request, context=certificates.client_context(), timeout=10
            ) as answer:
                answers[name] = answer.read()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # nginx's worker runs as nobody
    for name, body in answers.items():
        (directory / name).write_bytes(body)
        (directory / name).chmod(0o644)
    return answers


_COMMON = """\
daemon off;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
{server}
}}
"""

_UPSTREAM = """\
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {www};
        default_type application/json;
        etag off;
        open_file_cache max=16;
        location = {query} {{ try_files /query.json =404; }}
        location = {describe} {{ try_files /describe.json =404; }}
        location = {userinfo} {{ try_files /userinfo.json =404; }}
        location = {echo} {{ default_type text/plain; return 200 "$http_authorization"; }}
    }}
"""

_PROXY = """\
    upstream crm {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass https://crm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {token}";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
        }}
    }}
"""


def upstream_conf(tmp: Path, port: int, certificates: Certificates, www: Path) -> str:
    server = _UPSTREAM.format(
        port=port,
        cert=certificates.cert_file,
        key=certificates.key_file,
        www=www,
        query=QUERY,
        describe=DESCRIBE,
        userinfo=USERINFO,
        echo=ECHO,
    )
    return _COMMON.format(tmp=tmp, name="upstream", server=server)


def proxy_conf(tmp: Path, port: int, upstream_port: int, ca_file: Path, token: str) -> str:
    """Path B: nginx as a reverse proxy that adds the authorization header, keeps its upstream
    connections alive and verifies the upstream's certificate, as crmgate does."""
    server = _PROXY.format(port=port, upstream_port=upstream_port, token=token, ca=ca_file)
    return _COMMON.format(tmp=tmp, name="proxy", server=server)
