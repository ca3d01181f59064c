"""Who may talk to the studio: a guard in front of every request (plain ASGI, so it covers
streamed responses too).

- **Host**: on a loopback address only ``127.0.0.1``, ``localhost`` and ``[::1]`` with the
  studio's port are answered, so a foreign name that resolves to 127.0.0.1 (DNS rebinding)
  reaches nothing.
- **Origin**: a request that carries an ``Origin`` (every fetch and form post from a page)
  must come from the studio's own origin; a page on another site, or on another port of this
  machine, is refused with 403. ``Sec-Fetch-Site`` refuses the requests that carry no Origin
  (an ``<img>`` or a link from another site) for everything but opening the page itself.
- **Token**: bound to another address, every request needs the token, as
  ``Authorization: Bearer TOKEN``, ``?token=TOKEN`` or the cookie the page gets when it is
  opened with ``?token=TOKEN``.
"""
from __future__ import annotations

import ipaddress
import json
import secrets
from urllib.parse import parse_qs

COOKIE = "impasto_studio"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "::1", "[::1]"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> set | None:
    """The Host headers a loopback studio answers; None (any) for another address, where the
    token protects it instead."""
    if not is_loopback(host):
        return None
    names = set(LOOPBACK_NAMES)
    if host not in ("localhost", "::1", "[::1]"):
        names.add(host)
    return {f"{n}:{port}" for n in names} | ({n for n in names} if port == 80 else set())


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")] + EXTRA_HEADERS})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: the Host, Origin, fetch-site and token checks above."""

    def __init__(self, app, hosts: set | None, token: str | None = None):
        self.app, self.hosts, self.token = app, hosts, token

    def _token_ok(self, headers: dict, query: dict) -> bool:
        if self.token is None:
            return True
        given = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        given += query.get("token", [])
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                given.append(value)
        return any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "").lower()
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if self.hosts is not None and host not in self.hosts:
            return await _refuse(send, 403, f"the studio answers only at "
                                 f"{sorted(self.hosts)[0]} (Host {host[:60]!r} refused)")
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return await _refuse(send, 403, f"requests from other sites are refused (Origin "
                                 f"{origin[:80]!r})")
        site = headers.get("sec-fetch-site")
        opening_page = method == "GET" and path == "/" and headers.get("sec-fetch-mode") == "navigate"
        if site in ("cross-site", "same-site") and not opening_page:
            return await _refuse(send, 403, "requests from other sites are refused")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if not self._token_ok(headers, query):
            return await _refuse(send, 401, "this studio needs its token: open the address "
                                 "impasto serve printed (with ?token=...), or send "
                                 "Authorization: Bearer TOKEN")
        if self.token is not None and path == "/" and query.get("token"):
            # the page opened with ?token=: keep it in a cookie and drop it from the address
            cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode()),
                                    (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})
        return await self.app(scope, receive, _with_headers(send))


EXTRA_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                 (b"referrer-policy", b"no-referrer"),
                 (b"cross-origin-resource-policy", b"same-origin")]


def _with_headers(send):
    """``send`` that adds the headers above to every response."""
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = list(message.get("headers", [])) + EXTRA_HEADERS
        await send(message)
    return wrapped
