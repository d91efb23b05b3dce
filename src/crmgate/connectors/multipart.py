"""HTTP requests batched in one call and their answers read back: OData v4's multipart batch
format (OData v4.01 Part 1 "Protocol", section 11.7.7), a multipart/mixed body (RFC 2046
section 5.1) whose parts are each one application/http message (RFC 9112), a change set's
parts nested in their place. What a batch means (Dataverse's $batch: continue on error, an
answer per request) is the connector's; this is the wire format only."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import uuid4

# One request of a batch (method, URL, JSON body, headers) and its answer (status, headers with
# lower-case names, body).
Request = tuple[str, str, dict[str, Any] | None, dict[str, str]]
Answer = tuple[int, Mapping[str, str], bytes]
_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def encode(requests: Sequence[Request]) -> tuple[str, bytes]:
    """The batch's Content-Type and body: each request a part of its own (no change set)."""
    boundary = f"batch_{uuid4()}"
    lines = []
    for method, url, body, headers in requests:
        lines += [
            f"--{boundary}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            f"{method} {url} HTTP/1.1",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        if body is not None:
            lines += ["Content-Type: application/json; type=entry", "", json.dumps(body)]
        else:
            lines += [""]
    lines += [f"--{boundary}--", ""]
    return f'multipart/mixed; boundary="{boundary}"', "\r\n".join(lines).encode()


def decode(content_type: str, body: bytes) -> list[Answer]:
    """The answers of a batch response, in order (a change set's in its place); ValueError
    saying what is wrong when it is not a multipart batch answer."""
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or found is None:
        raise ValueError("is not multipart")
    return _parts(body.decode("utf-8", "replace"), found.group(1))


def _headers(head: str) -> dict[str, str]:
    pairs = (line.partition(":") for line in head.split("\n"))
    return {k.strip().lower(): v.strip() for k, _, v in pairs if k.strip()}


def _parts(text: str, boundary: str) -> list[Answer]:
    answers: list[Answer] = []
    for chunk in text.split(f"--{boundary}")[1:]:
        if chunk.startswith("--"):
            break
        head, _, rest = chunk.replace("\r\n", "\n").lstrip("\n").partition("\n\n")
        kind = _headers(head).get("content-type", "")
        inner = _BOUNDARY.search(kind)
        if kind.lower().startswith("multipart/mixed") and inner:
            answers += _parts(rest, inner.group(1))
            continue
        status_line, _, after = rest.lstrip("\n").partition("\n")
        pieces = status_line.split(" ")
        if len(pieces) < 2 or not pieces[1].isdigit():
            raise ValueError("has a part without a status")
        part_head, _, part_body = after.partition("\n\n")
        answers.append((int(pieces[1]), _headers(part_head), part_body.strip().encode()))
    return answers
