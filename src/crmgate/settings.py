"""Operator settings: one name, one default, one line in docs/configuration.md each."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crmgate.limits import STRATEGIES, parse_limits
from crmgate.outbound import plain_http_host


class OAuthClient(BaseModel):
    """crmgate's own registered OAuth client at one CRM platform (oAuth-internal)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    scopes: tuple[str, ...] | None = None  # the descriptor's when not given
    # Where the authorization flow may send the browser back: exact URLs (scheme, host, port,
    # path), nothing else.
    redirects: tuple[str, ...] = ()

    @field_validator("redirects")
    @classmethod
    def _absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
                raise ValueError(f"{url!r}: an absolute http(s) URL without a fragment")
        return value


def _limit_string(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_limits(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a list of rate limits (e.g. 20/second;600/minute;100000/day)"
            ) from None
    return value


class OrganisationLimits(BaseModel):
    """One organisation's own limits; a field left out keeps the default, "" means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_key: str | None = None
    application: str | None = None

    _valid = field_validator("user_key", "application")(_limit_string)


class ApiVersion(BaseModel):
    """One API version in the version table (api/versions.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["current", "deprecated", "retired"] = "current"
    deprecated: datetime | None = None  # since when (RFC 9745 Deprecation); RFC 3339
    sunset: datetime | None = None  # when it stops answering (RFC 8594 Sunset); RFC 3339
    limits: str | None = None  # a stricter rate limit per user key on this version
    link: str | None = None  # the migration notes; the gateway's /docs when not given

    _valid = field_validator("limits")(_limit_string)

    @field_validator("deprecated", "sunset")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value

    @model_validator(mode="after")
    def _dated(self) -> ApiVersion:
        if self.status == "deprecated" and self.deprecated is None:
            raise ValueError(
                "a deprecated version needs `deprecated`, the date it was deprecated on "
                '(RFC 3339, e.g. "2026-12-01"), for its Deprecation header'
            )
        if self.deprecated and self.sunset and self.sunset < self.deprecated:
            raise ValueError("`sunset` comes before `deprecated`")
        return self


class Settings(BaseSettings):
    """Read from the environment (prefix ``CRMGATE_``) or a ``.env`` file in the working dir."""

    model_config = SettingsConfigDict(
        env_prefix="CRMGATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(
        default=Path("var"),
        description="Directory for the SQLite file and the secrets crmgate generates for itself.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; overrides the embedded SQLite file, "
        "e.g. postgresql+asyncpg://user@host/db.",
    )
    key_pepper: SecretStr | None = Field(
        default=None,
        description="Server-side secret for user-key digests (at least 32 characters). "
        "Generated into <data_dir>/secrets/key_pepper when not given.",
    )
    host: str = Field(default="127.0.0.1", description="Address `crmgate serve` listens on.")
    port: int = Field(default=8080, description="Port `crmgate serve` listens on.")
    workers: int = Field(
        default=1,
        ge=1,
        description="Worker processes of `crmgate serve`; more than one needs PostgreSQL "
        "(docs/deployment.md).",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL clients use to reach the gateway (printed in examples); "
        "defaults to http://<host>:<port>.",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate chain: serve HTTPS (TLS 1.2 or newer, with HSTS) instead "
        "of plain HTTP; with tls_key.",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    key_last_used_resolution: float = Field(
        default=60.0,
        description="Seconds: a key's last_used_at is written at most this often "
        "(saves a database write per request).",
    )
    vault_keys: SecretStr | None = Field(
        default=None,
        description="Vault master keys, 'version:base64key' separated by commas. Generated into "
        "<data_dir>/secrets/vault_keys when not given.",
    )
    platform_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="JSON: platform type -> descriptor keys to replace (login_url, "
        "instance_hosts, oauth endpoints), e.g. for a self-hosted CRM or the simulators.",
    )
    oauth_clients: dict[str, OAuthClient] = Field(
        default_factory=dict,
        description="JSON: platform type -> {client_id, client_secret, scopes, redirects}: "
        "crmgate's own OAuth client at each CRM (oAuth-internal: the authorization flow and "
        "token refresh) and the exact redirect URLs the flow may return to.",
    )
    outbound_ca_file: str | None = Field(
        default=None,
        description="PEM file of extra certificate authorities trusted for calls to CRMs.",
    )
    outbound_timeout: float = Field(
        default=30.0, description="Seconds before a call to a CRM is abandoned."
    )
    outbound_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Extra tries of a read (GET, HEAD, OPTIONS) a CRM answered 429, 500, 502, "
        "503 or 504, or did not answer; 0: none. A write is never tried again.",
    )
    outbound_retry_budget: float = Field(
        default=5.0,
        ge=0,
        description="Seconds after a read's first try past which no other try starts; a "
        "Retry-After longer than what is left is answered to the client (429) instead.",
    )
    outbound_allowed_networks: list[str] = Field(
        default_factory=list,
        description="JSON list of networks (CIDR) crmgate may call although they are not public: "
        'a self-hosted CRM on a private network (["10.20.0.0/16"]), the simulators on loopback '
        "(the demo adds 127.0.0.0/8). Every other loopback, private, link-local (cloud metadata "
        "at 169.254.169.254), CGNAT or reserved address is refused.",
    )

    @field_validator("outbound_allowed_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network (e.g. 10.20.0.0/16)") from None
        return value

    outbound_plain_http_hosts: list[str] = Field(
        default_factory=list,
        description="JSON list of exact hosts crmgate may call over plain http, each host or "
        'host:port (80 without a port; an IPv6 address in brackets): ["crm.internal:8080"] for '
        "a self-hosted CRM without TLS on a private network. Every other URL is https only; a "
        "listed host must still fit its platform's hosts and pass the address check.",
    )

    @field_validator("outbound_plain_http_hosts")
    @classmethod
    def _plain_http_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            plain_http_host(entry)  # a ValueError names the entry and what is wrong
        return value

    max_applications: int = Field(
        default=100, description="Connected applications an organisation may have (403 beyond)."
    )
    max_body_bytes: int = Field(
        default=1_048_576, description="Largest request body accepted, in bytes (larger: 413)."
    )
    max_json_depth: int = Field(
        default=32, ge=1, description="Deepest nesting of a JSON request body (deeper: 400)."
    )
    max_json_items: int = Field(
        default=100_000,
        ge=1,
        description="Most items (object members and array elements, all levels) of a JSON "
        "request body (more: 413).",
    )
    max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        description="Longest request head (target and header fields) `crmgate serve` reads, in "
        "bytes (longer: 431).",
    )
    max_header_fields: int = Field(
        default=100, ge=10, description="Most header fields of a request (more: 431)."
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds `crmgate serve` waits for a request's header fields, from the "
        "connection or the request's first byte (longer: 408, connection closed).",
    )
    body_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds `crmgate serve` waits for the next piece of a request body "
        "(longer: 408, connection closed).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Most connections one `crmgate serve` process holds open; beyond, a new one "
        "is answered 503 and closed at once.",
    )
    api_versions: dict[str, ApiVersion] = Field(
        default_factory=lambda: {"v1": ApiVersion()},
        description='JSON: version -> {"status": "current"|"deprecated"|"retired", "deprecated": '
        'date, "sunset": date, "limits": "5/second;1000/day", "link": URL}. A deprecated '
        "version's answers carry Deprecation, Sunset and Link headers, each call is logged and "
        "counted against its limits; a retired version answers 410.",
    )

    @field_validator("api_versions")
    @classmethod
    def _versions(cls, value: dict[str, ApiVersion]) -> dict[str, ApiVersion]:
        for name in value:
            if not re.fullmatch(r"v[1-9][0-9]*", name):
                raise ValueError(f"{name!r} is not an API version (v1, v2, ...)")
        return value

    usage_flush_interval: float = Field(
        default=5.0, description="Seconds between writes of the request counters to the database."
    )
    cache_ttl: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a key's principal and an application's decrypted credentials stay "
        "in a process's memory at most (crmgate/cache.py); 0: no cache.",
    )
    cache_size: int = Field(
        default=10_000, ge=0, description="Most keys, and most applications, each process caches."
    )
    cache_poll_interval: float = Field(
        default=0.25,
        gt=0,
        description="Seconds between two reads of the cache invalidations other processes wrote.",
    )
    audit_repeat_window: float = Field(
        default=10.0,
        description="Seconds: the audit trail keeps one authentication failure (or limit hit) "
        "per client address in this window; one more at its end counts those folded into it.",
    )
    audit_flush_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between writes of the queued authentication failures and limit "
        "hits to the audit trail (they never cost a write on the request path).",
    )
    audit_noisy_cap: int = Field(
        default=600,
        ge=0,
        description="Authentication failures and limit hits the audit trail keeps per minute, "
        "all clients together; beyond it one audit.dropped event says how many were dropped.",
    )
    rate_limit_user_key: str = Field(
        default="20/second;600/minute;100000/day;2000000/month",
        description="Requests one user key may make, per period (the `limits` notation, "
        "';'-separated; empty: no limit). Over it: 429 with Retry-After.",
    )
    rate_limit_application: str = Field(
        default="10/second;300/minute;50000/day;1000000/month",
        description="Requests that may reach one application's CRM, per period, whoever "
        "sends them.",
    )
    rate_limit_organisations: dict[str, OrganisationLimits] = Field(
        default_factory=dict,
        description='JSON: organisation id -> {"user_key": "...", "application": "..."}, that '
        "organisation's own limits instead of the defaults.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='JSON list of web origins ("https://app.example.com") whose pages may call '
        "crmgate from a browser (CORS). Empty: none may; a browser holding a user key is rarely "
        "what you want.",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*" or not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]; no *)")
        return value

    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="JSON list of networks (CIDR) of the operator's proxies or load balancers: "
        "from a peer in them, X-Forwarded-For tells the client's address (read from the right, "
        "skipping these), for rate limits and the audit trail. Empty: the TCP peer is the client.",
    )

    rate_limit_bad_keys: str = Field(
        default="20/minute;200/day",
        description="Failed authentications one client address may make (its TCP peer; no proxy "
        "header is trusted); beyond: 429 for every request from it, valid keys included.",
    )
    rate_limit_strategy: str = Field(
        default="sliding-window-counter",
        description="How requests are counted: moving-window (exact), sliding-window-counter "
        "(two counters a limit: cheap for large day/month quotas) or fixed-window.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://[:password@]host:port/db: rate limits counted in Redis, shared by "
        "every gateway process (in each process's memory when not set).",
    )
    rate_limit_redis_prefix: str = Field(
        default="crmgate-limits", description="Prefix of crmgate's rate-limit keys in Redis."
    )

    # ---- the developer portal (crmgate/portal/, docs/portal.md) ------------------------------
    portal_enabled: bool = Field(
        default=True, description="Serve the developer portal under /portal."
    )
    portal_signup: Literal["open", "invite", "off"] = Field(
        default="invite",
        description="Who may create an organisation in the portal: open (anyone), invite (only "
        "someone an admin invited joins, into that admin's organisation) or off; an admin's "
        "invitations work in every mode.",
    )
    portal_session_idle: float = Field(
        default=1800.0,
        gt=0,
        description="Seconds without a request after which a portal session ends.",
    )
    portal_session_absolute: float = Field(
        default=43200.0,
        gt=0,
        description="Seconds after sign-in at which a portal session ends whatever its use.",
    )
    portal_fresh_sign_in: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a sign-in stays fresh: disabling two-factor authentication or adding "
        "a factor later than this asks for the password and a code again.",
    )
    portal_argon2_time_cost: int = Field(
        default=3,
        ge=1,
        description="argon2id iterations of portal password hashes (a change "
        "rehashes each password at its next sign-in).",
    )
    portal_argon2_memory_kib: int = Field(
        default=65536, ge=8, description="argon2id memory of portal password hashes, in KiB."
    )
    portal_argon2_parallelism: int = Field(
        default=4, ge=1, description="argon2id lanes of portal password hashes."
    )
    portal_sign_in_limit_account: str = Field(
        default="5/minute;30/hour",
        description="Failed portal sign-ins one account may have per period; beyond, its "
        "sign-ins are refused until the window frees (whatever the password).",
    )
    portal_sign_in_limit_address: str = Field(
        default="20/minute;200/hour",
        description="Failed portal sign-ins one client address may have per period.",
    )
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server the portal sends e-mail through (invitations, password "
        "resets). Not set: those e-mails are written to the log without their links.",
    )
    smtp_port: int = Field(default=587, description="Port of smtp_host.")
    smtp_starttls: bool = Field(
        default=True, description="Upgrade the SMTP connection with STARTTLS before sending."
    )
    smtp_username: str | None = Field(default=None, description="SMTP user, if it asks for one.")
    smtp_password: SecretStr | None = Field(default=None, description="Password of smtp_username.")
    mail_from: str = Field(
        default="crmgate <crmgate@localhost>", description="From: address of the portal's e-mail."
    )

    _valid_limits = field_validator(
        "rate_limit_user_key",
        "rate_limit_application",
        "rate_limit_bad_keys",
        "portal_sign_in_limit_account",
        "portal_sign_in_limit_address",
    )(_limit_string)

    @field_validator("rate_limit_strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"{value!r}: one of {', '.join(STRATEGIES)}")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'crmgate.db').resolve()}"

    @property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"
