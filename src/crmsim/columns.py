"""The fields of a simulated CRM's objects and the ladder every write climbs: a known field, a
writable one, a value its type takes (the CRM converts it, or says why not), and on create every
required field given. A CRM renders the `Problem`s in its own words.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

UNKNOWN, READ_ONLY, REQUIRED = "unknown", "read_only", "required"
C = TypeVar("C", bound="Column")


@dataclass
class Column:
    """One field as a CRM's describe endpoint lists it; ``type`` is the CRM's own type name."""

    name: str
    type: str = "string"
    label: str = ""
    options: tuple[str, ...] = ()
    read_only: bool = False
    required: bool = False  # on create
    custom: bool = False


class Invalid(ValueError):
    """A value a field refuses: ``code`` says why in the CRM's words, ``message`` how."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Problem(NamedTuple):
    """Why one field of a write is refused: ``UNKNOWN``, ``READ_ONLY``, ``REQUIRED`` (with no
    message: the CRM words those) or an `Invalid`'s code and message."""

    name: str
    code: str
    message: str = ""


def check(
    values: Mapping[str, Any],
    column: Callable[[str], C | None],
    convert: Callable[[C, Any], Any],
    *,
    creating: bool,
    columns: Iterable[C] = (),
    empty: Collection[Any] = (None,),
) -> tuple[dict[str, Any], list[Problem]]:
    """The values as stored and what is wrong with them. ``column(name)`` finds a field;
    ``convert(field, value)`` gives a non-empty value as stored or raises `Invalid`; an
    ``empty`` value clears its field. On create, each required one of ``columns`` must be given
    (not empty, nor ``""``)."""
    clean: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, value in values.items():
        found = column(name)
        if found is None or found.read_only:
            problems.append(Problem(name, UNKNOWN if found is None else READ_ONLY))
        elif value in empty:
            clean[name] = None
        else:
            try:
                clean[name] = convert(found, value)
            except Invalid as invalid:
                problems.append(Problem(name, invalid.code, invalid.message))
    if creating:
        for spec in columns:
            if spec.required and clean.get(spec.name) in (None, ""):
                problems.append(Problem(spec.name, REQUIRED))
    return clean, problems
