"""The review board's gate: every request passes here before any page, image or action sees it.

- Host: only the names the board was opened under (127.0.0.1, localhost, or the --host given), so a web
  page elsewhere cannot reach it through a DNS name re-pointed at this machine.
- Token: a random token per launch, in the printed URL once; it becomes an HttpOnly, SameSite=Strict
  cookie (named per port, as cookies are shared between ports) and the URL is rewritten without it.
- Parameters: any query value or path segment that looks like a path (`..`, a leading `/` or `~`, a
  backslash, NUL) is refused; no value from a request is ever used as a path anyway.
- Actions (POST): refused in read-only mode, and refused unless they carry the page's CSRF header, a JSON
  body, and no cross-site Origin / Sec-Fetch-Site. A form on another site can send none of these.
- Every answer gets a Content-Security-Policy that lets the page load nothing but its own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, unquote, urlencode

CSP = ("default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
           (b"cross-origin-resource-policy", b"same-origin")]
SAFE_METHODS = {"GET", "HEAD"}
REVIEWER_COOKIE = "kr_reviewer"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def looks_like_path(value: str) -> bool:
    """A value a path-traversal attempt would send: parent segments, absolute or home paths, backslashes, NUL."""
    text = unquote(value)
    return ("\x00" in text or "\\" in text or text.startswith(("/", "~"))
            or any(part == ".." for part in text.replace("\\", "/").split("/")))


@dataclass
class Guard:
    """An ASGI middleware holding the launch's token; `app` is the board behind it."""
    app: object
    token: str
    hosts: set[str]  # "127.0.0.1:8765", "localhost:8765", …
    port: int
    read_only: bool = False
    origins: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.origins = {f"http://{host}" for host in self.hosts}
        self.cookie = f"kr_review_{self.port}"
        self.csrf = hmac.new(self.token.encode(), b"csrf", hashlib.sha256).hexdigest()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.check(scope)
        if refusal is not None:
            status, message = refusal
            return await _answer(send, status, message, scope)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if "token" in query:  # the printed link: trade the token for a cookie, and drop it from the address bar
            rest = urlencode([(k, v) for k, v in parse_qsl(scope["query_string"].decode("latin-1")) if k != "token"])
            location = scope.get("raw_path", scope["path"].encode()).decode("latin-1") + (f"?{rest}" if rest else "")
            cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            return await _redirect(send, location, cookie)
        scope.setdefault("state", {})
        scope["state"].update(csrf=self.csrf, read_only=self.read_only, reviewer=self.reviewer(scope))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)

    def check(self, scope) -> tuple[int, str] | None:
        """(status, why) for a request to refuse, or None."""
        headers = _headers(scope)
        if headers.get("host", "") not in self.hosts:
            return 421, "This board answers only under the address kr review printed."
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if any(looks_like_path(segment) for segment in raw_path.split("/")[1:] if segment) or \
                any(looks_like_path(value) or looks_like_path(key) for key, value in query):
            return 400, "A parameter looks like a file path; the board never takes paths."
        given = dict(query).get("token")
        if given is not None:
            return None if _same(given, self.token) else (403, "This link's token is not this board's.")
        if not _same(_cookies(headers).get(self.cookie, ""), self.token):
            return 403, "Open the board with the link kr review printed (it carries this launch's token)."
        if scope["method"] not in SAFE_METHODS:
            return self.check_action(headers)
        return None

    def check_action(self, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.read_only:
            return 403, "This board is read-only (kr review --read-only): nothing can be changed from it."
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "Cross-site requests are refused."
        if "origin" in headers and headers["origin"] not in self.origins:
            return 403, "Requests from another origin are refused."
        if not _same(headers.get("x-kr-csrf", ""), self.csrf):
            return 403, "This action lacks the page's CSRF token. Fix: reload the page and try again."
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return 415, "Actions take a JSON body."
        return None

    def reviewer(self, scope) -> str | None:
        name = _cookies(_headers(scope)).get(REVIEWER_COOKIE)
        return unquote(name) if name else None


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison that takes any text a client sends (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header counts as none
        return {}
    return {key: morsel.value for key, morsel in jar.items()}


async def _answer(send, status: int, message: str, scope) -> None:
    wants_json = scope["method"] not in SAFE_METHODS or _headers(scope).get("accept", "").startswith("application/json")
    if wants_json:
        body, kind = json.dumps({"error": message}).encode(), b"application/json"
    else:
        body = (f"<!doctype html><meta charset=utf-8><title>kr review: refused</title>"
                f"<p>{message}</p>").encode()
        kind = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())] + HEADERS})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send, location: str, cookie: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode()),
                            (b"content-length", b"0")] + HEADERS})
    await send({"type": "http.response.body", "body": b""})
