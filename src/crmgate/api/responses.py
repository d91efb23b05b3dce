"""crmgate's JSON answers: UTF-8 whatever text they carry (RFC 8259 section 8.1).

A record can hold text that is not Unicode: a CRM that stored a lone surrogate another client
wrote sends it back as the escape ``\\ud800``, and Python's JSON decoder keeps it as is. Such a
string cannot be encoded as UTF-8, so rendering it the usual way fails, and every read of that
record, and of every list page that holds it, would be a 500. Here each surrogate (U+D800 to
U+DFFF) is written as U+FFFD instead. Not as the escape ``\\ud800``: strict decoders (Rust's
serde_json, Go's encoding/json) refuse or rewrite an escaped lone surrogate, so the escape would
move the failure to the client; U+FFFD is what every UTF-8 decoder makes of text it cannot read.

Every route answers with ``JSONResponse`` from here (the app's default response class too), so
this is the one place the rule lives; the input rule (api/text.py) keeps such text from coming in.

An answer to an operation of the contract also takes the reference's shape on its way out
(``contract_response``: no nulls, the reference's types; contract/shape.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette import responses

from crmgate.contract.shape import conform

_SURROGATE = re.compile("[\ud800-\udfff]")


def render_json(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON, each surrogate as U+FFFD."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # rare: the second pass costs only the answers that need it
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return render_json(content)


def contract_response(operation_id: str, content: Any, status_code: int = 200) -> JSONResponse:
    """The answer of the reference's operation ``operation_id``, in the shape the reference gives
    it: no nulls, each value in the reference's type (contract/shape.py). Every route that
    answers for an operation of the contract renders its answer here."""
    return JSONResponse(conform(operation_id, content), status_code=status_code)
