"""Request bounds beyond the body size (OWASP API4:2023): the shape of a JSON body and the size
of a request's head.

- ``JsonBounds`` (ASGI) measures a JSON body's nesting depth and its number of items (members
  of objects and elements of arrays, all levels together) on the raw bytes, before anything
  parses it: 400 for a body nested deeper than the limit, 413 for one with too many items.
- ``BoundedHttpToolsProtocol`` is the head bound of ``crmgate serve``'s HTTP protocol (put
  together with the slow-client guard in api/connections.py): uvicorn's httptools protocol puts
  no bound on a request's head; here a head (request line and header fields) longer than the
  limit, or with too many fields, is answered ``431 Request Header Fields Too Large`` (RFC 6585)
  and the connection is closed, before the head is held in memory.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from crmgate.api.errors import error_body, send_error

# A JSON string, escapes included; possessive, so a long string costs one pass.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_WHITESPACE = b" \t\r\n"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes


def json_shape(body: bytes) -> tuple[int, int]:
    """(depth, items) of a JSON text, measured without building it. ``[]`` is depth 1 and 0
    items, ``{"a": [1, 2]}`` depth 2 and 3 items. For text that is not JSON the numbers mean
    little (``[[[`` is depth 3); the parser refuses such text afterwards."""
    skeleton = _STRING.sub(b"0", body).translate(None, _WHITESPACE)
    # the deepest running sum of +1 per opening and -1 per closing bracket, all in C
    signs = memoryview(skeleton.translate(_SIGNS, _NOT_BRACKETS)).cast("b")
    depth = max(accumulate(signs), default=0)
    # every comma separates two items; every non-empty container holds one more than its commas
    opened = skeleton.count(b"[") + skeleton.count(b"{")
    empty = skeleton.count(b"[]") + skeleton.count(b"{}")
    items = skeleton.count(b",") + opened - empty
    return depth, items


def is_json_request(headers: list[tuple[bytes, bytes]]) -> bool:
    # What FastAPI parses as JSON: no Content-Type at all, application/json or application/*+json.
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return True


class JsonBounds:
    """Refuses JSON bodies nested deeper than ``max_depth`` (400) or holding more than
    ``max_items`` items (413), in the contract's error shape. The body is bounded in bytes by
    the layer outside (api/middleware.py) before it gets here."""

    def __init__(self, app: ASGIApp, max_depth: int = 32, max_items: int = 100_000) -> None:
        self.app = app
        self.max_depth = max_depth
        self.max_items = max_items

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_json_request(scope.get("headers", [])):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            depth, items = json_shape(body)
            refusal = None
            if depth > self.max_depth:
                refusal = (
                    400,
                    "MALFORMED_REQUEST",
                    f"the JSON body nests deeper than {self.max_depth} levels",
                )
            elif items > self.max_items:
                refusal = (
                    413,
                    "REQUEST_TOO_LARGE",
                    f"the JSON body holds more than "
                    f"{self.max_items} items (object members and array elements)",
                )
            if refusal is not None:
                await send_error(scope, send, *refusal)
                return
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay([whole], receive), send)


def replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


class _HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request's head."""

    max_head_bytes = 16_384
    max_header_fields = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request has begun and its head is not complete yet
        self._head_bytes = 0  # its request target and fields so far
        self._head_fields = 0
        self._received_in_head = 0  # bytes received while in its head (all of them head)
        self._head_too_large = False

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._received_in_head += len(data)
        super().data_received(data)
        # A field the parser is still collecting: the head is already longer than allowed.
        if self._in_head and self._received_in_head > self.max_head_bytes:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._head_fields = self._received_in_head = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url), fields=0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4, fields=1)  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count_head(self, size: int, fields: int) -> None:
        self._head_bytes += size
        self._head_fields += fields
        if self._head_bytes > self.max_head_bytes or self._head_fields > self.max_header_fields:
            self._head_too_large = True
            raise _HeadTooLarge  # the parser stops; uvicorn answers through send_400_response

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._in_head = False
        if self.transport.is_closing():
            return
        message = (
            f"the request's header fields are too large (at most {self.max_head_bytes} bytes "
            f"and {self.max_header_fields} fields)"
        )
        body = json.dumps(error_body(431, "HEADERS_TOO_LARGE", message, None)).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
