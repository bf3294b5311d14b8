"""Who may use the web view and the API: anyone on the box itself (loopback), and elsewhere only with the token.

Binding to another address serves the lab's network, so a token is then required: `--token`, else the environment's
CSC_TOKEN, else a random one printed once. Scripts send it as `Authorization: Bearer TOKEN`; a person opens
`http://box:PORT/?token=TOKEN` once, which sets a cookie and redirects to the bare address, so that the token leaves
the address bar and the history. Tokens are compared in constant time and never logged (the server's access log,
which records query strings, is off: runtime/serve/server.py).
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import string
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from runtime.errors import CscError

TOKEN_ENV = "CSC_TOKEN"
# The cookie's name ends in the server's port (`_cookie_name`): browsers keep cookies by host, not by port, so two
# servers on one box (a live run and `csc-serve`) with one name overwrote each other's token, and the page of the
# first opened got 401.
COOKIE = "csc_token"
TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~")  # URL-unreserved: what token_urlsafe makes
# Open without the token: a liveness probe (a supervisor, a load balancer) carries no secret, and the answer tells
# nothing about the slides.
OPEN_PATHS = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a network address


@dataclass(frozen=True)
class TokenChoice:
    token: str | None  # None: no token asked for (loopback, none given)
    generated: bool  # made here: the one time it is printed


def choose_token(host: str, given: str | None, environ: dict[str, str] | None = None) -> TokenChoice:
    """The token a server on ``host`` requires: the one given, else CSC_TOKEN, else none on loopback and a random one
    elsewhere."""
    environ = os.environ if environ is None else environ
    token = given if given is not None else environ.get(TOKEN_ENV) or None
    if token is not None:
        if len(token) < 8 or not set(token) <= TOKEN_CHARACTERS:
            raise CscError("the token must be at least 8 letters, digits or '-._~' (it travels unescaped in a "
                           "header, a cookie and an address)",
                           fix=f"pass --token or set {TOKEN_ENV}, e.g. to the output of "
                               "`python -c 'import secrets; print(secrets.token_urlsafe())'`")
        return TokenChoice(token, False)
    if is_loopback(host):
        return TokenChoice(None, False)
    return TokenChoice(secrets.token_urlsafe(24), True)


class TokenGate:
    """ASGI middleware: requests without the token get 401 with a JSON reason (OPEN_PATHS excepted)."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if self.token is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == "token"), None)
        if from_query is not None and self._matches(from_query):
            if scope["method"] == "GET" and scope["path"] == "/":
                await self._set_cookie_and_redirect(scope, send, [(k, v) for k, v in query if k != "token"])
                return
            await self.app(scope, receive, send)
            return
        if self._matches(_bearer(headers.get("authorization"))) or \
                self._matches(_cookie(headers.get("cookie"), _cookie_name(scope))):
            await self.app(scope, receive, send)
            return
        await _respond(send, 401, {"detail": "this server needs its token: send 'Authorization: Bearer TOKEN', or "
                                             "open /?token=TOKEN in a browser once"},
                       [(b"www-authenticate", b'Bearer realm="auto-csc"')])

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    async def _set_cookie_and_redirect(self, scope, send, rest: list[tuple[str, str]]) -> None:
        location = "/" + (f"?{urlencode(rest)}" if rest else "")
        # Lax, not Strict: a browser sends a Strict cookie on no request of a navigation that began on another site,
        # redirects included, so the token link opened from a chat or a wiki answered 401 until reloaded. Lax still
        # keeps it off other sites' POSTs (an upload forged by another page).
        cookie = f"{_cookie_name(scope)}={self.token}; Path=/; HttpOnly; SameSite=Lax"
        await _respond(send, 303, {"detail": "token accepted"},
                       [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                        (b"cache-control", b"no-store")])


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _cookie_name(scope) -> str:
    """The token cookie's name for the server that received this request: COOKIE and its port."""
    server = scope.get("server")
    return f"{COOKIE}_{server[1]}" if server and server[1] else COOKIE


def _cookie(value: str | None, name: str) -> str | None:
    if not value:
        return None
    jar = SimpleCookie()
    try:
        jar.load(value)
    except Exception:  # a malformed Cookie header is no token  # noqa: BLE001
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


async def _respond(send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})
