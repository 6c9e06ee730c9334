"""ASGI middleware: a request id on every response, the client's address, the
request body's size limit and pace (``api.connections.BodyPace``: 408 for a body
that trickles), and the request's metric and log line.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass
through untouched and client disconnects reach the endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.connections import BodyPace
from api.errors import body_for
from api.proxies import TrustedProxies, resolve_address
from appforge.core.logs import REQUEST_ID
from appforge.core.metrics import HTTP_REQUESTS

access_log = logging.getLogger("appforge.access")

# Where the hex SHA-256 of the whole request body is put once it has arrived.
BODY_SHA256 = "body_sha256"
_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


# File uploads (multipart) may carry a file of up to ``max_file_bytes``.
_UPLOAD_PATH = re.compile(r"^/api/datasources/[^/]+/entries/upload$")


class RequestContextMiddleware:
    """Give each request an id (the client's ``X-Request-ID`` if sane), work out its
    client's address (``api.proxies``) and cap its body: ``max_body_bytes``, and for
    a file upload ``max_file_bytes`` more (the file, streamed to disk by the route),
    arriving at the pace ``body_pace`` (gap seconds, minimum bytes a second) sets."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        proxies: TrustedProxies | None = None,
        max_file_bytes: int = 0,
        body_pace: tuple[float, int] = (20.0, 500),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_file_bytes = max_file_bytes
        self.proxies = proxies or TrustedProxies()
        self.body_pace = body_pace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, declared = "", ""
        for key, value in scope["headers"]:  # ASGI header names are lower-case
            if key == b"x-request-id":
                given = value.decode("latin-1")
            elif key == b"content-length":
                declared = value.decode("latin-1")
        request_id = given if _GOOD_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        REQUEST_ID.set(request_id)  # this request's task: its log lines name it
        started = time.perf_counter()
        status = [0]
        try:
            await self._limited(scope, receive, send, declared, request_id, status)
        finally:
            _done(scope, status[0], started)

    async def _limited(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        declared: str,
        request_id: str,
        status: list[int],
    ) -> None:
        resolve_address(scope, self.proxies)
        limit = self.max_body_bytes
        if scope["method"] == "POST" and _UPLOAD_PATH.match(scope["path"]):
            limit += self.max_file_bytes

        message = f"request body is larger than {limit} bytes"
        if declared.isdigit() and int(declared) > limit:
            body = body_for(
                scope["path"], 413, "PAYLOAD_TOO_LARGE", message, {"limit": limit}, request_id
            )
            response = JSONResponse(body, status_code=413, headers={"X-Request-ID": request_id})
            status[0] = 413
            await response(scope, receive, send)
            return
        received = 0
        digest = hashlib.sha256()
        loop = asyncio.get_running_loop()
        pace: BodyPace | None = None  # until the body has come whole

        async def counted_receive() -> Message:
            nonlocal received, pace
            if scope["state"].get(BODY_SHA256) is not None:
                return await receive()  # after the body: a disconnect, waited for freely
            pace = pace or BodyPace(*self.body_pace, loop.time())
            try:
                async with asyncio.timeout(max(0.0, pace.wait(received, loop.time()))):
                    message_in = await receive()
            except TimeoutError:
                slow = "the request body arrived too slowly"
                raise HTTPException(408, detail=slow, headers=_CLOSE) from None
            if message_in["type"] == "http.request":
                piece = message_in.get("body", b"")
                received += len(piece)
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched.
                    raise HTTPException(413, detail=message)
                digest.update(piece)
                if not message_in.get("more_body", False):
                    # For signed requests (api.deps): however the route reads the body
                    # (a multipart upload is spooled, never held whole), it is hashed.
                    scope["state"][BODY_SHA256] = digest.hexdigest()
            return message_in

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in raw):
                    raw.append((b"x-request-id", request_id.encode()))
                message["headers"] = raw
            await send(message)

        await self.app(scope, counted_receive, stamped_send)


# An answer to a request whose body is not read whole ends its connection.
_CLOSE = {"Connection": "close"}


def _done(scope: Scope, status: int, started: float) -> None:
    """Count the request by route template (not its path: bounded labels) and log it."""
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    method = scope["method"]
    HTTP_REQUESTS.labels(route, method, str(status or 500)).inc()
    if access_log.isEnabledFor(logging.INFO):
        latency = round((time.perf_counter() - started) * 1000, 3)
        access_log.info(
            "%s %s %s %.0f ms",
            method,
            route,
            status,
            latency,
            extra={"route": route, "method": method, "status": status, "latency_ms": latency},
        )
