"""The OData v4 pieces a simulated Dataverse needs: the ``$filter`` language (comparisons,
``and``/``or``/``not``, ``contains``/``startswith``/``endswith``, which Dataverse runs as SQL LIKE:
``%``, ``_``, ``[set]`` and ``[^set]`` are wildcards, ``[%]`` a plain ``%``; string literals in
single quotes with '' escaping, GUIDs, numbers, dates and ``null`` unquoted) and multipart/mixed
``$batch`` bodies (OData 4.0 part 1, 11.7), parsed and written as Dataverse does."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any


class ODataError(Exception):
    """A request Dataverse refuses: HTTP status, its hexadecimal error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def syntax_error(message: str) -> ODataError:
    return ODataError(400, "0x80060888", message)


_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
GUID = re.compile(f"^{_GUID}$")
_TOKEN = re.compile(
    rf"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<datetime>\d{{4}}-\d{{2}}-\d{{2}}T[0-9:.]+(?:Z|[+-]\d{{2}}:\d{{2}})?)
      | (?P<guid>{_GUID})
      | (?P<date>\d{{4}}-\d{{2}}-\d{{2}})
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[mMdDlL]?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[(),])
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
FUNCTIONS = ("contains", "startswith", "endswith")


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, boolean, null, guid, datetime, date
    value: Any


@dataclass(frozen=True)
class Comparison:
    op: str
    column: str
    literal: Literal


@dataclass(frozen=True)
class Function:
    name: str
    column: str
    literal: Literal


@dataclass(frozen=True)
class Logical:
    op: str  # and, or, not
    parts: tuple[Node, ...]


Node = Comparison | Function | Logical


def _tokens(text: str) -> list[tuple[str, str]]:
    found = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            break
        kind = match.lastgroup or "bad"
        if kind == "bad":
            raise syntax_error(f"Syntax error at position {match.start(kind)} in '{text[:200]}'.")
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            wanted = f"'{value}'" if value else "an expression"
            raise syntax_error(f"Syntax error: {wanted} expected in '{self.text[:200]}'.")
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.disjunction()
        if self.peek() is not None:
            raise syntax_error(f"Syntax error at '{self.peek()[1]}' in '{self.text[:200]}'.")  # type: ignore[index]
        return node

    def disjunction(self) -> Node:
        parts = [self.conjunction()]
        while self.peek() == ("name", "or"):
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Logical("or", tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.negation()]
        while self.peek() == ("name", "and"):
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else Logical("and", tuple(parts))

    def negation(self) -> Node:
        if self.peek() == ("name", "not"):
            self.take()
            return Logical("not", (self.negation(),))
        return self.primary()

    def primary(self) -> Node:
        token = self.take()
        if token == ("punct", "("):
            node = self.disjunction()
            self.take(")")
            return node
        if token[0] != "name":
            raise syntax_error(f"Syntax error at '{token[1]}' in '{self.text[:200]}'.")
        if token[1] in FUNCTIONS and self.peek() == ("punct", "("):
            self.take("(")
            column = self.take()
            if column[0] != "name":
                raise syntax_error(f"{token[1]}: a property name expected.")
            self.take(",")
            literal = self.literal()
            self.take(")")
            return Function(token[1], column[1], literal)
        op = self.take()
        if op[0] != "name" or op[1] not in COMPARISONS:
            raise syntax_error(f"Syntax error at '{op[1]}' in '{self.text[:200]}'.")
        return Comparison(op[1], token[1], self.literal())

    def literal(self) -> Literal:
        kind, text = self.take()
        if kind == "string":
            return Literal("string", text[1:-1].replace("''", "'"))
        if kind == "number":
            core = text.rstrip("mMdDlL")
            return Literal("number", float(core) if any(c in core for c in ".eE") else int(core))
        if kind == "name" and text in ("true", "false"):
            return Literal("boolean", text == "true")
        if kind == "name" and text == "null":
            return Literal("null", None)
        if kind == "guid":
            return Literal("guid", text.lower())
        if kind == "datetime":
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise syntax_error(f"Unrecognized 'Edm.DateTimeOffset' literal '{text}'.") from None
            return Literal("datetime", parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
        if kind == "date":
            try:
                return Literal("date", date.fromisoformat(text))
            except ValueError:
                raise syntax_error(f"Unrecognized 'Edm.Date' literal '{text}'.") from None
        raise syntax_error(f"Syntax error: a literal expected, found '{text}'.")


def parse_filter(text: str) -> Node:
    return _Parser(text).parse()


def columns_of(node: Node) -> set[str]:
    if isinstance(node, Logical):
        return set().union(*(columns_of(part) for part in node.parts))
    return {node.column}


# ---- evaluation ---------------------------------------------------------------------------------


def _comparable(value: Any, literal: Literal, edm: str, column: str, op: str) -> tuple[Any, Any]:
    """The stored value and the literal as two values of one type, or the error Dataverse gives
    for operands of incompatible types."""
    right = literal.value
    incompatible = syntax_error(
        "A binary operator with incompatible types was detected. Found operand types "
        f"'{edm}' and '{_edm_of(literal)}' for operator kind '{op}'."
    )
    if edm == "Edm.String":
        if literal.kind != "string":
            raise incompatible
        return (str(value).casefold(), str(right).casefold())  # SQL collation: case-insensitive
    if edm == "Edm.Guid":
        if literal.kind != "guid":
            raise incompatible
        return (str(value).lower(), right)
    if edm == "Edm.Boolean":
        if literal.kind != "boolean":
            raise incompatible
        return (value, right)
    if edm == "Edm.DateTimeOffset":
        if literal.kind == "date":
            right = datetime.combine(right, datetime.min.time(), UTC)
        elif literal.kind != "datetime":
            raise incompatible
        stored = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return (stored if stored.tzinfo else stored.replace(tzinfo=UTC), right)
    if literal.kind != "number":
        raise incompatible
    return (float(value), float(right))


def _edm_of(literal: Literal) -> str:
    return {
        "string": "Edm.String",
        "number": "Edm.Decimal",
        "boolean": "Edm.Boolean",
        "guid": "Edm.Guid",
        "datetime": "Edm.DateTimeOffset",
        "date": "Edm.Date",
        "null": "null",
    }[literal.kind]


def evaluate(node: Node, record: dict[str, Any], edm: Callable[[str], str]) -> bool:
    """Whether ``record`` (column -> value) matches; ``edm`` gives a column's Edm type."""
    if isinstance(node, Logical):
        results = [evaluate(part, record, edm) for part in node.parts]
        if node.op == "not":
            return not results[0]
        return all(results) if node.op == "and" else any(results)
    kind = edm(node.column)
    value = record.get(node.column)
    if isinstance(node, Function):
        if kind != "Edm.String" or node.literal.kind != "string":
            raise syntax_error(f"'{node.name}' takes a string property and a string literal.")
        if value is None:
            return False
        pattern = like(str(node.literal.value))
        if node.name == "contains":
            return pattern.search(str(value)) is not None
        if node.name == "startswith":
            return pattern.match(str(value)) is not None
        return re.search(f"(?:{pattern.pattern})\\Z", str(value), pattern.flags) is not None
    if node.literal.kind == "null":
        if node.op not in ("eq", "ne"):
            return False
        return (value is None) == (node.op == "eq")
    if value is None:
        return node.op == "ne"
    left, right = _comparable(value, node.literal, kind, node.column, _OP_NAMES[node.op])
    return bool(
        {
            "eq": left == right,
            "ne": left != right,
            "gt": left > right,
            "ge": left >= right,
            "lt": left < right,
            "le": left <= right,
        }[node.op]
    )


def like(pattern: str) -> re.Pattern[str]:
    """A T-SQL LIKE pattern as a regular expression, case-insensitive as Dataverse's collation
    (Microsoft's "Use wildcard characters in conditions for string values"): ``%`` any run of
    characters, ``_`` any one, ``[abc]``/``[a-c]`` one of a set, ``[^abc]`` one not in it; so
    ``[%]``, ``[_]`` and ``[[]`` are the characters themselves."""
    out = []
    at = 0
    while at < len(pattern):
        char = pattern[at]
        end = pattern.find("]", at + 2) if char == "[" else -1
        if char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        elif char == "[" and end != -1:
            body = pattern[at + 1 : end]
            negated = body.startswith("^") and len(body) > 1
            members = body[1:] if negated else body
            parts = [
                "-" if c == "-" and 0 < i < len(members) - 1 else re.escape(c)
                for i, c in enumerate(members)
            ]
            out.append(("[^" if negated else "[") + "".join(parts) + "]")
            at = end
        else:
            out.append(re.escape(char))
        at += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


_OP_NAMES = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}


# ---- $batch (multipart/mixed) -------------------------------------------------------------------

_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def boundary_of(content_type: str) -> str | None:
    match = _BOUNDARY.search(content_type)
    return match.group(1) if match else None


@dataclass
class BatchPart:
    """One request of a batch: its method, URL, headers and body, and its Content-ID."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class BatchItem:
    """A top-level item of a batch: one request, or a change set of several."""

    parts: list[BatchPart]
    changeset: bool = False
    boundary: str = field(default_factory=lambda: f"changesetresponse_{uuid.uuid4()}")


def _split(body: str, boundary: str) -> list[str]:
    delimiter = f"--{boundary}"
    if delimiter not in body:
        raise ODataError(400, "0x80060891", "The batch body has no part with its boundary.")
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            break
        parts.append(chunk.removeprefix("\r\n").removeprefix("\n"))
    return parts


def _headers_and_body(text: str) -> tuple[dict[str, str], str]:
    normalized = text.replace("\r\n", "\n")
    head, _, rest = normalized.partition("\n\n")
    headers = {}
    for line in head.split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _request(text: str, content_id: str | None) -> BatchPart:
    normalized = text.replace("\r\n", "\n")
    line, _, rest = normalized.lstrip("\n").partition("\n")
    pieces = line.split(" ")
    if len(pieces) != 3 or not pieces[2].startswith("HTTP/"):
        raise ODataError(400, "0x80060891", f"A batch part has no request line: '{line[:100]}'.")
    headers, body = _headers_and_body(rest)
    return BatchPart(pieces[0].upper(), pieces[1], headers, body.strip().encode(), content_id)


def parse_batch(body: bytes, content_type: str) -> list[BatchItem]:
    """The items of a ``$batch`` request body, in order (at most 1000 requests)."""
    boundary = boundary_of(content_type)
    if not content_type.lower().startswith("multipart/mixed") or boundary is None:
        raise ODataError(
            400, "0x80060891", "The batch request must be multipart/mixed with a boundary."
        )
    items: list[BatchItem] = []
    for chunk in _split(body.decode("utf-8", "replace"), boundary):
        headers, rest = _headers_and_body(chunk)
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            inner = boundary_of(kind)
            if inner is None:
                raise ODataError(400, "0x80060891", "A change set has no boundary.")
            parts = []
            for piece in _split(rest, inner):
                part_headers, request = _headers_and_body(piece)
                parts.append(_request(request, part_headers.get("content-id")))
            items.append(BatchItem(parts, changeset=True))
        else:
            items.append(BatchItem([_request(rest, headers.get("content-id"))]))
    if sum(len(item.parts) for item in items) > 1000:
        raise ODataError(400, "0x8005f103", "The number of requests in a batch is limited to 1000.")
    return items


@dataclass
class PartReply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


def _render(reply: PartReply, boundary: str) -> str:
    lines = [
        f"--{boundary}",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
    ]
    if reply.content_id is not None:
        lines.append(f"Content-ID: {reply.content_id}")
    lines += ["", f"HTTP/1.1 {reply.status} {reply.reason}"]
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
