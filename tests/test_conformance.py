"""The connector conformance suite: every simulated platform of tests/platforms.py through
crmgate's HTTP API, one test per behaviour of the contract, parametrised over the platforms.
What a platform claims (its entities and their methods, its authorization types, its paging
batches) comes from its descriptor; a platform's own module tests only its quirks.

One gateway on SQLite serves every platform, each simulator runs once for the module, and the
tests share one application per platform (``World.app``); a test that connects (or expires the
CRM's tokens) makes its own."""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    AppClient,
    RunningGateway,
    Simulated,
    check_life_cycle,
    check_refresh,
    create_account,
    make_settings,
    migrate_database,
    run_simulated,
)
from crmgate.api.app import create_app
from crmgate.connectors import REGISTRY
from crmgate.connectors.catalogue import Catalogue, load_descriptors
from crmgate.connectors.catalogue import Platform as Descriptor
from crmsim.tls import Certificates
from platforms import NAME, PLATFORMS, VARIANTS, Platform, Refresh, Sample

DESCRIPTORS = {d.type: d for d in load_descriptors()}
WRITES = {"create", "update", "delete"}


def writable(platform: str) -> list[str]:
    """The entities the descriptor says can be created and changed (and deleted, where the
    CRM's API deletes: Kommo's deletes nothing)."""
    entities = DESCRIPTORS[platform].entities
    return sorted(n for n, spec in entities.items() if {"create", "update"} <= set(spec.methods))


def deletes(app: App, entity: str) -> bool:
    return "delete" in app.crm.descriptor.entities[entity].methods


TYPES = sorted(PLATFORMS)
ENTITIES = [(p, e) for p in TYPES for e in writable(p)]


@dataclass
class Crm:
    """One simulated platform behind the module's gateway."""

    platform: Platform
    descriptor: Descriptor
    simulated: Simulated[Any]

    @property
    def sim(self) -> Any:
        return self.simulated.simulator

    @property
    def base_url(self) -> str:
        return self.simulated.base_url


class App(AppClient):
    """A client of one application connected to ``crm``."""

    def __init__(self, client: httpx.Client, key: str, crm: Crm) -> None:
        super().__init__(client, key)
        self.crm = crm

    @property
    def sim(self) -> Any:
        return self.crm.sim

    def link(self, relation: str) -> dict[str, Any]:
        """A new record of ``relation`` (from the platform's own sample) to link to."""
        sample = self.crm.platform.samples[relation]
        link: dict[str, str] = {}
        for parent in sample.parents:
            link |= self.link(parent)
        body = {sample.name: f"Parent {relation}", **sample.values, **sample.numbered(1)}
        made = self.ok("POST", f"/entity/{relation}", 201, json={**body, **_relations(link)})
        return {relation: made["id"]}


def _relations(links: dict[str, str]) -> dict[str, Any]:
    if not links:
        return {}
    return {"relation": {r: [{"type": r, "entity": {"id": i}}] for r, i in links.items()}}


def _scope(sample: Sample, links: dict[str, str]) -> str:
    """The filter each list and count of ``sample``'s entity carries: its parent's (of
    ``links``) where the CRM lists its records per parent only (``listed_by``); else none."""
    return f"relation.{sample.listed_by} eq '{links[sample.listed_by]}'" if sample.listed_by else ""


def _scoped(scope: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A list's or count's ``params`` with ``scope`` and-ed into its filter."""
    params = dict(params or {})
    if scope:
        params["filter"] = f"{scope} and {params['filter']}" if "filter" in params else scope
    return params


class World:
    def __init__(self, crms: dict[str, Crm], client: httpx.Client) -> None:
        self.crms = crms
        self.client = client
        self._apps: dict[str, App] = {}

    def app(self, platform: str) -> App:
        """The platform's shared application (connected with its simplest credential)."""
        if platform not in self._apps:
            self._apps[platform] = self.connect(platform)
        return self._apps[platform]

    def forget(self, platform: str) -> None:
        """The CRM's tokens were expired or revoked: the next test connects anew."""
        self._apps.pop(platform, None)

    def connect(self, platform: str, authorization: str = "", **credential: str) -> App:
        """A new application of ``platform``: with its simplest credential (a fresh one) unless
        one is given."""
        crm = self.crms[platform]
        if not authorization:
            authorization, credential = crm.platform.connect(crm.sim, crm.base_url)
        body = {"type": platform, "authorization": authorization, "credential": credential}
        created = self.client.post("/v1/application", json=body)
        assert created.status_code == 201, created.text
        return App(self.client, created.json()["key"], crm)


@pytest.fixture(scope="module")
def world(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Every platform's simulator and one gateway pointed at all of them."""
    with contextlib.ExitStack() as stack:
        crms: dict[str, Crm] = {}
        overrides: dict[str, dict[str, Any]] = {}
        clients: dict[str, dict[str, str]] = {}
        for platform in PLATFORMS.values():
            running = contextlib.contextmanager(run_simulated)
            simulated = stack.enter_context(
                running(Simulated, platform.simulator(), certificates, platform.overrides)
            )
            crms[platform.type] = Crm(platform, DESCRIPTORS[platform.type], simulated)
            overrides |= simulated.overrides(simulated.base_url)
            if platform.refresh is not None:
                clients[platform.type] = platform.refresh.client(simulated.simulator)
        settings = make_settings(
            Path(tmp_path_factory.mktemp("conformance")) / "data",
            platform_overrides=overrides,
            outbound_ca_file=str(certificates.ca_file),
            oauth_clients=clients,
        )
        migrate_database(settings)
        admin = create_account(settings)
        gateway = stack.enter_context(RunningGateway(create_app(settings)))
        client = stack.enter_context(gateway.client(admin.key))
        yield World(crms, client)


def empty(app: App, entity: str) -> None:
    """No record of ``entity`` in the CRM (its counts start from none)."""
    crm = app.crm
    crm.platform.table(crm.sim, crm.descriptor.entities[entity].object).clear()


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


# ---- the registry ---------------------------------------------------------------------------


def test_every_listed_platform_has_an_entry_with_a_sample_of_each_writable_entity() -> None:
    listed = {p.type for p in Catalogue.load(REGISTRY).listed()}
    assert listed == set(PLATFORMS) | set(VARIANTS)
    for name, platform in PLATFORMS.items():
        assert set(platform.samples) == set(writable(name)), name
        for entity, sample in platform.samples.items():  # listed per parent: the suite names one
            listed_by = DESCRIPTORS[name].entities[entity].list_by
            assert (sample.listed_by in listed_by) if listed_by else not sample.listed_by, entity
            assert sample.listed_by is None or sample.listed_by in sample.parents, entity
        assert ("oAuth-internal" in DESCRIPTORS[name].authorization_types) == (
            platform.refresh is not None
        ), name


# ---- connecting -----------------------------------------------------------------------------


@pytest.mark.parametrize("platform", TYPES)
def test_an_application_connects_and_a_wrong_credential_is_refused_and_not_kept(
    world: World, platform: str
) -> None:
    app = world.connect(platform)
    crm = app.crm
    shown = app.client.get(f"/v1/application/{app.key}").json()
    assert shown["type"] == platform and shown["is_authorized"] is True
    assert shown["company"]["id"] == crm.platform.company(crm.sim)
    assert app.call("GET", "/entity/contact/count").status_code == 200
    described = app.client.get(f"/v1/platform/{platform}").json()
    kinds = [a["type"] for a in described["authorization"]]
    assert sorted(kinds) == sorted(crm.descriptor.authorization_types)
    for entity, spec in crm.descriptor.entities.items():
        assert described["resource"]["entities"][entity] == list(spec.methods), entity

    before = app.client.get("/v1/application/count").json()["total"]
    authorization, _ = crm.platform.connect(crm.sim, crm.base_url)
    wrong = app.client.post(
        "/v1/application",
        json={
            "type": platform,
            "authorization": authorization,
            "credential": crm.platform.wrong(crm.sim, crm.base_url),
        },
    )
    assert wrong.status_code == 401 and code(wrong) == "UNAUTHORIZED", wrong.text
    assert app.client.get("/v1/application/count").json()["total"] == before


# ---- the life cycle of every entity ---------------------------------------------------------


@pytest.mark.parametrize(("platform", "entity"), ENTITIES)
def test_every_writable_entity_has_the_whole_life_cycle(
    world: World, platform: str, entity: str
) -> None:
    app = world.app(platform)
    sample = app.crm.platform.samples[entity]
    raw = sample.raw or app.crm.platform.raw
    empty(app, entity)
    links: dict[str, str] = {}
    for parent in sample.parents:
        links |= app.link(parent)
    if sample.complete:
        check_life_cycle(app, entity, sample.record, raw, _relations(links) or None)
    else:
        life_cycle(app, entity, sample, raw, _relations(links), _scope(sample, links))


def life_cycle(
    app: App,
    entity: str,
    sample: Sample,
    raw: tuple[str, str],
    links: dict[str, Any],
    scope: str = "",
) -> None:
    """conftest.check_life_cycle for what a CRM cannot do with a name field: lists sorted by
    the sort it has (or unsorted), and a name filter refused where it has none; every list
    and count filtered by ``scope`` (the parent's, where the CRM lists per parent only)."""
    name, base = sample.name, f"/entity/{entity}"
    if scope:  # never read whole: refused, naming the filter it needs
        for route in ("list", "count"):
            whole = app.call("GET", f"{base}/{route}")
            assert whole.status_code == 403 and code(whole) == "NOT_SUPPORTED", whole.text
            assert f"relation.{sample.listed_by} eq" in whole.json()["detail"]["message"]

    def body(n: int | str) -> dict[str, Any]:
        numbered = sample.numbered(n) if isinstance(n, int) else {}
        return {name: f"{entity} {n}", **sample.values, **numbered, **links}

    ids = {n: app.ok("POST", base, 201, json=body(n))["id"] for n in (3, 1, 2)}
    one = app.ok("GET", f"{base}/{ids[3]}")
    assert one[name] == f"{entity} 3"
    for key, value in sample.values.items():
        assert one[key] == value, key

    sort = name if sample.sort == NAME else sample.sort
    params = _scoped(scope, {"page_size": 2} | ({"sort": sort} if sort else {}))
    page_one = app.ok("GET", f"{base}/list", params=params)
    page_two = app.ok("GET", f"{base}/list", params={**params, "page": 2})
    listed = [r["id"] for r in page_one + page_two]
    if sort is None:
        assert sorted(listed) == sorted(ids.values())
    else:
        made = [ids[n] for n in ((3, 1, 2) if sort == "id" else (1, 2, 3))]
        assert listed == made
        backwards = app.call("GET", f"{base}/list", params=_scoped(scope, {"sort": f"-{sort}"}))
        if sample.backwards:
            assert [r["id"] for r in backwards.json()] == made[::-1], backwards.text
        else:  # a sort the CRM has one way only is refused the other, never answered unsorted
            assert backwards.status_code == 400 and code(backwards) == "NOT_VALID", backwards.text
    named = _scoped(scope, {"filter": f"{name} eq '{entity} 2'"})
    by_name = app.call("GET", f"{base}/list", params=named)
    if sample.filters:
        assert by_name.status_code == 200, by_name.text
        assert [r["id"] for r in by_name.json()] == [ids[2]]
    else:  # never answered as if it had filtered: a bad filter, or one the CRM has not
        refused = (by_name.status_code, code(by_name))
        assert refused in ((400, "NOT_VALID"), (403, "NOT_SUPPORTED")), by_name.text
    assert app.ok("GET", f"{base}/count", params=_scoped(scope)) == {"total": 3}

    app.ok("PUT", f"{base}/{ids[1]}", json=sample.change)
    changed = app.ok("GET", f"{base}/{ids[1]}")
    for key, value in sample.change.items():
        assert changed[key] == value, key
    if name not in sample.change:
        assert changed[name] == f"{entity} 1"  # what the change leaves, it keeps

    described = app.ok("GET", f"{base}/describe")
    assert described["entity"] == entity and name in described["schema"]["fetch"]["fields"]

    if not deletes(app, entity):  # nothing is deleted: a delete is refused, nothing else changes
        refused = app.call("DELETE", f"{base}/{ids[3]}")
        assert refused.status_code == 403 and code(refused) == "NOT_SUPPORTED", refused.text
        assert app.ok("GET", f"{base}/{ids[3]}")[name] == f"{entity} 3"
    else:
        assert app.call("DELETE", f"{base}/{ids[3]}").status_code == 204
        gone = app.call("GET", f"{base}/{ids[3]}")
        assert gone.status_code == 404 and code(gone) == "ENTITY_NOT_FOUND"
    left = 3 if not deletes(app, entity) else 2

    bulk = app.ok(
        "POST", f"{base}/bulk", 201, json={"item": [body(f"bulk {n}") for n in range(3)]}
    )["item"]
    assert [i["status"] for i in bulk] == [201, 201, 201]
    made_ids = [i["id"] for i in bulk]
    updated = app.ok(
        "PUT", f"{base}/bulk", json={"item": [{"id": i, **sample.change} for i in made_ids]}
    )
    assert [i["status"] for i in updated["item"]] == [200, 200, 200]
    assert app.ok("GET", f"{base}/count", params=_scoped(scope)) == {"total": left + 3}
    odd = ["not an id", f"{ids[2]},{ids[1]}"]
    if not deletes(app, entity):
        assert str(_raw_id(app, described["native_entity"], ids[2], raw)) == ids[2]
        return
    removed = app.ok(
        "DELETE", f"{base}/bulk", json={"item": [{"id": i} for i in (*odd, *made_ids)]}
    )
    assert [i["status"] for i in removed["item"]] == [404, 404, 204, 204, 204]
    assert app.ok("GET", f"{base}/count", params=_scoped(scope)) == {"total": 2}

    assert str(_raw_id(app, described["native_entity"], ids[2], raw)) == ids[2]


def _raw_id(app: App, native: str, record: str, raw: tuple[str, str]) -> Any:
    """The id in the CRM's own answer for ``record``, read through the passthrough."""
    path, id_key = raw
    answer = app.ok("POST", "/request", 201, json={"path": path.format(native=native, id=record)})
    assert answer["status_code"] == 200, answer
    found = json.loads(base64.b64decode(answer["content"]))
    for part in id_key.split("."):  # a dotted key reaches into an envelope ("data.0.id")
        found = found[int(part)] if isinstance(found, list) else found[part]
    prefix = app.crm.platform.raw_prefix
    return found.removeprefix(prefix) if prefix and isinstance(found, str) else found


# ---- lists: pages, their cost, filters and sorts --------------------------------------------


@pytest.mark.parametrize("platform", TYPES)
def test_pages_follow_each_other_and_cost_at_most_the_batches_they_hold(
    world: World, platform: str
) -> None:
    app = world.app(platform)
    empty(app, "contact")
    made = app.crm.platform.seed(app.sim, 250)
    batch = app.crm.descriptor.paging.of(app.crm.descriptor.entities["contact"].object).batch
    app.ok("GET", "/entity/contact/describe")
    assert app.ok("GET", "/entity/contact/count") == {"total": 250}

    def page(n: int) -> list[str]:
        rows = app.ok("GET", "/entity/contact/list", params={"page": n, "page_size": 100})
        return [r["id"] for r in rows]

    def most(records: int, pages: int) -> int:
        """What reading ``pages`` pages holding ``records`` may cost: a call per page within
        the OFFSET depth, else a call per batch."""
        if records <= app.crm.platform.offset_pages:
            return pages
        return math.ceil(records / batch)

    before = len(app.sim.calls)
    first, second = page(1), page(2)
    cost = len(app.sim.calls) - before
    assert len(first) == len(second) == 100 and not set(first) & set(second)
    assert 1 <= cost <= most(200, 2), (cost, batch, list(app.sim.calls)[before:])
    third, fourth = page(3), page(4)
    assert len(third) == 50 and fourth == []
    assert sorted(first + second + third) == sorted(made)  # each record once, none left out
    cost = len(app.sim.calls) - before
    assert cost <= most(250, 4), (cost, batch, list(app.sim.calls)[before:])


@pytest.mark.parametrize("platform", TYPES)
def test_contacts_filter_by_name_and_sort_as_the_crm_can(world: World, platform: str) -> None:
    app = world.app(platform)
    empty(app, "contact")
    sample = app.crm.platform.samples["contact"]
    links: dict[str, str] = {}
    for parent in sample.parents:
        links |= app.link(parent)
    names = ["Zed", "Amy", "Max"]
    ids = {
        n: app.ok(
            "POST",
            "/entity/contact",
            201,
            json={sample.name: n, **sample.values, **_relations(links)},
        )["id"]
        for n in names
    }
    scope = _scope(sample, links)
    by_name = _scoped(scope, {"filter": f"{sample.name} eq 'Max'"})
    found = app.ok("GET", "/entity/contact/list", params=by_name)
    assert [r["id"] for r in found] == [ids["Max"]]
    assert app.ok("GET", "/entity/contact/count", params=by_name) == {"total": 1}
    for hostile in ("x' or 1 eq 1 or 'a' eq 'a", "Max' or '1'='1", "%", "*"):
        quoted = hostile.replace("'", "''")
        hostile_filter = _scoped(scope, {"filter": f"{sample.name} eq '{quoted}'"})
        answer = app.call("GET", "/entity/contact/list", params=hostile_filter)
        # a value stays a value: nothing found, or refused as one the CRM cannot take
        assert answer.status_code in (200, 400), answer.text
        assert answer.status_code == 400 or answer.json() == [], hostile
    sort = sample.name if sample.sort == NAME else sample.sort
    assert sort is not None, "a contact's list sorts somehow"
    order = names if sort == "id" else sorted(names)
    for key, expected in ((sort, order), (f"-{sort}", order[::-1])):
        listed = app.call("GET", "/entity/contact/list", params=_scoped(scope, {"sort": key}))
        if key.startswith("-") and not sample.backwards:  # the CRM sorts it one way only
            assert listed.status_code == 400 and code(listed) == "NOT_VALID", listed.text
            continue
        assert [r["id"] for r in listed.json()] == [ids[n] for n in expected], key


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", TYPES)
def test_unknown_ids_and_entities_are_the_contracts_errors(world: World, platform: str) -> None:
    app = world.app(platform)
    missing = app.crm.platform.missing_id
    for method, path, body in (
        ("GET", f"/entity/contact/{missing}", None),
        ("PUT", f"/entity/contact/{missing}", {app.crm.platform.samples["contact"].name: "X"}),
        ("GET", "/entity/contact/not-an-id", None),
        ("PUT", "/entity/contact/not-an-id", {app.crm.platform.samples["contact"].name: "X"}),
        ("DELETE", "/entity/contact/not-an-id", None),
        ("DELETE", f"/entity/contact/{missing}", None),
    ):
        answer = app.call(method, path, json=body)
        if method == "DELETE" and not deletes(app, "contact"):  # the CRM deletes nothing
            assert answer.status_code == 403 and code(answer) == "NOT_SUPPORTED", answer.text
            continue
        assert answer.status_code == 404, (method, path, answer.text)
        assert code(answer) == "ENTITY_NOT_FOUND", (method, path)
    unmapped = next(
        e for e in ("invoice", "campaign", "case", "quote") if e not in app.crm.descriptor.entities
    )
    refused = app.call("GET", f"/entity/{unmapped}/list")
    assert refused.status_code == 403 and code(refused) == "NOT_SUPPORTED", refused.text
    assert app.crm.descriptor.name in refused.json()["detail"]["message"]


@pytest.mark.parametrize("platform", TYPES)
def test_a_crms_rate_limit_is_429_rate_limited_with_retry_after(
    world: World, platform: str
) -> None:
    app = world.app(platform)
    throttle = app.crm.platform.throttle
    assert app.call("GET", "/entity/contact/count").status_code == 200  # describes are known
    throttle.start(app.sim)
    try:
        limited = app.call("GET", "/entity/contact/count")
    finally:
        throttle.stop(app.sim)
    assert limited.status_code == 429, limited.text
    assert code(limited) == "RATE_LIMITED", limited.text
    assert throttle.says in limited.json()["detail"]["message"]
    low, high = throttle.retry_after
    assert low <= int(limited.headers["Retry-After"]) <= high, limited.headers
    assert app.call("GET", "/entity/contact/count").status_code == 200


# ---- tokens ---------------------------------------------------------------------------------


class _Tokens:
    """A simulator as conftest.check_refresh sees it (``expire_tokens``, ``refresh_tokens``)."""

    def __init__(self, refresh: Refresh, sim: Any) -> None:
        self._refresh, self._sim = refresh, sim

    def expire_tokens(self) -> None:
        self._refresh.expire(self._sim)

    @property
    def refresh_tokens(self) -> _Tokens:
        return self

    def clear(self) -> None:
        self._refresh.revoke(self._sim)


@pytest.mark.parametrize("platform", TYPES)
def test_oauth_internal_tokens_are_refreshed_once_per_expiry(world: World, platform: str) -> None:
    crm = world.crms[platform]
    refresh = crm.platform.refresh
    assert refresh is not None  # every platform so far has oAuth-internal (the registry test)
    app = world.connect(platform, "oAuth-internal", **refresh.credential(crm.sim, crm.base_url))
    before = refresh.token_calls(crm.sim)
    try:
        check_refresh(
            app,
            _Tokens(refresh, crm.sim),
            lambda: refresh.token_calls(crm.sim) - before,
            refresh.refusal,
        )
    finally:
        world.forget(platform)  # every token of the CRM expired, its refresh tokens revoked


@pytest.mark.parametrize("platform", TYPES)
def test_an_expired_external_token_is_the_clients_to_renew(world: World, platform: str) -> None:
    crm = world.crms[platform]
    refresh = crm.platform.refresh
    external = crm.descriptor.authorization_for("oAuth-external-refresh")
    assert refresh is not None and external is not None
    fields = {f.name for f in external.credential}
    issued = refresh.credential(crm.sim, crm.base_url)
    app = world.connect(
        platform,
        "oAuth-external-refresh",
        **{k: v for k, v in issued.items() if k in fields},
    )
    assert app.call("GET", "/entity/contact/count").status_code == 200
    before = refresh.token_calls(crm.sim)
    try:
        refresh.expire(crm.sim)
        expired = app.call("GET", "/entity/contact/count")
    finally:
        world.forget(platform)  # every token of the CRM expired
    assert expired.status_code == 401 and code(expired) == "UNAUTHORIZED", expired.text
    assert refresh.token_calls(crm.sim) == before  # crmgate holds no refresh token to use


# ---- users, the passthrough -----------------------------------------------------------------


@pytest.mark.parametrize("platform", TYPES)
def test_users_are_read_only(world: World, platform: str) -> None:
    app = world.app(platform)
    methods = set(app.crm.descriptor.entities["user"].methods)
    assert not methods & WRITES  # the contract's users are the CRM's: read, never written
    users = app.ok("GET", "/entity/user/list")
    assert users and all(u["id"] for u in users)
    assert app.ok("GET", "/entity/user/count") == {"total": len(users)}
    one = app.ok("GET", f"/entity/user/{users[0]['id']}")
    assert one["id"] == users[0]["id"] and one.get("username") == users[0].get("username")
    for method, path, body in (
        ("POST", "/entity/user", {"last_name": "X"}),
        ("PUT", f"/entity/user/{one['id']}", {"last_name": "X"}),
        ("DELETE", f"/entity/user/{one['id']}", None),
        ("POST", "/entity/user/bulk", {"item": [{"last_name": "X"}]}),
    ):
        refused = app.call(method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert code(refused) == "NOT_SUPPORTED", (method, path)
    assert app.ok("GET", "/entity/user/describe")["schema"]["create"]["allowed"] is False
    assert app.ok("GET", "/entity/user/count") == {"total": len(users)}


@pytest.mark.parametrize("platform", TYPES)
def test_users_filter_and_sort_whatever_the_crms_users_api_can(world: World, platform: str) -> None:
    """Where the CRM's users API neither filters nor sorts, crmgate reads them whole and does."""
    app = world.app(platform)
    domain = f"{platform.lower()}.builders.example"
    for last in ("Baker", "Able", "Carter"):
        app.crm.platform.add_user(app.sim, last, f"{last.lower()}@{domain}")
    params = {"filter": f"email contains '@{domain}'", "sort": "-last_name", "page_size": 2}
    first = app.ok("GET", "/entity/user/list", params=params)
    second = app.ok("GET", "/entity/user/list", params={**params, "page": 2})
    emails = [u["email"][0]["address"] for u in first + second]
    assert emails == [f"{n}@{domain}" for n in ("carter", "baker", "able")]
    counted = app.ok("GET", "/entity/user/count", params={"filter": params["filter"]})
    assert counted == {"total": 3}


@pytest.mark.parametrize("platform", TYPES)
def test_the_passthrough_reaches_the_applications_crm_and_nothing_else(
    world: World, platform: str
) -> None:
    app = world.app(platform)
    sample = app.crm.platform.samples["contact"]
    raw = sample.raw or app.crm.platform.raw
    links: dict[str, str] = {}
    for parent in sample.parents:
        links |= app.link(parent)
    made = app.ok(
        "POST",
        "/entity/contact",
        201,
        json={sample.name: "Raw", **sample.values, **_relations(links)},
    )["id"]
    native = app.ok("GET", "/entity/contact/describe")["native_entity"]
    assert str(_raw_id(app, native, made, raw)) == made
    missing = raw[0].format(native=native, id=app.crm.platform.missing_id)
    answer = app.ok("POST", "/request", 201, json={"path": missing})
    assert answer["status_code"] != 200, answer  # the CRM's own answer, as it is
    for bad in ("https://evil.example/x", "//evil.example/x", "../../../x", "%2e%2e/%2e%2e/x"):
        refused = app.call("POST", "/request", json={"method": "GET", "path": bad})
        assert refused.status_code == 422 and code(refused) == "NOT_VALID", (bad, refused.text)
