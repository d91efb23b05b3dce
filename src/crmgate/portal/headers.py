"""The portal's response headers (OWASP Secure Headers): a strict Content-Security-Policy (no
inline script, nothing from elsewhere, no framing), and no caching of pages, which can show
secrets once. HSTS over TLS comes from the request middleware, as for the API."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmgate.portal.web import BASE

CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATIC = f"{BASE}/static/"


class PortalHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == BASE or path.startswith(BASE + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC)

        async def decorated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"cache-control"
                ]
                headers += [
                    (b"content-security-policy", CSP),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                    (b"cache-control", b"public, max-age=3600" if static else b"no-store"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, decorated)
