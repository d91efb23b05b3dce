"""The small JSON path language of the platform descriptors: ``a.b``, ``a[0]`` (``-1`` from the
end), ``a[*]`` (each element), ``a[key=value]`` (the elements whose ``key`` is ``value``),
``['a.b']`` (a name holding dots: ``['@odata.nextLink']``); ``$`` or "" is the document itself.
A path finds every value it reaches, in order; none is no error.
"""

from __future__ import annotations

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


def select(value: Any, path: str) -> list[Any]:
    """Every value at ``path`` in ``value`` (a selector over a list keeps each that matches)."""
    current = [value]
    for step in steps(path):
        following: list[Any] = []
        for item in current:
            name = step[2:-2] if step[:2] in ("['", '["') and step[-2:] in ("']", '"]') else None
            if not step.startswith("[") or name is not None:
                name = step if name is None else name
                if isinstance(item, dict) and name in item:
                    following.append(item[name])
                continue
            if not isinstance(item, list):
                continue
            selector = step[1:-1]
            if selector == "*":
                following += item
            elif selector.lstrip("-").isdigit():
                index = int(selector)
                following += [item[index]] if -len(item) <= index < len(item) else []
            else:
                key, _, wanted = selector.partition("=")
                following += [e for e in item if isinstance(e, dict) and str(e.get(key)) == wanted]
        current = following
    return current
