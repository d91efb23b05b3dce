"""One tokenizer and parsing toolkit for the simulators' query languages (SOQL, COQL, OData
``$filter``, Zoho's search criteria): a language declares its token patterns, keywords and errors,
and writes only its own grammar over a `Cursor`.

A language builds a `Lexer` from the patterns below (or its own), in the order they are tried;
`Cursor` walks the tokens; `boolean` parses and/or/not with parentheses over the comparisons the
language parses itself, into `Junction` trees that `evaluate` and `leaves` read; `literal` turns a
value token into a typed `Literal`; `like` compiles SQL LIKE patterns. `Select` is the one
parser of ``select ... from ... where ... order by ... limit ...`` (SOQL, COQL): a language gives
its differences as switches and the hooks that word its refusals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from crmsim import records

# Token patterns the languages share (a language may pass its own instead).
STRING_DOUBLED = r"'(?:[^']|'')*'"  # a quote inside is written twice: 'O''Hara'
STRING_BACKSLASH = r"'(?:[^'\\]|\\.)*'"  # a backslash escapes the next character: 'O\'Hara'
DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})"
DATE = r"\d{4}-\d{2}-\d{2}"
GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
NUMBER = r"-?\d+(?:\.\d+)?"
COMPARISON = r"<=|>=|!=|<>|=|<|>"
PUNCT = r"[(),]"
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = r"[A-Za-z_][A-Za-z0-9_.]*"  # a name with dots: Account.Name, Owner.email


@dataclass(frozen=True)
class Token:
    kind: str  # the name of the pattern that matched
    text: str
    position: int


class Lexer:
    """Splits a statement into tokens by named patterns tried in order (whitespace between them
    is skipped); ``error(text, position)`` is the language's refusal of a character no pattern
    takes."""

    def __init__(self, error: Callable[[str, int], Exception], **patterns: str) -> None:
        alternatives = "|".join(f"(?P<{kind}>{pattern})" for kind, pattern in patterns.items())
        self._regex = re.compile(rf"\s*(?:{alternatives}|(?P<_bad>\S))", re.DOTALL)
        self.error = error

    def tokens(self, text: str) -> list[Token]:
        found: list[Token] = []
        position = 0
        while position < len(text):
            match = self._regex.match(text, position)
            if match is None or match.end() == position:
                break  # only whitespace is left
            kind = match.lastgroup or "_bad"
            if kind == "_bad":
                raise self.error(text, match.start(kind))
            found.append(Token(kind, match[kind], match.start(kind)))
            position = match.end()
        return found


class Cursor:
    """A parser's position in a statement's tokens. Keywords match case-insensitively when
    ``fold`` (SOQL, COQL) and exactly otherwise (OData's lower-case operators); ``fail(found,
    wanted)`` is the language's syntax error for an unexpected token (None: the end)."""

    def __init__(
        self,
        tokens: list[Token],
        fail: Callable[[Token | None, str], Exception],
        *,
        fold: bool = True,
    ) -> None:
        self.tokens, self.fail, self.fold = tokens, fail, fold
        self.at = 0

    def peek(self, offset: int = 0) -> Token | None:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def _same(self, text: str, keyword: str) -> bool:
        return text.lower() == keyword.lower() if self.fold else text == keyword

    def is_word(self, *keywords: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return (
            token is not None
            and token.kind == "word"
            and any(self._same(token.text, k) for k in keywords)
        )

    def word(self, *keywords: str) -> bool:
        """Takes the next token when it is one of ``keywords``."""
        if self.is_word(*keywords):
            self.at += 1
            return True
        return False

    def punct(self, char: str) -> bool:
        """Takes the next token when it is the punctuation ``char``."""
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == char:
            self.at += 1
            return True
        return False

    def take(self, kind: str | None = None, wanted: str = "") -> Token:
        """The next token, which must be of ``kind`` (any when None)."""
        token = self.peek()
        if token is None or (kind is not None and token.kind != kind):
            raise self.fail(token, wanted or kind or "a token")
        self.at += 1
        return token

    def expect_word(self, keyword: str) -> None:
        if not self.word(keyword):
            raise self.fail(self.peek(), keyword)

    def expect_punct(self, char: str) -> None:
        if not self.punct(char):
            raise self.fail(self.peek(), char)

    def listed(self, item: Callable[[], Any]) -> list[Any]:
        """``item (, item)*``."""
        found = [item()]
        while self.punct(","):
            found.append(item())
        return found

    def end(self) -> None:
        """The statement must be over."""
        if self.peek() is not None:
            raise self.fail(self.peek(), "the end")


# ---- boolean expressions --------------------------------------------------------------------


@dataclass(frozen=True)
class Junction:
    """``and``/``or`` of its parts, or ``not`` of its one part; leaves are the language's own
    comparisons."""

    op: str
    parts: tuple[Any, ...]


def boolean(
    cursor: Cursor,
    comparison: Callable[[], Any],
    *,
    negation: bool = True,
    paired: Callable[[], Exception] | None = None,
) -> Any:
    """``or`` of ``and`` of operands, an operand being ``not`` operand (when ``negation``), a
    bracketed expression, or a ``comparison``. With ``paired`` (Zoho's COQL) there is no
    precedence: an expression joins at most two operands, and a third joiner raises
    ``paired()`` until brackets group them."""

    def operand() -> Any:
        if cursor.punct("("):
            inner = expression()
            cursor.expect_punct(")")
            return inner
        if negation and cursor.word("not"):
            return Junction("not", (operand(),))
        return comparison()

    def chain(op: str, part: Callable[[], Any]) -> Any:
        parts = [part()]
        while cursor.word(op):
            parts.append(part())
        return parts[0] if len(parts) == 1 else Junction(op, tuple(parts))

    def expression() -> Any:
        if paired is None:
            return chain("or", lambda: chain("and", operand))
        left = operand()
        token = cursor.peek()
        if not cursor.word("and", "or"):
            return left
        joined = Junction(token.text.lower(), (left, operand()))  # type: ignore[union-attr]
        if cursor.is_word("and", "or"):
            raise paired()
        return joined

    return expression()


def evaluate(node: Any, test: Callable[[Any], bool]) -> bool:
    """Whether a record satisfies ``node``, ``test`` deciding each comparison. Every part is
    evaluated, so a comparison's own error (an operand of the wrong type) is never skipped."""
    if not isinstance(node, Junction):
        return test(node)
    results = [evaluate(part, test) for part in node.parts]
    if node.op == "not":
        return not results[0]
    return all(results) if node.op == "and" else any(results)


def leaves(node: Any) -> Iterator[Any]:
    """The comparisons of an expression (none for None)."""
    if isinstance(node, Junction):
        for part in node.parts:
            yield from leaves(part)
    elif node is not None:
        yield node


# ---- literals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, boolean, null, guid, datetime, date
    value: Any


def unquote(text: str, escape: Callable[[str], str] | None = None) -> str:
    """A quoted string token's text: '' is a quote; with ``escape``, a backslash and the
    character after it are ``escape(character)`` instead."""
    body = text[1:-1]
    if escape is None:
        return body.replace("''", "'")
    out, index = [], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            index += 1
            char = escape(body[index] if index < len(body) else "")
        out.append(char)
        index += 1
    return "".join(out)


def literal(
    token: Token,
    error: Callable[[str], Exception],
    *,
    fold: bool = True,
    escape: Callable[[str], str] | None = None,
) -> Literal | None:
    """The typed value of a value token, or None when it is not one: strings (see `unquote`),
    numbers (OData's type suffixes m, d, l dropped), ``true``/``false``/``null``, GUIDs, dates and
    datetimes (UTC when no offset is given). ``error(message)`` refuses a malformed date."""
    text = token.text
    word = text.lower() if fold else text
    if token.kind == "string":
        return Literal("string", unquote(text, escape))
    if token.kind == "number":
        core = text.rstrip("mMdDlL")
        return Literal("number", float(core) if any(c in core for c in ".eE") else int(core))
    if token.kind == "guid":
        return Literal("guid", text.lower())
    if token.kind == "datetime":
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise error(f"Unrecognized 'Edm.DateTimeOffset' literal '{text}'.") from None
        return Literal("datetime", parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    if token.kind == "date":
        try:
            return Literal("date", date.fromisoformat(text))
        except ValueError:
            raise error(f"Unrecognized 'Edm.Date' literal '{text}'.") from None
    if word in ("true", "false"):
        return Literal("boolean", word == "true")
    if word == "null":
        return Literal("null", None)
    return None


# ---- LIKE -----------------------------------------------------------------------------------


def like(
    pattern: str,
    *,
    one: bool = True,
    sets: bool = False,
    escape: Callable[[str], str] | None = None,
) -> re.Pattern[str]:
    """A SQL LIKE pattern as an (unanchored) case-insensitive regular expression: ``%`` is any
    run of characters and, when ``one``, ``_`` any one. With ``sets`` (T-SQL, as Dataverse runs
    it) ``[abc]``/``[a-c]`` is one of a set and ``[^abc]`` one not in it, so ``[%]`` is a plain
    ``%``. With ``escape``, a backslash and the character after it are the literal text
    ``escape(character)`` (SOQL's ``\\%``)."""
    out, at = [], 0
    while at < len(pattern):
        char = pattern[at]
        end = pattern.find("]", at + 2) if sets and char == "[" else -1
        if char == "%":
            out.append(".*")
        elif char == "_" and one:
            out.append(".")
        elif char == "\\" and escape is not None:
            at += 1
            out.append(re.escape(escape(pattern[at] if at < len(pattern) else "")))
        elif end != -1:
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


# ---- select statements ----------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``name op value``: a comparison operator; ``in``/``not in`` a list of values;
    ``like``/``not like`` a compiled pattern (see `like`); ``null``/``not null`` (no value)."""

    name: str
    op: str
    value: Any = None

    def holds(self, actual: Any) -> bool:
        """Whether a stored value satisfies the comparison, null as SQL has it (see
        `records.test`): a null value is in no list and like no pattern."""
        negated = self.op.startswith("not ")
        op = self.op.removeprefix("not ")
        if op == "null":
            found = actual is None
        elif op == "in":
            found = any(records.test("=", actual, wanted) for wanted in self.value)
        elif op == "like":
            found = actual is not None and self.value.fullmatch(str(actual)) is not None
        else:
            return records.test(op, actual, self.value)
        return found != negated


@dataclass
class Statement:
    """A parsed select statement; a language reads the parts it has."""

    columns: list[str] = field(default_factory=list)  # the select list's plain names, as written
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (FUNCTION, argument, alias)
    count: bool = False  # COUNT(): the number of rows
    source: str = ""  # the object selected from
    where: Any = None  # a tree of `Junction` and `Comparison`, or None
    group_by: list[str] = field(default_factory=list)
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # name, desc, nulls last
    limit: int | None = None
    offset: int = 0


class Select:
    """Parses ``select <items> from <source> [where <condition>] [group by <names>] [order by
    <name> [asc|desc] [nulls first|last], ...] [limit <n>] [offset <m>]`` into a `Statement`.
    An item is a name or ``FUNCTION(name) [alias]``; a condition joins comparisons (`boolean`):
    ``name op value``, ``name [not] in (values)``, ``name [not] like pattern`` and ``name is
    [not] null``. A language sets its lexer and the switches below, and words its refusals in
    the hooks (`fail` at least)."""

    lexer: Lexer
    functions: frozenset[str] = frozenset()  # the FUNCTION names of the select list, upper-case
    aliases = False  # a function call may be followed by an alias
    count_rows = False  # COUNT() alone is the number of rows
    negation = True  # ``not`` before a condition
    bracketed = False  # a third and/or needs brackets (see `boolean`'s ``paired``)
    null_tests = False  # ``is [not] null``
    not_like = False  # ``not like``
    grouping = False  # ``group by``; every plain column must then be grouped
    nulls = False  # ``nulls first|last``
    limit_pair = False  # ``limit <offset>, <limit>``
    offset_alone = True  # ``offset`` without ``limit``
    kinds = frozenset({"string", "number", "boolean", "null", "date", "datetime"})  # of values
    limits: ClassVar[
        Mapping[str, int]
    ] = {}  # the most ``columns``, ``comparisons`` and ``values`` (in a list)
    escape: Callable[[str], str] | None = None  # a string's backslash escapes (see `unquote`)

    def __init__(self, text: str) -> None:
        self.cursor = Cursor(self.lexer.tokens(text), self.fail)

    # ---- hooks: a language's refusals

    def fail(self, found: Token | None, wanted: str) -> Exception:
        """An unexpected token (None: the end) where ``wanted`` was due."""
        raise NotImplementedError

    def expected(self, keyword: str, clause: str) -> Exception:
        """A missing keyword of a clause."""
        return self.cursor.fail(self.cursor.peek(), keyword.upper())

    def unfinished(self, name: str, wanted: str) -> Exception:
        """A comparison of ``name`` left without the ``wanted`` words (after not, is)."""
        return self.cursor.fail(self.cursor.peek(), wanted)

    def unclosed(self, function: str, argument: str) -> Exception:
        return self.cursor.fail(self.cursor.peek(), ")")

    def invalid(self, token: Token, message: str | None) -> Exception:
        """A token that is no value here (``message``: a malformed date)."""
        return self.cursor.fail(token, "a value")

    def too_many(self, what: str, limit: int) -> Exception:
        return self.cursor.fail(None, f"at most {limit} {what}")

    def ungrouped(self, name: str) -> Exception:
        return self.cursor.fail(None, f"{name} grouped or aggregated")

    def unbracketed(self) -> Exception:
        return self.cursor.fail(self.cursor.peek(), ")")

    def trailing(self, token: Token) -> Exception:
        return self.cursor.fail(token, "the end")

    # ---- the grammar

    def parse(self) -> Statement:
        cursor, statement = self.cursor, Statement()
        self._keyword("select", "select")
        first = [t.text.upper() if t else "" for t in map(cursor.peek, range(3))]
        if self.count_rows and first == ["COUNT", "(", ")"]:
            cursor.at += 3
            statement.count = True
        else:
            cursor.listed(lambda: self.item(statement))
        self._within("columns", len(statement.columns))
        self._keyword("from", "from")
        statement.source = self.name()
        if cursor.word("where"):
            paired = self.unbracketed if self.bracketed else None
            statement.where = boolean(
                cursor, self.comparison, negation=self.negation, paired=paired
            )
            self._within("comparisons", len(list(leaves(statement.where))))
        if self.grouping and cursor.word("group"):
            self._keyword("by", "group by")
            statement.group_by = cursor.listed(self.name)
        if self.grouping and (statement.calls or statement.group_by):
            grouped = {name.lower() for name in statement.group_by}
            for name in statement.columns:
                if name.lower() not in grouped:
                    raise self.ungrouped(name)
        if cursor.word("order"):
            self._keyword("by", "order by")
            statement.order = cursor.listed(self.ordering)
        pair = False
        if cursor.word("limit"):
            statement.limit = self.integer("LIMIT")
            pair = self.limit_pair and cursor.punct(",")
            if pair:
                statement.offset, statement.limit = statement.limit, self.integer("LIMIT")
        offset = not pair and (self.offset_alone or statement.limit is not None)
        if offset and cursor.word("offset"):
            statement.offset = self.integer("OFFSET")
        if (token := cursor.peek()) is not None:
            raise self.trailing(token)
        return statement

    def _keyword(self, keyword: str, clause: str) -> None:
        if not self.cursor.word(keyword):
            raise self.expected(keyword, clause)

    def _within(self, what: str, count: int) -> None:
        limit = self.limits.get(what)
        if limit is not None and count > limit:
            raise self.too_many(what, limit)

    def name(self) -> str:
        return self.cursor.take("word", "a field").text

    def item(self, statement: Statement) -> None:
        cursor, name = self.cursor, self.name()
        if name.upper() not in self.functions or not cursor.punct("("):
            statement.columns.append(name)
            return
        argument = self.name()
        if not cursor.punct(")"):
            raise self.unclosed(name, argument)
        alias = f"expr{len(statement.calls)}"
        token = cursor.peek()
        if self.aliases and token is not None and token.kind == "word":
            alias = alias if cursor.is_word("from") else self.name()
        statement.calls.append((name.upper(), argument, alias))

    def ordering(self) -> tuple[str, bool, bool]:
        cursor, name = self.cursor, self.name()
        descending = cursor.word("desc")
        if not descending:
            cursor.word("asc")
        nulls_last = descending  # nulls sort as the greatest value unless told
        if self.nulls and cursor.word("nulls"):
            nulls_last = cursor.word("last")
            if not nulls_last:
                self._keyword("first", "order by")
        return (name, descending, nulls_last)

    def comparison(self) -> Comparison:
        cursor, name = self.cursor, self.name()
        if self.null_tests and cursor.word("is"):
            negated = cursor.word("not")
            if not cursor.word("null"):
                raise self.unfinished(name, "null")
            return Comparison(name, "not null" if negated else "null")
        negated = cursor.word("not")
        prefix = "not " if negated else ""
        if cursor.word("in"):
            cursor.expect_punct("(")
            values = cursor.listed(self.value)
            cursor.expect_punct(")")
            self._within("values", len(values))
            return Comparison(name, prefix + "in", values)
        if (self.not_like or not negated) and cursor.word("like"):
            return Comparison(name, prefix + "like", self.pattern())
        if negated:
            raise self.unfinished(name, "like or in" if self.not_like else "in")
        op = cursor.take("op", f"an operator after {name}").text
        return Comparison(name, op, self.value())

    def pattern(self) -> re.Pattern[str]:
        """A ``like`` pattern: a text value, ``%`` any run of characters, ``_`` any one."""
        return like(str(self.value()))

    def value(self) -> Any:
        token = self.cursor.take(wanted="a value")
        found = literal(token, lambda message: self.invalid(token, message), escape=self.escape)
        if found is None or found.kind not in self.kinds:
            raise self.invalid(token, None)
        return found.value

    def integer(self, clause: str) -> int:
        return int(self.cursor.take("number", "a number").text)
