"""Access control of the annotation server: a token on every request when one is set.

``make_token(host, token)``: the token to require: ``token`` when given, else a random one
(``secrets.token_urlsafe``) for any host other than ``127.0.0.1``, else None (loopback, no token).
``TokenMiddleware(app, token)`` (ASGI): with a token, a request passes only with the query parameter ``token=``,
the header ``X-Sam2-Token`` or the cookie ``sam2_token`` equal to it (compared in constant time); otherwise
``403 {"error": "missing or wrong token"}``. ``GET /?token=...`` sets the cookie (done by the page's route with
``COOKIE``), so that ``<img>`` requests of the page carry it.
Without a token (loopback) a request passes only when its ``Host`` header names a loopback host
(``LOOPBACK_HOSTS``, any port), else ``403 {"error": "host ... is not a loopback address..."}``: a page of another
site whose name was made to resolve to 127.0.0.1 (DNS rebinding) cannot reach the server.
"""

from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

COOKIE = "sam2_token"
HEADER = "x-sam2-token"
LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "testserver")  # testserver: Starlette's TestClient


def make_token(host: str, token: str | None) -> str | None:
    if token:
        return token
    return None if host == LOOPBACK else secrets.token_urlsafe(24)


def request_tokens(scope) -> list[str]:
    """The tokens a request carries (query, header, cookie)."""
    found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
    for key, value in scope.get("headers", []):
        if key == HEADER.encode():
            found.append(value.decode("latin-1"))
        elif key == b"cookie":
            cookie = SimpleCookie()
            try:
                cookie.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header carries no token
                continue
            if COOKIE in cookie:
                found.append(cookie[COOKIE].value)
    return found


def token_ok(scope, token: str | None) -> bool:
    if token is None:
        return True
    return any(secrets.compare_digest(t.encode(), token.encode()) for t in request_tokens(scope))


def host_name(scope) -> str:
    """The host a request's ``Host`` header names, without the port ("" when there is none)."""
    for key, value in scope.get("headers", []):
        if key == b"host":
            host = value.decode("latin-1").strip().lower()
            return host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    return ""


def refusal(scope, token: str | None) -> str | None:
    """Why a request is refused, or None when it passes (see the module docstring)."""
    if token is not None:
        return None if token_ok(scope, token) else "missing or wrong token"
    host = host_name(scope)
    if host not in LOOPBACK_HOSTS:
        return f"host {host!r} is not a loopback address; start the server with --host and use its token"
    return None


class TokenMiddleware:
    """See the module docstring."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        reason = None if scope["type"] == "lifespan" else refusal(scope, self.token)
        if reason is None:
            return await self.app(scope, receive, send)
        body = json.dumps({"error": reason}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
