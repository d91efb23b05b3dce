"""The small JSON path language of the platform descriptors: ``a.b``, ``a[0]`` (``-1`` from the
end), ``a[*]`` (each element), ``a[key=value]`` (the elements whose ``key`` is ``value``;
``a[key!=value]`` those whose is not, a missing key included), ``['a.b']`` (a name holding
dots: ``['@odata.nextLink']``); ``$`` or "" is the document itself.
A path finds every value it reaches, in order; none is no error.

A test on a JSON value (``holds``) is ``path`` (a truthy value there), ``!path`` (a falsy or
missing one), ``path=value`` or ``path!=value`` (the value as JSON writes it: ``true``,
``null``, ``text``; a missing value is ``null``).
"""

from __future__ import annotations

import json
import re
from typing import Any

_STEP = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


def steps(path: str) -> list[str]:
    """The steps of a path (names, and bracketed selectors kept with their brackets); ValueError
    if it is not one."""
    text = path.removeprefix("$").removeprefix(".")
    found: list[str] = []
    at = 0
    while at < len(text):
        match = _STEP.match(text, at)
        if not match:
            raise ValueError(f"not a JSON path: {path!r}")
        found.append(match.group(1) if match.group(1) is not None else f"[{match.group(2)}]")
        at = match.end()
        if at < len(text) and text[at] == ".":
            at += 1
    return found


def select(value: Any, path: str, strict: bool = False) -> list[Any]:
    """Every value at ``path`` in ``value`` (a selector over a list keeps each that matches).
    ``strict``: a step that meets a value of the wrong kind (a name on a non-object, a selector
    on a non-list; null is only absent) is a ValueError rather than nothing found."""
    current = [value]
    for step in steps(path):
        following: list[Any] = []
        for item in current:
            name = step[2:-2] if step[:2] in ("['", '["') and step[-2:] in ("']", '"]') else None
            if not step.startswith("[") or name is not None:
                name = step if name is None else name
                if isinstance(item, dict) and name in item:
                    following.append(item[name])
                elif strict and not isinstance(item, dict) and item is not None:
                    raise ValueError(f"{path}: {name} of something that is not an object")
                continue
            if not isinstance(item, list):
                if strict and item is not None:
                    raise ValueError(f"{path}: {step} of something that is not a list")
                continue
            selector = step[1:-1]
            if selector == "*":
                following += item
            elif selector.lstrip("-").isdigit():
                index = int(selector)
                following += [item[index]] if -len(item) <= index < len(item) else []
            else:
                key, _, wanted = selector.partition("=")
                unlike = key.endswith("!")
                following += [
                    e
                    for e in item
                    if isinstance(e, dict) and (str(e.get(key.rstrip("!"))) == wanted) != unlike
                ]
        current = following
    return current


def _written(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def holds(entry: Any, test: str) -> bool:
    """Whether ``entry`` passes one test (see the module's docstring); ValueError where a
    step meets a value of the wrong kind."""
    if "=" in test:
        unlike = "!=" in test
        path, _, wanted = test.partition("!=" if unlike else "=")
        found = select(entry, path, strict=True)
        return (_written(found[0] if found else None) == wanted) != unlike
    path = test.lstrip("!")
    truthy = any(bool(value) for value in select(entry, path, strict=True))
    return truthy != test.startswith("!")
