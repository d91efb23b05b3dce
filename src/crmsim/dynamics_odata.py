"""The OData v4 pieces a simulated Dataverse needs: the ``$filter`` language (comparisons,
``and``/``or``/``not``, ``contains``/``startswith``/``endswith``, which Dataverse runs as SQL LIKE:
``%``, ``_``, ``[set]`` and ``[^set]`` are wildcards, ``[%]`` a plain ``%``; string literals in
single quotes with '' escaping, GUIDs, numbers, dates and ``null`` unquoted) and multipart/mixed
``$batch`` bodies (OData 4.0 part 1, 11.7), parsed and written as Dataverse does."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from crmsim import query, records


class ODataError(Exception):
    """A request Dataverse refuses: HTTP status, its hexadecimal error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @property
    def answer(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def syntax_error(message: str) -> ODataError:
    return ODataError(400, "0x80060888", message)


GUID = re.compile(f"^{query.GUID}$")
_LEXER = query.Lexer(
    lambda text, at: syntax_error(f"Syntax error at position {at} in '{text[:200]}'."),
    string=query.STRING_DOUBLED,
    datetime=r"\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?",
    guid=query.GUID,
    date=query.DATE,
    number=r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[mMdDlL]?",
    word=query.NAME,
    punct=query.PUNCT,
)
COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
FUNCTIONS = ("contains", "startswith", "endswith")
Literal = query.Literal
Logical = query.Junction


@dataclass(frozen=True)
class Comparison:
    """``column op literal``, or a string function's ``op(column,literal)`` (``contains``)."""

    op: str
    column: str
    literal: Literal


Node = Comparison | Logical


def parse_filter(text: str) -> Node:
    def fail(found: query.Token | None, wanted: str) -> ODataError:
        if found is None:
            return syntax_error(f"Syntax error: {wanted} expected in '{text[:200]}'.")
        return syntax_error(f"Syntax error at '{found.text}' in '{text[:200]}'.")

    cursor = query.Cursor(_LEXER.tokens(text), fail, fold=False)

    def primary() -> Node:
        name = cursor.take("word", "an expression").text
        if name in FUNCTIONS and cursor.punct("("):
            column = cursor.take("word", "a property name").text
            cursor.expect_punct(",")
            found = literal()
            cursor.expect_punct(")")
            return Comparison(name, column, found)
        op = cursor.take(wanted="an operator")
        if op.kind != "word" or op.text not in COMPARISONS:
            raise fail(op, "an operator")
        return Comparison(op.text, name, literal())

    def literal() -> Literal:
        token = cursor.take(wanted="a literal")
        found = query.literal(token, syntax_error, fold=False)
        if found is None:
            raise syntax_error(f"Syntax error: a literal expected, found '{token.text}'.")
        return found

    node: Node = query.boolean(cursor, primary)
    cursor.end()
    return node


def columns_of(node: Node) -> set[str]:
    return {leaf.column for leaf in query.leaves(node)}


# ---- evaluation ---------------------------------------------------------------------------------

# The Edm types of the columns, by the kind of value they compare as (the others are numbers).
_KINDS = {
    "Edm.String": ("string", "text"),
    "Edm.Guid": ("guid", "text"),
    "Edm.Boolean": ("boolean", "boolean"),
    "Edm.DateTimeOffset": ("datetime", "datetime"),
}
_EDM_OF = {
    "string": "Edm.String",
    "number": "Edm.Decimal",
    "boolean": "Edm.Boolean",
    "guid": "Edm.Guid",
    "datetime": "Edm.DateTimeOffset",
    "date": "Edm.Date",
    "null": "null",
}
_OP_NAMES = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}


def evaluate(node: Node, record: dict[str, Any], edm: Callable[[str], str]) -> bool:
    """Whether ``record`` (column -> value) matches; ``edm`` gives a column's Edm type."""
    return query.evaluate(
        node, lambda leaf: _holds(leaf, record.get(leaf.column), edm(leaf.column))
    )


def _holds(leaf: Comparison, value: Any, edm: str) -> bool:
    if leaf.op in FUNCTIONS:
        if edm != "Edm.String" or leaf.literal.kind != "string":
            raise syntax_error(f"'{leaf.op}' takes a string property and a string literal.")
        if value is None:
            return False
        # T-SQL LIKE, case-insensitive as Dataverse's collation (Microsoft's "Use wildcard
        # characters in conditions for string values"): % any run of characters, _ any one,
        # [abc] or [a-c] one of a set, [^abc] one not in it; so [%], [_] and [[] are themselves
        pattern = query.like(str(leaf.literal.value), sets=True)
        around = {"contains": ".*(?:{}).*", "startswith": "(?:{}).*", "endswith": ".*(?:{})"}
        wanted = around[leaf.op].format(pattern.pattern)
        return re.fullmatch(wanted, str(value), pattern.flags) is not None
    literal = leaf.literal
    if literal.kind != "null" and value is not None:
        # Dataverse refuses operands of incompatible types, whatever the record holds
        accepted, _ = _KINDS.get(edm, ("number", "number"))
        if literal.kind != accepted and not (
            edm == "Edm.DateTimeOffset" and literal.kind == "date"
        ):
            raise syntax_error(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{edm}' and '{_EDM_OF[literal.kind]}' for operator kind '{_OP_NAMES[leaf.op]}'."
            )
    return records.test(leaf.op, value, literal.value, _KINDS.get(edm, ("", "number"))[1])


# ---- $batch (multipart/mixed) -------------------------------------------------------------------

_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def _bad_batch(message: str) -> ODataError:
    return ODataError(400, "0x80060891", message)


def _entity(text: str) -> tuple[dict[str, str], str]:
    """A MIME entity's headers (by lower-case name) and body."""
    head, _, body = text.replace("\r\n", "\n").lstrip("\n").partition("\n\n")
    pairs = (line.partition(":") for line in head.split("\n"))
    return {name.strip().lower(): value.strip() for name, sep, value in pairs if sep}, body


def _parts(body: str, content_type: str) -> list[tuple[dict[str, str], str]]:
    """The parts of a multipart/mixed body (RFC 2046 section 5.1), up to its close delimiter."""
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or found is None:
        raise _bad_batch("A batch and its change sets must be multipart/mixed with a boundary.")
    chunks = body.split(f"--{found.group(1)}")
    if len(chunks) < 2:
        raise _bad_batch("The batch body has no part with its boundary.")
    return [_entity(c) for c in itertools.takewhile(lambda c: not c.startswith("--"), chunks[1:])]


@dataclass
class BatchPart:
    """One request of a batch: its method, URL, headers and body, and its Content-ID."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


def _request(headers: dict[str, str], text: str) -> BatchPart:
    """An application/http part (its ``headers``): the request line, headers and body."""
    line, _, rest = text.lstrip("\n").partition("\n")
    pieces = line.split(" ")
    if len(pieces) != 3 or not pieces[2].startswith("HTTP/"):
        raise _bad_batch(f"A batch part has no request line: '{line[:100]}'.")
    own, body = _entity(rest)
    content_id = headers.get("content-id")
    return BatchPart(pieces[0].upper(), pieces[1], own, body.strip().encode(), content_id)


@dataclass
class BatchItem:
    """A top-level item of a batch: one request, or a change set of several."""

    parts: list[BatchPart]
    changeset: bool = False
    boundary: str = field(default_factory=lambda: f"changesetresponse_{uuid.uuid4()}")


def parse_batch(body: bytes, content_type: str) -> list[BatchItem]:
    """The items of a ``$batch`` request body, in order (at most 1000 requests)."""
    items = []
    for headers, rest in _parts(body.decode("utf-8", "replace"), content_type):
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            items.append(BatchItem([_request(*part) for part in _parts(rest, kind)], True))
        else:
            items.append(BatchItem([_request(headers, rest)]))
    if sum(len(item.parts) for item in items) > 1000:
        raise ODataError(400, "0x8005f103", "The number of requests in a batch is limited to 1000.")
    return items


@dataclass
class PartReply:
    status: int
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


def _render(reply: PartReply, boundary: str) -> str:
    lines = [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if reply.content_id is not None:
        lines.append(f"Content-ID: {reply.content_id}")
    lines += ["", f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    lines += ["", reply.body.decode("utf-8"), ""]
    return "\r\n".join(lines)


def render_batch(answers: list[tuple[BatchItem, list[PartReply]]], boundary: str) -> str:
    out = []
    for item, replies in answers:
        if item.changeset:
            out.append(
                f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={item.boundary}\r\n\r\n"
            )
            out += [_render(reply, item.boundary) for reply in replies]
            out.append(f"--{item.boundary}--\r\n")
        else:
            out += [_render(reply, boundary) for reply in replies]
    out.append(f"--{boundary}--\r\n")
    return "".join(out)
