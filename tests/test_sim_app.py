"""The simulators' shared skeleton (crmsim.app) and write check (crmsim.columns), each by its
contract: a route table served over real HTTP on loopback, paging helpers, the field ladder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from crmsim.app import Route, Simulator, after, cursor, one_of, overrides, uncursor, whole
from crmsim.columns import READ_ONLY, REQUIRED, UNKNOWN, Column, Invalid, Problem, check
from crmsim.guard import Guard, header
from crmsim.server import RunningSimulator
from crmsim.tokens import AccessToken, TokenStore


class Tiny(Simulator[str]):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = TokenStore()
        self.guard = Guard(self.tokens, [header("X-Key")], faults=self.faults)
        self.seen_paths: list[str] = []

    def seen(self, request: web.Request) -> None:
        self.seen_paths.append(request.path)

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/open", self._open, guarded=False),
            Route("GET", "/things/" + one_of("thing", ("apples", "pears")), self._thing),
        ]

    async def _open(self, request: web.Request) -> web.Response:
        return web.json_response({"base": self.base_url})

    async def _thing(self, request: web.Request, token: AccessToken[str]) -> web.Response:
        return web.json_response({"thing": request.match_info["thing"], "who": token.subject})


@pytest.fixture
def tiny() -> Iterator[tuple[Tiny, httpx.Client]]:
    sim = Tiny()
    with RunningSimulator(sim.app(), None) as running, httpx.Client(base_url=running.base_url) as c:
        yield sim, c


def test_an_open_route_needs_no_credential_and_learns_the_base_url(
    tiny: tuple[Tiny, httpx.Client],
) -> None:
    sim, client = tiny
    answer = client.get("/open")
    assert answer.status_code == 200
    assert answer.json()["base"] == sim.base_url == str(client.base_url).rstrip("/")


def test_a_guarded_route_refuses_without_a_credential_and_serves_with_one(
    tiny: tuple[Tiny, httpx.Client],
) -> None:
    sim, client = tiny
    assert client.get("/things/apples").status_code == 401
    key = sim.tokens.issue_key("ada")
    answer = client.get("/things/pears", headers={"X-Key": key})
    assert answer.json() == {"thing": "pears", "who": "ada"}


def test_one_of_serves_only_its_choices(tiny: tuple[Tiny, httpx.Client]) -> None:
    sim, client = tiny
    key = sim.tokens.issue_key("ada")
    assert client.get("/things/plums", headers={"X-Key": key}).status_code == 404


def test_every_call_is_logged_in_order_and_seen(tiny: tuple[Tiny, httpx.Client]) -> None:
    sim, client = tiny
    client.get("/open")
    client.get("/things/apples")
    client.get("/nowhere")
    assert list(sim.calls) == [("GET", "/open"), ("GET", "/things/apples"), ("GET", "/nowhere")]
    assert sim.seen_paths == ["/open", "/things/apples", "/nowhere"]


def test_expired_tokens_are_refused(tiny: tuple[Tiny, httpx.Client]) -> None:
    sim, client = tiny
    key = sim.tokens.issue_access("ada")
    sim.expire_tokens()
    assert client.get("/things/apples", headers={"X-Key": key}).status_code == 401


def test_a_cursor_carries_its_state_and_garbage_is_no_cursor() -> None:
    assert uncursor(cursor({"offset": 200})) == {"offset": 200}
    assert uncursor("not base64!") is None
    assert uncursor(cursor(7)) == 7


def test_whole_reads_whole_numbers_only() -> None:
    assert whole(None, 100) == 100
    assert whole("25") == 25
    assert whole("-1") is None
    assert whole("2.5") is None


def test_keyset_paging_returns_one_row_more_than_the_page() -> None:
    rows = [{"id": i} for i in (5, 1, 3, 4, 2)]
    assert [r["id"] for r in after(rows, lambda r: r["id"], None, 2)] == [1, 2, 3]
    assert [r["id"] for r in after(rows, lambda r: r["id"], 3, 2)] == [4, 5]


def test_overrides_point_the_platform_at_the_simulator() -> None:
    found = overrides("Crm", "https://127.0.0.1:9", {"token_url": "/oauth/token"}, "api_url")
    assert found == {
        "Crm": {
            "api_url": "https://127.0.0.1:9",
            "instance_hosts": ["127.0.0.1:9"],
            "oauth": {"token_url": "https://127.0.0.1:9/oauth/token"},
        }
    }


# ---- the write ladder ---------------------------------------------------------------------

COLUMNS = {
    c.name: c
    for c in (
        Column("id", "number", read_only=True),
        Column("name", required=True),
        Column("size", "number"),
    )
}


def number(column: Column, value: Any) -> Any:
    if column.type == "number" and not isinstance(value, int):
        raise Invalid(f"{value} is not a number", "NAN")
    return value


def checked(values: dict[str, Any], creating: bool = True) -> tuple[dict[str, Any], list[Any]]:
    return check(values, COLUMNS.get, number, creating=creating, columns=COLUMNS.values())


def test_a_valid_write_comes_back_converted() -> None:
    assert checked({"name": "Ada", "size": 3}) == ({"name": "Ada", "size": 3}, [])


def test_unknown_read_only_and_invalid_fields_are_named_in_order() -> None:
    _, problems = checked({"colour": "red", "id": 1, "size": "big", "name": "Ada"})
    assert problems == [
        Problem("colour", UNKNOWN),
        Problem("id", READ_ONLY),
        Problem("size", "NAN", "big is not a number"),
    ]


def test_a_required_field_is_needed_on_create_only() -> None:
    assert checked({"size": 1})[1] == [Problem("name", REQUIRED)]
    assert checked({"name": ""})[1] == [Problem("name", REQUIRED)]
    assert checked({"size": 1}, creating=False) == ({"size": 1}, [])


def test_an_empty_value_clears_its_field_unconverted() -> None:
    clean, problems = check({"size": ""}, COLUMNS.get, number, creating=False, empty=(None, ""))
    assert (clean, problems) == ({"size": None}, [])
