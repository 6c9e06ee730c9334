"""Run analytics per app, computed in SQL (SQLite and PostgreSQL alike).

Percentiles use the nearest-rank definition: the p-th percentile of n sorted
values is the smallest value whose rank r satisfies r >= p * n. Ranks come from
``row_number()`` over a window, so no database extension is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Integer, Row, Subquery, case, func, literal, select
from sqlalchemy.orm import Session

from api.access import AppReader, Reader
from api.deps import DbSession
from api.routes.apps import get_app_row
from api.state import State
from api.time_range import TimeRange, Window, invalid_range
from prompts.store import get_prompt
from runs.tables import Run, RunPrompt

router = APIRouter(tags=["analytics"])

ERROR_STATUSES = ("failed", "timeout")


class Percentiles(BaseModel):
    p50: float | None
    p95: float | None
    avg: float | None


class Tokens(BaseModel):
    prompt: int
    completion: int
    total: int


class Stats(BaseModel):
    runs: int
    errors: int
    cancelled: int
    error_rate: float
    latency_ms: Percentiles
    ttft_ms: Percentiles
    tokens: Tokens


class BucketStats(Stats):
    bucket: str


class VersionStats(Stats):
    app_version: int


class AppAnalytics(BaseModel):
    app_uuid: str
    start: datetime
    end: datetime
    bucket: str
    totals: Stats
    series: list[BucketStats]
    by_version: list[VersionStats]


def _bucket_expr(dialect: str, bucket: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        utc = func.timezone("UTC", Run.created_at)
        fmt = 'YYYY-MM-DD"T"HH24:00:00"Z"' if bucket == "hour" else 'YYYY-MM-DD"T"00:00:00"Z"'
        return func.to_char(func.date_trunc(bucket, utc), fmt)
    # SQLite keeps UTC datetimes as ISO text
    fmt = "%Y-%m-%dT%H:00:00Z" if bucket == "hour" else "%Y-%m-%dT00:00:00Z"
    return func.strftime(fmt, Run.created_at)


def _stats(
    db: Session,
    filters: Sequence[ColumnElement[bool]],
    start: datetime,
    end: datetime,
    group: Any,
    by_prompt: bool = False,
) -> list[tuple[Any, Stats]]:
    """Stats per value of ``group`` (one row keyed None when ``group`` is None)."""
    base = _ranked_runs(filters, start, end, group, by_prompt)

    def pct(value: Any, rank: Any, n: Any, p: float) -> Any:
        return func.min(case((value.isnot(None) & (rank >= p * n), value)))

    rows = db.execute(
        select(
            base.c.k,
            func.count().label("runs"),
            func.sum(case((base.c.status.in_(ERROR_STATUSES), 1), else_=0)).label("errors"),
            func.sum(case((base.c.status == "cancelled", 1), else_=0)).label("cancelled"),
            pct(base.c.latency, base.c.rl, base.c.nl, 0.5).label("lat50"),
            pct(base.c.latency, base.c.rl, base.c.nl, 0.95).label("lat95"),
            func.avg(base.c.latency).label("latavg"),
            pct(base.c.ttft, base.c.rt, base.c.nt, 0.5).label("ttft50"),
            pct(base.c.ttft, base.c.rt, base.c.nt, 0.95).label("ttft95"),
            func.avg(base.c.ttft).label("ttftavg"),
            func.coalesce(func.sum(base.c.tin), 0).cast(Integer).label("tin"),
            func.coalesce(func.sum(base.c.tout), 0).cast(Integer).label("tout"),
        )
        .group_by(base.c.k)
        .order_by(base.c.k)
    ).all()
    return [(r.k, _stats_of(r)) for r in rows]


def _ranked_runs(
    filters: Sequence[ColumnElement[bool]],
    start: datetime,
    end: datetime,
    group: Any,
    by_prompt: bool,
) -> Subquery:
    """Finished runs in the window, each with its latency and TTFT rank within its group."""
    key = group if group is not None else literal(0)
    query = (
        select(
            key.label("k"),
            Run.status.label("status"),
            Run.latency_ms.label("latency"),
            Run.ttft_ms.label("ttft"),
            Run.usage["prompt_tokens"].as_integer().label("tin"),
            Run.usage["completion_tokens"].as_integer().label("tout"),
            # NULLs sort first on SQLite, last on PostgreSQL: put them last on both.
            func.row_number()
            .over(partition_by=key, order_by=(Run.latency_ms.is_(None), Run.latency_ms))
            .label("rl"),
            func.count(Run.latency_ms).over(partition_by=key).label("nl"),
            func.row_number()
            .over(partition_by=key, order_by=(Run.ttft_ms.is_(None), Run.ttft_ms))
            .label("rt"),
            func.count(Run.ttft_ms).over(partition_by=key).label("nt"),
        )
        .select_from(Run)
        .where(*filters, Run.created_at >= start, Run.created_at < end)
        .where(Run.status != "running")
    )
    if by_prompt:  # one row per use of the prompt (a step of a run)
        query = query.join(RunPrompt, RunPrompt.run_id == Run.id)
    return query.subquery()


def _stats_of(row: Row[Any]) -> Stats:
    runs = int(row.runs)
    errors = int(row.errors or 0)
    return Stats(
        runs=runs,
        errors=errors,
        cancelled=int(row.cancelled or 0),
        error_rate=round(errors / runs, 4) if runs else 0.0,
        latency_ms=Percentiles(p50=row.lat50, p95=row.lat95, avg=_round(row.latavg)),
        ttft_ms=Percentiles(p50=row.ttft50, p95=row.ttft95, avg=_round(row.ttftavg)),
        tokens=Tokens(prompt=row.tin, completion=row.tout, total=row.tin + row.tout),
    )


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


_EMPTY = Stats(
    runs=0,
    errors=0,
    cancelled=0,
    error_rate=0.0,
    latency_ms=Percentiles(p50=None, p95=None, avg=None),
    ttft_ms=Percentiles(p50=None, p95=None, avg=None),
    tokens=Tokens(prompt=0, completion=0, total=0),
)


Bucket = Annotated[Literal["hour", "day"], Query(description="Series bucket size")]
_BUCKET_SIZE = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@router.get("/api/apps/{app_uuid}/analytics", response_model=AppAnalytics)
def app_analytics_route(
    app_uuid: str,
    db: DbSession,
    _: AppReader,
    state: State,
    window: Window,
    bucket: Bucket = "day",
) -> AppAnalytics:
    """Finished runs of an app in ``since``..``until`` (default: the 7 days before
    ``until``, or before now): counts, errors, latency and time-to-first-token
    percentiles (p50/p95, nearest rank) and tokens, in total, per time bucket (buckets
    without runs are left out) and per app version. The range holds at most
    ``APPFORGE_RUNS__ANALYTICS_MAX_BUCKETS`` buckets (422 above)."""
    get_app_row(db, app_uuid)
    start, end = _window(window, bucket, state.settings.runs.analytics_max_buckets)
    dialect = db.get_bind().dialect.name
    where = [Run.app_uuid == app_uuid]
    totals = _stats(db, where, start, end, None)
    series = _stats(db, where, start, end, _bucket_expr(dialect, bucket))
    versions = _stats(db, where, start, end, Run.app_version)
    return AppAnalytics(
        app_uuid=app_uuid,
        start=start,
        end=end,
        bucket=bucket,
        totals=totals[0][1] if totals else _EMPTY,
        series=[BucketStats(bucket=str(k), **s.model_dump()) for k, s in series],
        by_version=[VersionStats(app_version=int(k), **s.model_dump()) for k, s in versions],
    )


class PromptVersionStats(Stats):
    prompt_version: int


class LabelStats(Stats):
    label: str | None


class PromptAnalytics(BaseModel):
    prompt_id: str
    start: datetime
    end: datetime
    bucket: str
    totals: Stats
    series: list[BucketStats]
    by_version: list[PromptVersionStats]
    by_label: list[LabelStats]


@router.get("/api/v1/prompts/{prompt_id}/analytics", response_model=PromptAnalytics)
def prompt_analytics_route(
    prompt_id: str,
    db: DbSession,
    _: Reader,
    state: State,
    window: Window,
    bucket: Bucket = "day",
) -> PromptAnalytics:
    """Runs that used a managed prompt: the same figures as app analytics, per use of the
    prompt, in total, per time bucket, per prompt version and per label it was resolved by;
    the range is given and bounded as for app analytics."""
    get_prompt(db, prompt_id)
    start, end = _window(window, bucket, state.settings.runs.analytics_max_buckets)
    dialect = db.get_bind().dialect.name
    where = [RunPrompt.prompt_id == prompt_id]
    totals = _stats(db, where, start, end, None, by_prompt=True)
    series = _stats(db, where, start, end, _bucket_expr(dialect, bucket), by_prompt=True)
    versions = _stats(db, where, start, end, RunPrompt.prompt_version, by_prompt=True)
    labels = _stats(db, where, start, end, RunPrompt.label, by_prompt=True)
    return PromptAnalytics(
        prompt_id=prompt_id,
        start=start,
        end=end,
        bucket=bucket,
        totals=totals[0][1] if totals else _EMPTY,
        series=[BucketStats(bucket=str(k), **s.model_dump()) for k, s in series],
        by_version=[
            PromptVersionStats(prompt_version=int(k), **s.model_dump()) for k, s in versions
        ],
        by_label=[LabelStats(label=k, **s.model_dump()) for k, s in labels],
    )


def _window(window: TimeRange, bucket: str, max_buckets: int) -> tuple[datetime, datetime]:
    """The range analytics covers, with its defaults; 422 if it needs too many buckets."""
    try:
        end = window.until or datetime.now(UTC)
        start = window.since or end - timedelta(days=7)
    except OverflowError:
        raise invalid_range("the 7 days before 'until' start before the year 1") from None
    if start >= end:
        raise invalid_range("'since' must be before 'until' (which defaults to now)")
    size = _BUCKET_SIZE[bucket]
    buckets = -(-(end - start) // size)  # whole buckets, rounded up
    if buckets > max_buckets:
        raise invalid_range(
            f"this range needs {buckets} {bucket} buckets; at most {max_buckets} are given"
            " (APPFORGE_RUNS__ANALYTICS_MAX_BUCKETS): shorten it or use a larger bucket",
            buckets=str(buckets),
            max_buckets=str(max_buckets),
        )
    return start, end
