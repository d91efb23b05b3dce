"""The one input rule for text: every string a request carries is Unicode text without NUL.

A lone surrogate (U+D800 to U+DFFF alone, which JSON can carry as the escape ``\\ud800``) is
not Unicode: the CRMs store it and then cannot be read back by strict clients, and crmgate's
store cannot keep it. NUL (U+0000) is refused in all text too: PostgreSQL cannot store it in
text, CRMs cut or refuse it, and no field of the contract has a use for it. Percent-encoded
bytes that are not UTF-8 are refused as well, rather than read as U+FFFD and sent on.

``TextRule`` (ASGI) applies it to every request before any route runs: the query parameters,
the path, the header fields, and each string of a JSON body, object keys included (all of a
body's strings: unified and custom fields, bulk items, filters, passthrough requests, the
gateway's own entities). What breaks it is answered 422 NOT_VALID, each field named (``last_name``,
``custom_fields.x``, ``item.1.x``, the query parameter ``filter``, ``path``, a header's name),
so nothing of the request reaches a CRM or the store. docs/errors.md states the rule.

A JSON body is parsed here only when its bytes could hold such text (an escape of NUL or of a
surrogate, a NUL byte, bytes that are not UTF-8): most bodies are looked at, not parsed twice.
The body's depth is bounded before it gets here (api/bounds.py), so walking it is bounded too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import islice
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmgate.api.bounds import is_json_request, replay
from crmgate.api.errors import send_error

MAX_NAMED = 20  # fields named in one refusal

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
# what JSON bytes hold for NUL or a surrogate, if they are UTF-8: a \u0000 or \uD800-\uDFFF escape
_ESCAPED = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")

Problem = tuple[str, str]  # (field, what is wrong)


def shown(text: str) -> str:
    """``text`` with what is not text in it written as an escape (``a\\udc00``), for a field
    name that must itself be sent back."""
    return _NOT_TEXT.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _why(character: str) -> str:
    if character == "\x00":
        return "NUL (U+0000), which crmgate does not accept in text"
    return f"a lone surrogate (U+{ord(character):04X}), which is not Unicode text"


_HOLDS_NUL = f"holds {_why(chr(0))}"


def text_problem(text: str) -> str | None:
    """What makes ``text`` break the rule, or None."""
    found = _NOT_TEXT.search(text)
    return None if found is None else f"holds {_why(found.group())}"


def _walk(value: Any, path: tuple[str, ...]) -> Iterator[Problem]:
    if isinstance(value, str):
        if problem := text_problem(value):
            yield ".".join(path) or "body", problem
    elif isinstance(value, dict):
        for key, item in value.items():
            where = (*path, shown(key))
            if problem := text_problem(key):
                yield ".".join(where), f"the name {problem}"
            yield from _walk(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, str(index)))


def _may_hold_bad_text(body: bytes) -> bool:
    if _ESCAPED.search(body) or b"\x00" in body:  # a NUL byte: not UTF-8 JSON (UTF-16, say)
        return True
    if body.isascii():
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # Python's JSON reads UTF-8's form of a surrogate (ED A0 80)
        return True
    return False


def json_problems(body: bytes) -> list[Problem]:
    """The strings of a JSON body that break the rule. A body that is not JSON has none here:
    the framework refuses it afterwards (400)."""
    if not _may_hold_bad_text(body):
        return []
    try:
        parsed = json.loads(body)  # as the framework reads it (bytes: UTF-8, -16 or -32)
    except ValueError:
        return []
    return list(islice(_walk(parsed, ()), MAX_NAMED))


def _decoded(raw: bytes, plus_is_space: bool = False) -> str | None:
    """Percent-encoded ``raw`` as text, or None if its bytes are not UTF-8."""
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


_NOT_UTF8 = "percent-encoded bytes that are not UTF-8 text"


def query_problems(query: bytes) -> Iterator[Problem]:
    """Each parameter, read as the framework reads it (application/x-www-form-urlencoded), but
    strictly: the framework would make bytes that are not UTF-8 into U+FFFD."""
    if b"%" not in query:  # a request line cannot hold NUL; only an escape brings one
        return
    for pair in query.split(b"&"):
        raw_name, _, raw_value = pair.partition(b"=")
        name = _decoded(raw_name, plus_is_space=True)
        if name is None:
            yield raw_name.decode("latin-1"), f"the name is {_NOT_UTF8}"
        elif problem := text_problem(name):
            yield shown(name), f"the name {problem}"
        else:
            value = _decoded(raw_value, plus_is_space=True)
            if value is None:
                yield name, f"the value is {_NOT_UTF8}"
            elif problem := text_problem(value):
                yield name, problem


def path_problems(scope: Scope) -> Iterator[Problem]:
    raw: bytes = scope.get("raw_path") or b""
    path = _decoded(raw) if b"%" in raw else scope.get("path", "")
    if path is None:
        yield "path", _NOT_UTF8
    elif problem := text_problem(path):
        yield "path", problem


def header_problems(scope: Scope) -> Iterator[Problem]:
    # Field values are read as Latin-1, in which every byte is a character, so only NUL is
    # left: RFC 9110 section 5.5 forbids it, and uvicorn refuses it (400), not every server.
    for name, value in scope.get("headers", []):
        if b"\x00" in value:
            yield name.decode("latin-1"), _HOLDS_NUL


class TextRule:
    """Refuses, with 422 NOT_VALID naming each field, a request whose text breaks the rule."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problems = [
            *path_problems(scope),
            *query_problems(scope.get("query_string", b"")),
            *header_problems(scope),
        ]
        if is_json_request(scope.get("headers", [])):
            messages: list[Message] = []
            while True:  # one message: the bounds outside this layer read the body whole
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
            body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
            problems += json_problems(body)
            receive = replay(messages, receive)
        if problems:
            await self._refuse(scope, send, problems)
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, problems: list[Problem]) -> None:
        errors = [{"field": field, "message": message} for field, message in problems[:MAX_NAMED]]
        message = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
        await send_error(scope, send, 422, "NOT_VALID", message, errors=errors)
