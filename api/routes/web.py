"""Apps published to end users: the chat page, the embed script, and what they read.

- ``GET /chat/<uuid>``: the chat page of an app (``?embed=1`` without its chrome,
  for the widget's frame). Plain HTML, CSS and JS shipped in ``api/web/``; no
  build step, nothing fetched from elsewhere.
- ``GET /embed.js``: ``<script src=".../embed.js" data-app="<uuid>" async>``
  adds a chat bubble that opens the page in a frame.
- ``GET /api/apps/<uuid>/page``: what the page shows of an app (its inputs,
  which output is the answer, its ``ui:``); for whoever may run or view it,
  and for anyone when the app is public.

The page runs apps through the same ``POST /api/apps/<uuid>/run`` as every
client, streaming NDJSON, with the caller's key (from the URL fragment
``#key=...``, never sent to the server in a URL) or none for public apps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.access import AppPageReader
from api.errors import AuthError, NotFoundError
from api.state import State
from apps_yaml.schema import AppDocument
from runs.chat import answer_candidates, input_candidates
from runs.tables import App

WEB = Path(__file__).resolve().parent.parent / "web"
router = APIRouter(tags=["publish"])

# The page's own files only: scripts and styles from this origin, no inline
# script, the API on this origin. Frames: the widget shows the page on any site.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors *"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class PageInput(BaseModel):
    type: str
    required: bool
    default: Any = None
    description: str = ""
    enum: list[Any] | None = None
    max_length: int | None = None


class PageUI(BaseModel):
    title: str | None = None
    welcome: str | None = None
    suggestions: list[str] = Field(default_factory=list)
    accent: str | None = None


class AppPage(BaseModel):
    """What the chat page needs to show an app and run it."""

    uuid: str
    name: str
    description: str
    type: str
    public: bool
    input: dict[str, PageInput]
    message_input: str | None = Field(
        description="The input a chat message fills: openai.input, else the only required"
        " string input, else the only string input"
    )
    answer: str | None = Field(
        description="The output shown as the answer: openai.output, else the first streamed"
        " output key, else the first output key"
    )
    outputs: list[str] = Field(description="Every output key, in order (empty for a flow)")
    ui: PageUI


def _message_input(doc: AppDocument) -> str | None:
    # The OpenAI-compatible endpoint's rule (openai.input, else the only required string
    # input); where that has no one answer, the page takes the app's only string input.
    candidates = input_candidates(doc)
    if len(candidates) == 1:
        return candidates[0]
    strings = [k for k, f in doc.input.items() if f.type == "string"]
    return strings[0] if len(strings) == 1 else None


def page_of(app: App) -> AppPage:
    doc = AppDocument.model_validate(app.document)
    answers = answer_candidates(doc)  # openai.output, else the streamed keys, else all
    outputs = list(doc.output)
    return AppPage(
        uuid=app.uuid,
        name=app.name,
        description=app.description,
        type=app.type,
        public=app.public,
        input={k: PageInput.model_validate(f.model_dump()) for k, f in doc.input.items()},
        message_input=_message_input(doc),
        answer=answers[0] if answers else None,
        outputs=outputs,
        ui=PageUI.model_validate(doc.ui.model_dump(exclude_none=True)),
    )


@router.get("/api/apps/{app_uuid}/page", response_model=AppPage)
def get_app_page_route(app_uuid: str, state: State, token: AppPageReader) -> AppPage:
    """What an app's chat page shows: inputs, the answer output, its ``ui``.

    Anyone may read it for a public app; a private app needs a token that may
    run or view it."""
    with state.db() as db:
        app = db.scalar(select(App).where(App.uuid == app_uuid))
    if app is None:
        raise NotFoundError(f"no app '{app_uuid}'", code="APP_NOT_FOUND")
    if token is None and not app.public:
        raise AuthError(
            "this app is not public: send 'Authorization: Token <token>'",
            headers={"WWW-Authenticate": "Token"},
        )
    return page_of(app)


@router.get("/chat/{app_uuid}", include_in_schema=False)
def chat_page(app_uuid: str) -> FileResponse:
    """The chat page (the same file for every app: it reads its app from the URL)."""
    return FileResponse(WEB / "chat.html", media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/embed.js", include_in_schema=False)
def embed_script() -> FileResponse:
    """The widget: a bubble that opens an app's chat page in a frame."""
    headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
    return FileResponse(WEB / "embed.js", media_type="text/javascript", headers=headers)


@router.get("/web/{name}", include_in_schema=False)
def web_file(name: str) -> FileResponse:
    """The chat page's script and style sheet (only the files shipped, by exact name)."""
    kinds = {"chat.js": "text/javascript", "markdown.js": "text/javascript", "chat.css": "text/css"}
    if name not in kinds:
        raise NotFoundError(f"no file '{name}'")
    headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
    return FileResponse(WEB / name, media_type=kinds[name], headers=headers)
