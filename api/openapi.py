"""The OpenAPI document: operation ids, security schemes, streamed media types.

- Operation ids are the route functions' names in camelCase without ``_route``
  (``create_app_route`` -> ``createApp``), so generated clients get readable
  method names; ``operation_id`` checks they are unique.
- Every operation names the security schemes it accepts: ``Authorization:
  Token <t>`` (or ``Bearer``) and ``X-API-Key``, and none for routes that admit
  anonymous callers (public apps). The docs page's Authorize button uses them.
- Streamed answers are documented per media type with the schema of one
  NDJSON line (``RunChunk``) or SSE event.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse

SECURITY_SCHEMES: dict[str, Any] = {
    "TokenAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Token <token>`, as `appforge token create` prints it.",
    },
    "BearerAuth": {"type": "http", "scheme": "bearer", "description": "`Bearer <token>`."},
    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_TOKEN_SECURITY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]


class RunChunk(BaseModel):
    """One line of a streamed run (``application/x-ndjson``), or one SSE event's data.

    Chunks carry ``output`` pieces (string pieces concatenate per key); the last
    line has ``done: true`` and the run's summary, or ``error`` if it failed."""

    session: dict[str, str] = Field(description='`{"id": <session id>}`')
    output: dict[str, Any] | None = Field(default=None, description="Output pieces by key")
    run: dict[str, Any] | None = Field(default=None, description="On the last line: the run")
    done: bool | None = Field(default=None, description="True on the last line of a success")
    error: dict[str, Any] | None = Field(default=None, description="The error body, on failure")


def operation_id(route: APIRoute) -> str:
    """``create_app_route`` -> ``createApp``."""
    name = re.sub(r"_route$", "", route.name)
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def streamed_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The 200 answer of a route that streams on ``"stream": true``, per media type."""
    line = {"$ref": "#/components/schemas/RunChunk"}
    return {
        200: {
            "model": model,
            "description": (
                '`application/json` without streaming; with `"stream": true`, '
                "`application/x-ndjson` (one RunChunk per line) or, with "
                "`Accept: text/event-stream`, SSE events whose data is a RunChunk."
            ),
            "content": {
                "application/x-ndjson": {"schema": line},
                "text/event-stream": {
                    "schema": {"type": "string", "description": "SSE events of RunChunk"}
                },
            },
        }
    }


# The docs pages load only this server's files (Swagger UI and ReDoc ship in the
# fastapi-offline package); anything else, such as ReDoc's logo, is not fetched.
_DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:"
    )
}
_ASSETS = "/docs/assets"


def install(app: FastAPI) -> None:
    """Serve the document with security schemes and per-operation security, and
    the Swagger UI (``/docs``) and ReDoc (``/redoc``) pages from local files."""
    app.mount(_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")))

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_ASSETS}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": False},
        )
        return HTMLResponse(page.body, headers=_DOCS_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            redoc_js_url=f"{_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        return HTMLResponse(page.body, headers=_DOCS_HEADERS)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _build(app)
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented override


def _build(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = spec.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    schemas["RunChunk"] = RunChunk.model_json_schema(ref_template="#/components/schemas/{model}")
    seen: dict[str, str] = {}
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            _secure(op)
            label = f"{method.upper()} {path}"
            clash = seen.setdefault(op["operationId"], label)
            if clash != label:
                raise RuntimeError(f"operation id {op['operationId']} of {label} and {clash}")
    return spec


def _secure(op: dict[str, Any]) -> None:
    access = op.get("x-access")
    if access is None:
        return  # health: open to all
    op["security"] = _TOKEN_SECURITY + ([{}] if access.get("anonymous") else [])
