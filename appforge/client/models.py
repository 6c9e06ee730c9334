"""What the server answers, as typed results: apps, runs, sessions, analytics,
datasources, tokens, the audit log and the server itself (prompts and webhooks:
``prompt_models``).

Each model mirrors a ``*Public`` answer of ``api/routes``. Fields a newer server
adds are kept (``extra="allow"``, read with ``model_extra``) instead of failing.
Values whose shape the app or the caller decides (an app definition, a run's input
and output, entry metadata) stay JSON mappings.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class Result(BaseModel):
    """Base of every result: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow")


# --- apps -------------------------------------------------------------------------------


class AppInfo(Result):
    """An app with its current definition."""

    uuid: str
    name: str
    description: str = ""
    type: str
    public: bool
    version: int
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    definition: dict[str, Any]


class AppCheck(Result):
    """A definition that passed every save-time check (``validate_app``)."""

    valid: bool
    name: str
    type: str
    public: bool


class AppVersion(Result):
    version: int
    created_at: datetime
    created_by: str | None = None
    current: bool
    evaluation_id: str | None = None  # the evaluation a gated restore passed


class AppVersionDetail(AppVersion):
    """One stored definition of an app, with the YAML it was saved as."""

    yaml: str
    definition: dict[str, Any]


# --- runs and sessions ------------------------------------------------------------------


class RunSummary(Result):
    id: str
    status: str
    usage: dict[str, int] = {}
    latency_ms: float | None = None


class RunResult(Result):
    """The answer of a run that was not streamed."""

    # A mapping (``{"id": ...}``), not a model: callers (``appforge run``) read
    # ``session["id"]``; ``session_id`` is the typed way.
    session: dict[str, Any]
    output: dict[str, Any]
    run: RunSummary

    @property
    def session_id(self) -> str:
        return str(self.session["id"])


class StreamChunk(Result):
    """One line of a streamed run: an output piece, or the final ``done`` line."""

    session: dict[str, Any]  # a mapping, as in RunResult
    output: dict[str, Any] = {}
    run: RunSummary | None = None
    done: bool = False

    @property
    def session_id(self) -> str:
        return str(self.session["id"])


def stitch(chunks: Iterable[StreamChunk]) -> dict[str, Any]:
    """Join streamed chunks into the output a non-streamed run returns."""
    out: dict[str, Any] = {}
    for chunk in chunks:
        for key, piece in chunk.output.items():
            out[key] = out.get(key, "") + piece if isinstance(piece, str) else piece
    return out


class RunFailure(Result):
    """Why a stored run failed: the error code and message, and the step it failed in."""

    code: str
    message: str
    step: str | None = None


class RunRecord(Result):
    """A stored run: what went in, what came out, each step, usage and timings."""

    id: str
    app_uuid: str
    app_version: int
    session_id: str
    status: str
    stream: bool = False
    input: dict[str, Any]
    output: dict[str, Any]
    steps: list[dict[str, Any]]
    usage: dict[str, Any]
    error: RunFailure | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    created_at: datetime
    finished_at: datetime | None = None


class RunRow(Result):
    """A run as the cross-app list shows it: a summary, with its main input's first words."""

    id: str
    created_at: datetime
    app_uuid: str
    app_name: str
    app_version: int
    session_id: str
    input_preview: str
    status: str
    error_code: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0


class RunList(Result):
    """One page of runs, newest first, and how many match in all."""

    runs: list[RunRow]
    total: int


class TurnInfo(Result):
    n: int
    run_id: str
    input: dict[str, Any]
    output: dict[str, Any]
    created_at: datetime


class SessionSummary(Result):
    """A session in an app's list: its number of turns and the start of its first message."""

    id: str
    created_at: datetime
    updated_at: datetime
    turns: int
    first_input: str | None = None


class SessionInfo(Result):
    """A session with its finished turns, oldest first."""

    id: str
    app_uuid: str
    created_at: datetime
    updated_at: datetime
    turns: list[TurnInfo]


# --- analytics --------------------------------------------------------------------------


class Percentiles(Result):
    p50: float | None
    p95: float | None
    avg: float | None


class TokenCounts(Result):
    prompt: int
    completion: int
    total: int


class RunStats(Result):
    """Figures over a set of runs."""

    runs: int
    errors: int
    cancelled: int
    error_rate: float
    latency_ms: Percentiles
    ttft_ms: Percentiles
    tokens: TokenCounts


class BucketStats(RunStats):
    bucket: str


class AppVersionStats(RunStats):
    app_version: int


class PromptVersionStats(RunStats):
    prompt_version: int


class LabelStats(RunStats):
    label: str | None


class AppAnalytics(Result):
    """Run figures of an app: totals, a series of buckets, and per app version."""

    app_uuid: str
    start: datetime
    end: datetime
    bucket: str
    totals: RunStats
    series: list[BucketStats]
    by_version: list[AppVersionStats]


class PromptAnalytics(Result):
    """Figures of the runs that used a prompt: totals, a series, per version and label."""

    prompt_id: str
    start: datetime
    end: datetime
    bucket: str
    totals: RunStats
    series: list[BucketStats]
    by_version: list[PromptVersionStats]
    by_label: list[LabelStats]


# --- datasources ------------------------------------------------------------------------


class DatasourceInfo(Result):
    uuid: str
    name: str
    type: str
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    search_mode: str = "vector"
    created_at: datetime
    updated_at: datetime


class DatasourceDetail(DatasourceInfo):
    """A datasource with how many of its entries are in each status."""

    entries: dict[str, int]


class DatasourceUpdated(DatasourceInfo):
    """A changed datasource, and how many entries new chunk settings re-ingest."""

    requeued: int


class EntryInfo(Result):
    """An entry of a datasource and where its ingestion is."""

    uuid: str
    datasource_uuid: str
    name: str
    type: str
    url: str | None = None
    media_type: str | None = None
    size_bytes: int
    content_hash: str
    entry_metadata: dict[str, Any]
    status: str
    stage: str | None = None  # while processing: loading model, extracting, embedding n/m, ...
    error: str | None = None  # a ready entry: its last refresh or re-ingestion failed
    refresh: str = "none"  # URL entries: none, daily or weekly
    last_refreshed_at: datetime | None = None
    next_refresh_at: datetime | None = None
    chunks_total: int | None = None
    chunks_done: int
    attempts: int
    created_at: datetime
    updated_at: datetime


class SearchHit(Result):
    id: str
    text: str
    score: float
    metadata: dict[str, Any]


class SearchResults(Result):
    """The chunks nearest a query, best first."""

    results: list[SearchHit]


# --- the server: health, models, tokens -------------------------------------------------


class Health(Result):
    status: str
    version: str
    database: str


class ReadyCheck(Result):
    """One readiness check: whether it passed and how long it took."""

    ok: bool
    ms: float
    error: str | None = None


class Readiness(Result):
    """A ready server: each check it made (database, vector_store, redis, model:<name>)."""

    status: str
    checks: dict[str, ReadyCheck]


class ModelProblem(Result):
    code: str
    message: str


class ModelProvider(Result):
    """A model backend: whether it is configured and answers now, the models it serves."""

    name: str
    kind: str
    source: str = "builtin"  # builtin, env or database
    description: str | None = None  # e.g. the bundled model's "tiny offline demo model ..."
    target: str | None = None
    configured: bool
    reachable: bool | None = None
    loaded: bool | None = None
    models: list[str] | None = None
    error: ModelProblem | None = None


class ModelAlias(Result):
    """A model alias of the settings, what it resolves to, and whether that answers."""

    name: str
    target: str
    source: str = "builtin"  # builtin, database or env
    description: str | None = None
    provider: str | None = None
    model: str | None = None
    reachable: bool
    listed: bool | None = None
    error: ModelProblem | None = None


class ModelsInfo(Result):
    aliases: list[ModelAlias]
    providers: list[ModelProvider]
    hint: str | None = None  # how to point ``default`` at a real server


class ProviderConfig(Result):
    """A model provider as configured (never its key nor its header values)."""

    name: str
    kind: str  # local or openai-compatible
    source: str  # builtin, env (wins over a stored one of its name) or database (editable)
    active: bool
    base_url: str | None = None
    has_key: bool
    headers: list[str] = []  # names only
    models: list[str] = []  # offered for it (empty: ask the server)
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ProviderTest(Result):
    """A successful connection test: the models the server lists."""

    name: str
    server: str | None = None
    models: list[str]
    latency_ms: float


class AliasConfig(Result):
    """A model alias, the ``<provider>:<model>`` it points at, and where it is set."""

    name: str
    target: str
    source: str  # builtin, database or env
    active: bool
    description: str | None = None
    updated_at: datetime | None = None


class TokenInfo(Result):
    """An API token (never its secret): its role, and what it is narrowed to."""

    id: str
    name: str
    prefix: str
    role: str  # admin, editor, viewer or runner
    is_admin: bool  # deprecated: role == "admin"
    apps: list[str] | None = None  # app uuids; None: every app
    origins: list[str] | None = None  # runner keys: browser origins; None: any
    expires_at: datetime | None = None
    rate_limit: str | None = None  # "60/minute"; None: the server's
    require_signature: bool = False
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class NewToken(TokenInfo):
    """A token just made: the only answer that carries its secret (and signing key)."""

    token: str
    signing_secret: str | None = None


class BuilderSession(Result):
    """A builder sign-in just started: the browser trades ``claim`` (once, within
    minutes) for the session's http-only cookie named ``cookie``."""

    id: str
    claim: str
    expires_at: datetime
    cookie: str


# --- the audit log ----------------------------------------------------------------------


class AuditEvent(Result):
    """One change: who (a token, or nobody) did what to which object, and when."""

    id: int
    at: datetime
    actor_id: str | None = None
    actor_name: str | None = None  # None: a caller without a token
    actor_address: str | None = None
    action: str  # "app.created", "label.deployed", ...
    target_type: str
    target_id: str
    details: dict[str, Any] = {}

    @property
    def actor(self) -> str:
        """The token's name, or ``anonymous``."""
        return self.actor_name or self.actor_id or "anonymous"


class AuditLog(Result):
    """A page of the audit log, newest first, and how many events match in all."""

    events: list[AuditEvent]
    total: int
