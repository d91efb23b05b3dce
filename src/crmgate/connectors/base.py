"""What every connector offers (the errors through which a CRM's answer reaches the client are
in connectors/errors.py, the object and field descriptions in model/objects.py).

A connector is mostly data (its platform descriptor); the code here and in each connector module
is what differs between CRMs. Connectors call CRMs only through crmgate.outbound.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote, quote_plus

from yarl import URL

from crmgate.connectors import describe
from crmgate.connectors.answers import crm_json
from crmgate.connectors.auth import Access as Access
from crmgate.connectors.auth import AuthScheme, Renewal
from crmgate.connectors.catalogue import Platform, Region, Verification, url_host
from crmgate.connectors.errors import (
    CredentialsRejected,
    CrmError,
    CrmUnavailable,
    EntityNotFound,
    GrantRevoked,
    NotAllowed,
    NotSupported,
    NotValid,
    RateLimited,
    Refusal,
    SessionExpired,
    answer_of,
    contract_error,
    read,
)
from crmgate.connectors.jsonpath import select
from crmgate.connectors.paging import CursorWalks as CursorWalks
from crmgate.connectors.paging import Fetch as Fetch
from crmgate.connectors.shapes import unexpected
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import Outbound, OutboundFailed, OutboundRefused, OutboundResponse

T = TypeVar("T")
log = logging.getLogger("crmgate.connectors")

if TYPE_CHECKING:
    from crmgate.model.mapping import EntityMap
    from crmgate.query import Condition, SortKey
    from crmgate.settings import OAuthClient


@dataclass(frozen=True)
class Identity:
    """Who the stored credentials act as in the CRM (ApplicationEntity.me and company)."""

    user_id: str
    name: str
    email: str
    username: str
    company_id: str
    company_name: str = ""

    def as_user_entity(self) -> dict[str, Any]:
        first, _, last = self.name.partition(" ")
        return {
            "id": self.user_id,
            "username": self.username,
            "email": [{"type": "work", "address": self.email}] if self.email else [],
            "first_name": first,
            "last_name": last,
        }


@dataclass(frozen=True)
class Verified:
    identity: Identity
    # What the gateway keeps besides the client's credential (e.g. a login session), sealed too.
    derived: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item of a bulk call."""

    id: str | None
    error: CrmError | None = None


@dataclass(frozen=True)
class RawResponse:
    """A passthrough answer: what the CRM said, status, headers and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


# A passthrough path and query as sent on the wire (RFC 3986 characters, valid %XX escapes).
_RAW_PATH = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$")
_RAW_QUERY = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$")


def passthrough_path(path: str) -> tuple[str, str]:
    """A passthrough request's raw path and query, to be sent exactly as written: a path that
    could be normalised to somewhere else (dot segments, encoded dots, slashes or backslashes)
    or that holds characters a URL path cannot is refused, never rewritten."""
    raw_path, _, raw_query = path.partition("#")[0].partition("?")
    if not _RAW_PATH.match(raw_path) or not _RAW_QUERY.match(raw_query):
        raise NotValid("path: characters outside a URL path; percent-encode them", ("path",))
    lowered = raw_path.lower()
    if any(seg in (".", "..") for seg in raw_path.split("/")) or any(
        code in lowered for code in ("%2e", "%2f", "%5c")
    ):
        raise NotValid("path: no dot segments or encoded dots and slashes", ("path",))
    return raw_path, raw_query


def passthrough_on(access: Access, path: str, base: str = "", root: str = "/") -> URL:
    """Where a passthrough ``path`` goes on the application's own instance, sent exactly as
    written (checked by ``passthrough_path``): a relative path under ``base`` (the API's
    versioned root, e.g. ``/services/data/v61.0``), an absolute one only under ``root``
    (``/services/``: other versions, Apex REST)."""
    assert root.endswith("/"), "an absolute root is a folder (/services/), not a prefix"
    raw_path, raw_query = passthrough_path(path)
    if raw_path.startswith("/"):
        if not raw_path.startswith(root):
            raise NotValid(f"path: an absolute path must start with {root}", ("path",))
        full = raw_path
    else:
        full = f"{base.rstrip('/')}/{raw_path}"
    origin = str(access.instance_url).rstrip("/")
    return URL(origin + full + (f"?{raw_query}" if raw_query else ""), encoded=True)


# Failures of a whole call (not of one record): once one happens, a bulk operation sends nothing
# more and reports it for every item not yet sent.
CALL_FAILURES = (SessionExpired, RateLimited, CrmUnavailable)


class Unanswered(CrmUnavailable):
    """A call that got no answer (a timeout): what it asked may or may not have been done. A
    bulk operation sends nothing more, and tells its later items ``not_sent``."""

    def __init__(self, message: str, not_sent: str) -> None:
        super().__init__(message)
        self.not_sent = CrmUnavailable(not_sent)


async def chunked(
    items: list[T],
    size: int,
    send: Callable[[list[T]], Awaitable[list[ItemResult]]],
    identify: Callable[[T], str | None],
) -> list[ItemResult]:
    """Send ``items`` ``size`` at a time and keep every result: a chunk whose call fails reports
    the failure for its own items, and after a session, limit or availability failure the
    remaining chunks are not sent but reported with it. Nothing already done is hidden."""
    results: list[ItemResult] = []
    stopped: CrmError | None = None
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        failure = stopped
        if failure is None:
            try:
                results += await send(chunk)
                continue
            except CrmError as error:
                failure = error
                if isinstance(error, CALL_FAILURES):
                    stopped = error.not_sent if isinstance(error, Unanswered) else error
        results += [ItemResult(identify(item), failure) for item in chunk]
    return results


async def chunked_checked(
    items: list[T],
    size: int,
    send: Callable[[list[T]], Awaitable[list[ItemResult]]],
    identify: Callable[[T], str | None],
    refuse: Callable[[T], CrmError | None],
    name: str,
) -> list[ItemResult]:
    """``chunked`` where an item may be refused before it is sent (``refuse`` says why, or
    None): it is reported with that and never sent; ``send`` gets each chunk's other items,
    never none, and answers one result each, in their order."""

    async def send_chunk(chunk: list[T]) -> list[ItemResult]:
        refusals = [refuse(item) for item in chunk]
        valid = [item for item, why in zip(chunk, refusals, strict=True) if why is None]
        answered = await send(valid) if valid else []
        if len(answered) != len(valid):
            raise CrmUnavailable(f"{name}: the CRM answered for some of the records only")
        results = iter(answered)
        return [
            next(results) if why is None else ItemResult(identify(item), why)
            for item, why in zip(chunk, refusals, strict=True)
        ]

    return await chunked(items, size, send_chunk, identify)


async def chunked_by_id(
    items: list[T],
    size: int,
    send: Callable[[list[T]], Awaitable[list[ItemResult]]],
    identify: Callable[[T], str],
    well_formed: Callable[[str], bool],
    name: str,
) -> list[ItemResult]:
    """``chunked_checked`` for updates and deletes of records whose ids have a shape: an item
    whose id is malformed is reported not found and never sent (nothing of it reaches the
    CRM's URL or query)."""

    def refuse(item: T) -> CrmError | None:
        record_id = identify(item)
        if well_formed(record_id):
            return None
        return EntityNotFound(f"{name} {record_id[:40]!r} not found")

    return await chunked_checked(items, size, send, identify, refuse, name)


async def grouped(
    items: list[T],
    size: int,
    group: Callable[[T], str],
    send: Callable[[str, list[T]], Awaitable[list[ItemResult]]],
    identify: Callable[[T], str | None],
) -> list[ItemResult]:
    """``chunked`` per group of ``items`` (where the CRM writes them: Kommo's notes, a list per
    parent type): ``send`` gets a group's name and a chunk of its items. The results are in
    the order of ``items``; an item ``group`` refuses (a CrmError) is reported so, never sent."""
    results = [ItemResult(identify(item)) for item in items]
    groups: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        try:
            groups.setdefault(group(item), []).append(n)
        except CrmError as refused:
            results[n] = ItemResult(identify(item), refused)
    for name, positions in groups.items():
        part = [items[n] for n in positions]
        done = await chunked(part, size, functools.partial(send, name), identify)
        for n, result in zip(positions, done, strict=True):
            results[n] = result
    return results


class Records:
    """The record operations of one CRM, in the CRM's own object and field names (the entity
    maps translate to and from the contract's). A connector overrides what its CRM offers;
    what it does not is NOT_SUPPORTED. Bulk falls back to one call per item where a CRM has no
    batch API."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.platform = connector.platform
        self.walks = CursorWalks()  # where the walks over the CRM's lists stopped (paging.py)

    def _unsupported(self, operation: str) -> NotSupported:
        return NotSupported(f"{self.platform.name} does not support {operation}")

    # ---- one JSON call, authenticated: the shared way of REST connectors ----------------------

    async def json_call(
        self,
        access: Access,
        method: str,
        url: URL,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """``method url`` with the access token and a JSON body; the answer's JSON (None when
        empty); a status of 400 or more becomes ``self.error(...)``."""
        response = await self.send_json(access, method, url, body=body, headers=headers)
        if response.status >= 400:
            raise self.error(response)
        if response.status == 204 or not response.body:
            return None
        try:
            return crm_json(response.body)
        except ValueError:
            raise CrmUnavailable(
                f"{self.platform.name} answered something that is not JSON"
            ) from None

    async def send_json(
        self,
        access: Access,
        method: str,
        url: URL,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> OutboundResponse:
        """``method url`` with a JSON body, authenticated (``send``); the answer as it is, for
        a CRM whose error answers may carry results (``json_call`` is the usual way)."""
        sent = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            sent["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        return await self.send(access, method, url, headers=sent, data=data)

    async def send(
        self,
        access: Access,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> OutboundResponse:
        """The one authenticated call: ``method url`` with the credential where the platform's
        auth scheme puts it. When the CRM answers that the session expired, the access is
        renewed once (the token manager's renewal) and the call sent again; where it cannot
        be, that answer is raised as the contract's error. Any other answer is returned."""
        while True:
            token, instance = access.token, access.instance_url
            sent_url, sent = access.apply(url, headers or {})
            response = await self.connector.call(method, sent_url, headers=sent, data=data)
            if response.status < 400:
                return response
            error = self.error(response)
            if not isinstance(error, SessionExpired):
                return response
            if not await access.renew(token):
                raise error
            url = access.rebased(url, instance)

    def error(self, response: OutboundResponse) -> CrmError:
        """The CRM's error answer as the contract's error (the ladder in connectors/errors.py,
        read with the platform's ``[errors]`` descriptor)."""
        return self.refused(response.status, answer_of(response.body), response.headers)

    def refused(
        self, status: int, answer: Any, headers: Mapping[str, str] | None = None
    ) -> CrmError:
        """An error ``answer`` (parsed JSON) as the contract's error; also one failed item of a
        batch, with the HTTP status it stands for."""
        errors = self.platform.errors
        refusal = self.refine_error(read(errors, status, answer, headers))
        return contract_error(self.platform.name, errors, refusal)

    def refine_error(self, refusal: Refusal) -> Refusal:
        """What no descriptor can say about an error answer (a hook: return it amended with
        ``dataclasses.replace``, e.g. a ``contract`` code decided by its content)."""
        return refusal

    async def objects(self, access: Access) -> list[ObjectInfo]:
        raise self._unsupported("listing its objects")

    def read_fields(self, answer: Any, amend: describe.Amend | None = None) -> list[FieldInfo]:
        """The fields of a describe ``answer``, read with the descriptor's ``[describe.fields]``
        (connectors/describe.py); ``amend`` is the connector's hook for its oddities."""
        try:
            return describe.read_fields(self.platform.describe.fields, answer, amend)
        except ValueError:
            raise unexpected(self.platform.name, "fields") from None

    def read_objects(self, answer: Any, id_field: str) -> list[ObjectInfo]:
        """The objects of an object list ``answer``, read with ``[describe.objects]``."""
        table = self.platform.describe.objects
        if table is None:
            raise self._unsupported("listing its objects")
        try:
            return describe.read_objects(table, answer, id_field)
        except ValueError:
            raise unexpected(self.platform.name, "objects") from None

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        raise self._unsupported("describing objects")

    async def list_page(
        self,
        access: Access,
        entity: EntityMap,
        columns: Sequence[str],
        *,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
    ) -> list[dict[str, Any]]:
        raise self._unsupported("lists")

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        raise self._unsupported("counts")

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        raise self._unsupported("reading records")

    async def aggregate(
        self,
        access: Access,
        entity: EntityMap,
        functions: Sequence[tuple[str, str]],
        group_by: Sequence[str],
        conditions: Sequence[Condition] = (),
    ) -> list[dict[str, Any]]:
        """One row per group: the group's native columns, and each function's value under
        ``a0``, ``a1``, ... in the order given. ``functions`` are (function, native column)."""
        raise self._unsupported("aggregates")

    async def get_many(
        self, access: Access, entity: EntityMap, ids: Sequence[str], columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The records of ``ids`` that exist (any order): what `expand` reads."""
        found = []
        for record_id in ids:
            try:
                found.append(await self.get(access, entity, record_id, columns))
            except EntityNotFound:
                continue
        return found

    async def matching(self, access: Access, entity: EntityMap, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are records of ``entity``, its ``match`` values included (a plain
        task is not a call): checked before a write through a map with match values."""
        found = set()
        for record_id in ids:
            try:
                row = await self.get(access, entity, record_id, [entity.id, *entity.match])
            except EntityNotFound:
                continue
            if all(row.get(column) == value for column, value in entity.match.items()):
                found.add(record_id)
        return found

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        raise self._unsupported("creating records")

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        raise self._unsupported("updating records")

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        raise self._unsupported("deleting records")

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        async def send(chunk: list[Mapping[str, Any]]) -> list[ItemResult]:
            return [ItemResult(await self.create(access, name, chunk[0]))]

        return await chunked(list(items), 1, send, lambda item: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        async def send(chunk: list[tuple[str, Mapping[str, Any]]]) -> list[ItemResult]:
            await self.update(access, name, chunk[0][0], chunk[0][1])
            return [ItemResult(chunk[0][0])]

        return await chunked(list(items), 1, send, lambda item: item[0])

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        async def send(chunk: list[str]) -> list[ItemResult]:
            await self.delete(access, name, chunk[0])
            return [ItemResult(chunk[0])]

        return await chunked(list(ids), 1, send, lambda item: item)

    def passthrough_url(self, access: Access, path: str) -> URL:
        """Where a passthrough ``path`` goes on this application's CRM (checked with
        ``passthrough_path``); a connector that offers passthrough says."""
        raise self._unsupported("passthrough requests")

    async def passthrough(
        self,
        access: Access,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> RawResponse:
        """The client's own request, sent to the application's CRM with its credentials; the
        CRM's answer as it is, except an expired session (the gateway renews it)."""
        url = self.passthrough_url(access, path)
        # the client's own credential headers, in any spelling, give way to the application's
        replaced = access.scheme.header_names()
        sent = {name: value for name, value in headers if name.lower() not in replaced}
        response = await self.send(access, method, url, headers=sent, data=body)
        if response.status == 401:
            raise self.error(response)
        return RawResponse(response.status, list(response.headers.items()), response.body)


def _said(check: Verification, answer: Any) -> dict[str, str]:
    """Who a credential check's ``answer`` says the credential acts as (empty where it does
    not say): the first scalar each of the check's paths finds."""

    def found(path: str) -> str:
        values = [v for v in select(answer, path) if v not in (None, "")] if path else []
        return str(values[0]) if values and not isinstance(values[0], (dict, list)) else ""

    said = {
        name: found(getattr(check, name))
        for name in ("user_id", "email", "username", "company_id", "company_name")
    }
    return {**said, "name": " ".join(part for part in map(found, check.name) if part)}


class Connector:
    name: ClassVar[str]
    records: Records
    records_type: ClassVar[type[Records]] = Records  # the connector's own record operations

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        self.platform = platform
        self.outbound = outbound
        self.records = self.records_type(self)

    def access(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> Access:
        """The instance and token with which records calls authenticate: by default the
        credential's instance_url (else the descriptor's api_url) and the first token field of
        the authorization type (``api_key``, ``api_token``, ``access_token``); for a type with
        none, whose credential crmgate exchanges for tokens itself (Dynamics' application user),
        the ``access_token`` it derived."""
        kind = self.platform.authorization_for(authorization)
        fields = [f.name for f in kind.credential if f.type == "token"] if kind else []
        instance = credential.get("instance_url") or self.platform.api_url
        token = credential[fields[0]] if fields else derived.get("access_token")
        if token is None or not instance:
            raise NotSupported(f"{self.platform.name} has no record access for {authorization}")
        return Access(self.instance_url(instance), token)

    def session(
        self,
        authorization: str,
        credential: Mapping[str, str],
        derived: Mapping[str, str],
        renewal: Renewal | None = None,
    ) -> Access:
        """``access`` with the platform's auth scheme for ``authorization`` and the way to
        renew it when the CRM says it expired (the token manager's, per request)."""
        access = self.access(authorization, credential, derived)
        return access.bound(self.platform.auth_scheme(authorization), renewal)

    def scheme(self, authorization: str) -> AuthScheme:
        return self.platform.auth_scheme(authorization)

    def instance_url(self, url: str) -> URL:
        """The origin of ``url`` if it is an instance URL this platform may have. An instance URL
        is an address only: a path, query or fragment is refused, not kept. Its scheme is kept:
        https, or http where the operator allows plain http to that host (the outbound guard)."""
        parsed = self.outbound.check_url(url, self.platform.instance_hosts)
        if parsed.raw_path not in ("", "/") or parsed.raw_query_string or parsed.raw_fragment:
            raise OutboundRefused(
                "an instance URL is the CRM's address only (https://host[:port]), "
                "without path, query or fragment"
            )
        host = (parsed.raw_host or "").lower().rstrip(".")
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        port = None if parsed.is_default_port() else parsed.port
        return URL.build(scheme=parsed.scheme, host=host, port=port, encoded=True)

    async def verify(self, authorization: str, credential: Mapping[str, str]) -> Verified:
        """Whether the credential works, and who it acts as (``identify``; a hook for CRMs
        whose credential is first exchanged for a token)."""
        return Verified(await self.identify(self.session(authorization, credential, {})))

    async def identify(self, access: Access) -> Identity:
        """Who ``access`` acts as: the descriptor's ``[verify]`` call, and its ``then`` for
        what the first does not say (a failure of which leaves that unknown)."""
        check = self.platform.verify
        if check is None:
            raise NotImplementedError
        url = (access.instance_url / check.path).with_query(check.query)
        said = _said(check, await self.checked(access, url, check.headers))
        if not (said["user_id"] or said["company_id"]):
            raise CrmUnavailable(f"{self.platform.name} {check.path} answered something unexpected")
        if check.then is not None:
            then = check.then
            path = then.path.format(**{k: quote(v, safe="") for k, v in said.items()})
            query = {name: value.format(**said) for name, value in then.query.items()}
            url = (access.instance_url / path).with_query(query)
            try:
                more = _said(then, await self.checked(access, url, then.headers))
            except CrmError:
                more = {}
            said = {name: value or more.get(name, "") for name, value in said.items()}
        return Identity(**said)

    async def checked(
        self, access: Access, url: URL, headers: Mapping[str, str] | None = None
    ) -> Any:
        """A credential check's GET (never renewed: the credential is what is being checked):
        its JSON; CredentialsRejected with the CRM's reason on 401 or 403."""
        sent_url, sent = access.apply(url, {"Accept": "application/json", **(headers or {})})
        response = await self.call("GET", sent_url, headers=sent)
        if response.status in (401, 403):
            reason = read(self.platform.errors, response.status, answer_of(response.body)).message
            reason = reason or response.body.decode("utf-8", "replace").strip()
            # a CRM that echoes the credential it refused must not put it in crmgate's answer
            reason = reason.replace(access.token, "…") if access.token else reason
            raise CredentialsRejected(
                f"{self.platform.name} refused the credential ({(reason or 'refused')[:200]})"
            )
        what = f"{self.platform.name} {url.path}"
        if response.status != 200:
            raise CrmUnavailable(f"{what} answered HTTP {response.status}")
        try:
            return crm_json(response.body)
        except ValueError:
            raise CrmUnavailable(f"{what} answered something that is not JSON") from None

    async def revoke(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> None:
        """Revoke the refresh token crmgate holds (oAuth-internal), where the CRM offers
        revocation (the descriptor's ``revoke_url``; RFC 7009). A refusal is logged, not
        raised: the application goes away all the same."""
        oauth, token = self.platform.oauth, credential.get("refresh_token")
        if authorization != "oAuth-internal" or not token or oauth is None:
            return
        url = self.revocation_url(credential)
        if url is None:
            return
        form = {"token": token} if oauth.revoke_in == "form" else None
        if oauth.revoke_in == "query":
            url = url.update_query(token=token)
        elif oauth.revoke_in == "path":
            url = url / token
        response = await self.call(oauth.revoke_method, url, data=form)
        if response.status not in (200, 204):
            log.warning(
                "%s did not revoke a refresh token: HTTP %d", self.platform.name, response.status
            )

    def revocation_url(self, credential: Mapping[str, str]) -> URL | None:
        """Where a refresh token is revoked: the descriptor's revoke_url, on the login server
        of the credential's region where the regions have their own (``oauth.regional``)."""
        oauth = self.platform.oauth
        if oauth is None or not oauth.revoke_url:
            return None
        regional = self.regional_url(credential.get("instance_url", ""), "revoke_url")
        if regional is not None:
            return regional
        url = str(URL(oauth.token_url).join(URL(oauth.revoke_url)))
        origin = URL(url)
        return self.outbound.check_url(url, [f"{origin.host}:{origin.port}"])

    def login_at(self, path: str, instance: str = "") -> URL:
        """``path`` on the login (accounts) server of ``instance``'s region (the descriptor's
        ``regions``: Microsoft's national clouds, Zoho's data centres), else on the
        descriptor's ``login_url``; checked by the outbound guard."""
        region = self.platform.region_of(instance) if instance else None
        login = region.login_url if region else self.platform.login_url
        if not login:
            raise CrmUnavailable(f"{self.platform.type}: the descriptor names no login_url")
        origin = URL(login)
        url = f"{login.rstrip('/')}{path}"
        return self.outbound.check_url(url, [f"{origin.host}:{origin.port}"])

    # ---- OAuth 2.0 (RFC 6749), the same for every CRM but its hooks ----------------------------

    def _oauth_url(self, which: str) -> URL:
        oauth = self.platform.oauth
        url = getattr(oauth, which, None) if oauth is not None else None
        if not url:
            raise NotSupported(f"{self.platform.name} has no OAuth {which.replace('_', ' ')}")
        origin = URL(url)
        return self.outbound.check_url(url, [f"{origin.host}:{origin.port}"])

    async def token_request(
        self,
        form: Mapping[str, str],
        client: OAuthClient,
        url: URL | None = None,
        refusals: Mapping[str, type[CrmError]] | None = None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """POST to the platform's token endpoint (authorization_code, refresh_token or
        client_credentials grant): the credential fields it gives (access_token, refresh_token,
        the connector's own such as instance_url) and what crmgate derives (expires_at and the
        granted scope, when the CRM says). ``url``: a token endpoint the connector chose (a
        data centre's own, Zoho), already checked; ``refusals``: the error an RFC 6749 error
        code is, where the client is the application's own (client_credentials) rather than
        crmgate's."""
        sent, auth = self.token_client_auth(form, client)
        url = url or self._oauth_url("token_url")
        method = self.platform.oauth.token_method if self.platform.oauth else "POST"
        if method == "GET":  # the parameters in the query (the outbound layer logs hosts only)
            url, sent = url.update_query(sent), {}
        response = await self.call(
            method,
            url,
            data=sent or None,
            headers={"Accept": "application/json", **auth},
            once=True,  # a code or a rotating refresh token is spent: never sent twice
        )
        try:
            answer = json.loads(response.body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise CrmUnavailable(
                f"{self.platform.name} token endpoint answered HTTP {response.status}"
            )
        if response.status != 200 or "access_token" not in answer:
            error, reason = self.token_error(answer, response.status)
            said = f"{self.platform.name} token endpoint: {error}" + (
                f" ({reason[:200]})" if reason else ""
            )
            if refusals and error in refusals:
                raise refusals[error](said)
            if error == "invalid_grant":
                raise GrantRevoked(f"{said}; authorize the application again")
            if error == "temporarily_unavailable" and self.platform.oauth is not None:
                raise RateLimited(f"{said}; try again later", self.platform.oauth.retry_after)
            if error in ("invalid_client", "invalid_client_id", "unauthorized_client"):
                raise CrmUnavailable(
                    f"{said}: check crmgate's OAuth client for {self.platform.type}"
                )
            raise CrmUnavailable(said)
        fields = {"access_token": str(answer["access_token"])}
        if answer.get("refresh_token"):
            fields["refresh_token"] = str(answer["refresh_token"])
        fields.update(self.token_fields(answer))
        derived: dict[str, str] = {}
        expires_in = answer.get("expires_in")
        if isinstance(expires_in, (int, float, str)) and str(expires_in).isdigit():
            derived["expires_at"] = str(int(time.time()) + int(expires_in))
            derived["expires_in"] = str(int(expires_in))
        if isinstance(answer.get("scope"), str):  # RFC 6749 §5.1: what was granted
            derived["scope"] = answer["scope"]
        return fields, derived

    def check_flow_instance(self, instance: URL) -> None:
        """Refuse (CrmError) an instance crmgate's OAuth flow cannot authorize: where the flow
        is per instance (``instance_scoped``) on one login server, an instance of a region
        whose login server is another (Dynamics 365 on a sovereign cloud: its own Entra ID)."""
        oauth, region = self.platform.oauth, self.platform.region_of(str(instance))
        if oauth is None or not oauth.instance_scoped or oauth.regional or region is None:
            return
        if URL(region.login_url).origin() != URL(oauth.token_url).origin():
            others = [t for t in self.platform.authorization_types if t != "oAuth-internal"]
            raise NotValid(
                f"this instance is in the {region.name} region, whose login server is not "
                f"crmgate's flow's: connect it with {' or '.join(others)}",
                ("instance_url",),
            )

    def code_token_url(self, callback: Mapping[str, str]) -> URL | None:
        """Where the authorization code of this OAuth ``callback`` (its query parameters) is
        exchanged: None for the platform's token_url; with ``oauth.regional``, the login server
        the callback names (Zoho's ``accounts-server`` and ``location``) if it is one of the
        platform's regions', never a host it was merely told (the client secret goes there)."""
        oauth = self.platform.oauth
        instance = self.callback_instance(callback)
        if instance is not None and oauth is not None:
            return instance.with_path(URL(oauth.token_url).path)
        if oauth is None or not oauth.regional:
            return None
        named = callback.get(oauth.callback_login_in) if oauth.callback_login_in else None
        location = (callback.get(oauth.callback_region_in) or "").lower()
        if named is None and not location:
            return None
        region = self.platform.region_at(named or "", location)
        return self._at_region(region, oauth.token_url)

    def callback_instance(self, callback: Mapping[str, str]) -> URL | None:
        """The instance an OAuth callback names (``oauth.callback_instance_in``: a host or a
        URL), checked against the platform's hosts; None where the platform's callbacks name
        none."""
        oauth = self.platform.oauth
        where = oauth.callback_instance_in if oauth else ""
        named = callback.get(where) if where else None
        if not named:
            return None
        try:
            return self.instance_url(named if "://" in named else f"https://{named}")
        except OutboundRefused as refused:
            raise NotValid(f"{self.platform.name} named a refused instance: {refused}") from None

    def authorize_at(self, authorize_url: str, instance: str | None) -> str:
        """The flow's authorize URL: on the login server of ``instance``'s region where the
        descriptor says the flow may name one (``oauth.authorize_in_region``), else as given."""
        oauth = self.platform.oauth
        region = self.platform.region_of(instance) if instance else None
        if oauth is None or not oauth.authorize_in_region or region is None:
            return authorize_url
        return region.login_url.rstrip("/") + URL(authorize_url).raw_path

    def check_callback_region(self, callback: Mapping[str, str], authorized_at: str) -> None:
        """Refuse (NotValid) a callback naming an instance of another region than the login
        server at ``authorized_at`` (``oauth.authorize_in_region``: a code www.kommo.com gave
        is for a Kommo account, never an amoCRM.ru one, whose host would get the secret)."""
        oauth, named = self.platform.oauth, self.callback_instance(callback)
        if oauth is None or not oauth.authorize_in_region or named is None:
            return
        expected = self.platform.region_at(authorized_at)
        found = self.platform.region_of(str(named))
        if expected is not None and found != expected:
            where = found.name if found else "no known"
            raise NotValid(
                f"{self.platform.name} named an account of {where} region, not of "
                f"{expected.name}'s login server that authorized it"
            )

    def regional_url(self, instance_url: str, which: str) -> URL | None:
        """The OAuth endpoint ``which`` (``token_url``, ``revoke_url``) on the login server of
        the region whose instance ``instance_url`` is, where the descriptor says each region
        has its own (``oauth.regional``); None otherwise (e.g. a simulator: the descriptor's
        URL applies)."""
        oauth = self.platform.oauth
        if oauth is None or not oauth.regional:
            return None
        url = URL(oauth.token_url).join(URL(getattr(oauth, which) or ""))
        return self._at_region(self.platform.region_of(instance_url), str(url))

    def _at_region(self, region: Region | None, url: str) -> URL | None:
        if region is None:
            return None
        server = region.login_url.rstrip("/")
        return self.outbound.check_url(server + URL(url).raw_path, [url_host(server)])

    def token_client_auth(
        self, form: Mapping[str, str], client: OAuthClient
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The token request's form and extra headers with the client's authentication (RFC
        6749 section 2.3.1): in the form, or with HTTP Basic where the descriptor says
        (``client_auth = "basic"``: the id and secret form-encoded, then joined by a colon)."""
        secret = client.client_secret.get_secret_value() if client.client_secret else None
        oauth = self.platform.oauth
        if oauth is not None and oauth.client_auth == "basic":
            pair = f"{quote_plus(client.client_id)}:{quote_plus(secret or '')}"
            return dict(form), {"Authorization": "Basic " + b64encode(pair.encode()).decode()}
        sent = {**form, "client_id": client.client_id}
        if secret is not None:
            sent["client_secret"] = secret
        return sent, {}

    def token_error(self, answer: Mapping[str, Any], status: int) -> tuple[str, str]:
        """The RFC 6749 error code (``invalid_grant``, ``invalid_client``, ...) and description
        of a token endpoint's refusal: where the descriptor's ``oauth.error_in`` says, a CRM's
        own code turned into RFC 6749's by ``oauth.error_codes`` (HubSpot's
        ``BAD_REFRESH_TOKEN`` is ``invalid_grant``), keeping it in the description."""
        oauth = self.platform.oauth
        where = oauth.error_in if oauth else ("error",)
        code = next((str(answer[k]) for k in where if answer.get(k)), f"HTTP {status}")
        reason = next(
            (str(answer[k]) for k in ("message", "error_description") if answer.get(k)), ""
        )
        if oauth and oauth.error_first_line:
            reason = reason.partition("\n")[0].strip()
        standard = oauth.error_codes.get(code) if oauth else None
        if standard is None:
            return code, reason
        return standard, f"{code}: {reason}" if reason else code

    def token_fields(self, answer: Mapping[str, Any]) -> dict[str, str]:
        """What a CRM's token answer adds to the credential besides the tokens: the instance
        it names (the descriptor's ``oauth.instance_in``: Salesforce's ``instance_url``, Zoho's
        and Pipedrive's ``api_domain``), which must be one of the platform's hosts like any."""
        oauth = self.platform.oauth
        named = answer.get(oauth.instance_in) if oauth and oauth.instance_in else None
        if not named:
            return {}
        try:
            return {"instance_url": str(self.instance_url(str(named)))}
        except OutboundRefused as refused:
            raise CrmUnavailable(
                f"{self.platform.name} named a refused instance: {refused}"
            ) from None

    async def refresh(
        self, credential: Mapping[str, str], client: OAuthClient, redirect_uri: str | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """New tokens for an oAuth-internal application: the refresh_token grant (with the
        connector's ``refresh_form``, at its ``refresh_url``); ``redirect_uri``, crmgate's
        callback, repeated where the descriptor says (``oauth.refresh_redirect_uri``)."""
        token = credential.get("refresh_token")
        if not token:
            raise GrantRevoked(f"{self.platform.name}: the application has no refresh token")
        form = {"grant_type": "refresh_token", "refresh_token": token}
        oauth = self.platform.oauth
        if oauth is not None and oauth.refresh_redirect_uri and redirect_uri:
            form["redirect_uri"] = redirect_uri
        form |= self.refresh_form(credential)
        return await self.token_request(form, client, self.refresh_url(credential))

    def refresh_url(self, credential: Mapping[str, str]) -> URL | None:
        """Where a refresh goes: None for the descriptor's token_url; the login server of the
        credential's region where the regions have their own (``oauth.regional``); a hook
        (Entra ID's tenant), already checked; the instance's own where its callback named it
        (``oauth.callback_instance_in``)."""
        oauth, instance = self.platform.oauth, credential.get("instance_url", "")
        if oauth is not None and oauth.callback_instance_in and instance:
            return self.instance_url(instance).with_path(URL(oauth.token_url).path)
        return self.regional_url(instance, "token_url")

    def refresh_form(self, credential: Mapping[str, str]) -> dict[str, str]:
        """What a refresh sends besides the token (a hook): an ``instance_scoped`` flow's scopes
        again, naming the credential's instance (Entra ID issues a token for one resource)."""
        oauth = self.platform.oauth
        if oauth is None or not oauth.instance_scoped:
            return {}
        instance = str(self.instance_url(credential["instance_url"]))
        scopes = (scope.replace("{instance}", instance) for scope in oauth.scopes)
        return {"scope": oauth.scope_separator.join(scopes)}

    async def call(self, method: str, url: URL, **kwargs: Any) -> OutboundResponse:
        try:
            return await self.outbound.request(method, url, **kwargs)
        except OutboundFailed as failure:
            raise CrmUnavailable(f"{self.platform.name}: {failure}") from None
        except OutboundRefused as refused:  # the outbound guard: never called
            raise NotAllowed(f"{self.platform.name}: {refused}") from None
