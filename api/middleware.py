"""ASGI middleware: a request id on every response, the client's address, and the
request body size limit.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass
through untouched and client disconnects reach the endpoint.
"""

from __future__ import annotations

import re
import uuid

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import body_for
from api.proxies import TrustedProxies, resolve_address

_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class RequestContextMiddleware:
    """Give each request an id (the client's ``X-Request-ID`` if sane), work out its
    client's address (``api.proxies``) and cap its body."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, proxies: TrustedProxies | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.proxies = proxies or TrustedProxies()

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
        resolve_address(scope, self.proxies)
        limit = self.max_body_bytes

        message = f"request body is larger than {limit} bytes"
        if declared.isdigit() and int(declared) > limit:
            body = body_for(
                scope["path"], 413, "PAYLOAD_TOO_LARGE", message, {"limit": limit}, request_id
            )
            response = JSONResponse(body, status_code=413, headers={"X-Request-ID": request_id})
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message_in = await receive()
            if message_in["type"] == "http.request":
                received += len(message_in.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched.
                    raise HTTPException(413, detail=message)
            return message_in

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in raw):
                    raw.append((b"x-request-id", request_id.encode()))
                message["headers"] = raw
            await send(message)

        await self.app(scope, counted_receive, stamped_send)
