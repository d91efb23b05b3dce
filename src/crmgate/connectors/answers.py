"""How a CRM's answer body is read as JSON: no single record may make a whole answer unreadable."""

from __future__ import annotations

import json
from typing import Any


def crm_json(body: bytes) -> Any:
    """A CRM's JSON answer, read so that no record makes it unreadable. JSON on the wire is
    UTF-8 (RFC 8259 section 8.1); bytes that are not (a record another client wrote in
    Latin-1, say) read as U+FFFD, each, rather than failing the whole answer. A lone surrogate
    the CRM sent as an escape is kept here, and written as U+FFFD when crmgate answers
    (api/responses.py). ValueError if the answer is not JSON at all."""
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        return json.loads(body.decode("utf-8-sig", "replace"))
