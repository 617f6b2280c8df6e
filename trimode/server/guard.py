"""What the server checks before a route sees a request: the ``Host`` header, the API key and the
body's size. A plain ASGI middleware, outermost, so that refusals cost no parsing and no model time.

* Allowed hosts: a page in a browser can make its own domain resolve to 127.0.0.1 (DNS rebinding)
  and then talk to a local server as if it were the same site; such requests carry the attacker's
  domain in ``Host``. A server bound to a loopback address accepts only loopback host names by
  default (``--allowed-hosts`` widens it; ``*`` allows any).
* API key: ``Authorization: Bearer KEY`` on ``/v1/*`` and ``/metrics`` when the server has a key
  (``/health`` stays open for probes), compared in constant time.
* Body size: a ``Content-Length`` over the limit is refused before the body is read; a chunked
  body is read here first, and refused as soon as it passes the limit.

Every refusal is the API's error object (:func:`~trimode.server.format.error_body`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence

from .format import error_body

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
PROTECTED = ("/v1/", "/metrics")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str, given: Sequence[str] | None) -> tuple[str, ...] | None:
    """The Host names a server bound to ``bind_host`` accepts (None: any). ``given`` (from
    ``--allowed-hosts``) wins; ``*`` in it allows any."""
    if given:
        return None if "*" in given else tuple(h.lower() for h in given)
    return LOOPBACK_HOSTS if is_loopback(bind_host) else None


def host_name(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    def __init__(self, app, *, allowed_hosts: Sequence[str] | None, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.allowed_hosts, self.max_body_bytes = app, allowed_hosts, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        refusal = self.refusal(scope["path"], headers)
        if refusal is not None:
            return await reply(send, *refusal)
        if b"content-length" not in headers and scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self.read_chunked(receive)
            if body is None:
                return await reply(send, 413, f"request body is larger than this server's limit of "
                                              f"{self.max_body_bytes} bytes", "body_too_large", {})
            receive = replay(body, receive)
        return await self.app(scope, receive, send)

    def refusal(self, path: str, headers: dict[bytes, bytes]) -> tuple[int, str, str | None, dict] | None:
        if self.allowed_hosts is not None:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                message = (f"Host {host!r} is not allowed; this server answers {', '.join(self.allowed_hosts)} "
                           "(start it with --allowed-hosts to add names)")
                return 400, message, "host_not_allowed", {}
        if self.expected is not None and path.startswith(PROTECTED):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return (401, "a valid API key is required: send 'Authorization: Bearer <key>'" if not given
                        else "the API key is not valid", "invalid_api_key", {"www-authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, f"Content-Length must be a number, got {length[:40]!r}", "invalid_content_length", {}
            if size > self.max_body_bytes:
                message = f"request body of {size} bytes is larger than this server's limit of {self.max_body_bytes} bytes"
                return 413, message, "body_too_large", {}
        return None

    async def read_chunked(self, receive) -> bytes | None:
        """The whole body of a request sent without Content-Length, or None once it passes the limit."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see the disconnect
                return b"".join(parts)
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(parts)


def replay(body: bytes, receive):
    """A receive that gives ``body`` as one message, then whatever the connection sends next."""
    sent = False

    async def receive_replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_replayed


async def reply(send, status: int, message: str, code: str | None, headers: dict[str, str]) -> None:
    body = json.dumps(error_body(status, message, None, code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.encode(), v.encode()) for k, v in headers.items())]
    if status == 413:  # the unread body would be taken for the next request on a kept-alive connection
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
