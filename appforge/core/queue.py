"""The one lease queue: table rows claimed by workers for a while.

A queue is a table whose rows carry ``status``, ``claim_token``, ``lease_until``
and ``attempts`` columns; the table *is* the queue, so it survives restarts and
is shared by every process on one database. Ingestion (``datasource_entries``)
and webhook delivery (``webhook_deliveries``) are two queues of this kind.

- :meth:`LeaseQueue.claim` takes the oldest claimable rows: on PostgreSQL the
  candidates are selected ``FOR UPDATE SKIP LOCKED`` (concurrent workers pass
  over each other's rows instead of queueing on them), then one conditional
  ``UPDATE`` gives them this claim's token and a lease, so two workers never
  hold the same row, on SQLite either. A row whose worker died comes back when
  its lease ends (the table's ``claimable`` condition says so).
  :meth:`LeaseQueue.claim_one` takes one row in one ``UPDATE ... RETURNING``
  where the database has it (a worker that claims per row pays one statement).
- :meth:`LeaseQueue.write` stores a worker's results, each guarded by its claim
  token: a worker that lost its claim (the row was deleted, or its lease ran
  out and another worker took it) learns so instead of clobbering. A row that
  stays in the claimed status gets its lease extended; any other status ends
  the claim. :meth:`LeaseQueue.write_on` does the same in a transaction of the
  caller's (results committed with the caller's other writes, one commit).
- :meth:`LeaseQueue.renewing` keeps claims alive while their worker works on
  them: every third of the lease it writes each row's lease anew (the same
  guarded write, nothing else changed), so work longer than the lease (a slow
  fetch, a long extraction) never lets a second worker take the row, while a
  process that died stops renewing and its rows come back after one lease.
- :meth:`LeaseQueue.release_all` gives back the rows a queue still holds when
  its process stops, so another worker takes them at once, not after the lease.

The worker threads that run a queue are in :mod:`appforge.core.workers`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Connection,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.db import once_more_if_ended, transaction, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTable:
    """How one table is used as a queue."""

    model: type[Any]  # the ORM class of the table
    key: str  # its primary key attribute
    claimable: Callable[[datetime], ColumnElement[bool]]  # rows a worker may take at ``now``
    order_by: str  # the column claims go in order of (oldest first)
    claimed_status: str  # the status of a claimed row, while its lease lasts
    released_status: str = "pending"  # the status a row given back unworked returns to
    counts_attempts: bool = True  # a claim adds one to ``attempts`` (given back: undone)


@dataclass(frozen=True)
class Claimed:
    """What a worker writes back for one claimed row: its claim token and new values."""

    token: str | None
    values: Mapping[str, Any]


class Held:
    """The claims a process holds, by claim token, until each row's claim ends.

    Two queues over one table (claiming different rows of it, writing through
    either) share one, so a claim ends wherever its result is written."""

    def __init__(self) -> None:
        self.tokens: dict[str, set[Any]] = {}  # claim token -> keys still claimed under it
        self.lock = threading.Lock()

    def add(self, token: str, keys: set[Any]) -> None:
        with self.lock:
            self.tokens[token] = keys

    def end(self, ended: Iterable[tuple[str | None, Any]]) -> None:
        """Claims that ended (a result, or lost): nothing to give back for them."""
        with self.lock:
            for token, row_key in ended:
                keys = self.tokens.get(token or "")
                if keys is not None:
                    keys.discard(row_key)
                    if not keys:
                        del self.tokens[token or ""]

    def take_all(self) -> list[str]:
        """Every token still held, forgotten here (they are being given back)."""
        with self.lock:
            tokens, self.tokens = list(self.tokens), {}
        return tokens


class LeaseQueue:
    """Claims rows of one :class:`LeaseTable` and writes results under the claim."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        table: LeaseTable,
        lease_seconds: float,
        held: Held | None = None,
    ) -> None:
        self.db = factory
        self.table = table
        self.lease = timedelta(seconds=lease_seconds)
        self.held = held or Held()
        self._writes: dict[tuple[str, ...], Any] = {}  # write statements by their columns
        # claim_one's statement, with the condition, value names and expressions it has
        self._claim_kept: tuple[Any, tuple[str, ...], tuple[Any, ...], Any] | None = None

    def _column(self, name: str) -> Any:
        return getattr(self.table.model, name)

    def claim(self, limit: int, now: datetime | None = None, **values: Any) -> list[Any]:
        """Take up to ``limit`` of the oldest rows claimable at ``now`` (default: the
        clock; a test may pass another); ``values`` are set on them too.

        The rows come back loaded (detached), each with this claim's ``claim_token``.
        """
        table, key = self.table, self._column(self.table.key)
        token = uuid.uuid4().hex
        if table.counts_attempts:
            values = {"attempts": self._column("attempts") + 1, **values}
        with transaction(self.db) as db:
            now = now or utcnow()
            query = (
                select(key)
                .where(table.claimable(now))
                .order_by(self._column(table.order_by))
                .limit(limit)
            )
            if db.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            candidates = list(db.scalars(query))
            if not candidates:
                return []
            # Conditional: on SQLite another worker may have claimed a row since the SELECT.
            db.execute(
                update(table.model)
                .where(key.in_(candidates), table.claimable(now))
                .values(
                    status=table.claimed_status,
                    claim_token=token,
                    lease_until=now + self.lease,
                    updated_at=now,
                    **values,
                )
                # The session is new and holds nothing to keep in step with the update.
                .execution_options(synchronize_session=False)
            )
            rows = list(
                db.scalars(
                    select(table.model)
                    .where(key.in_(candidates), self._column("claim_token") == token)
                    .order_by(self._column(table.order_by))
                )
            )
        if rows:
            self.held.add(token, {getattr(row, table.key) for row in rows})
        return rows

    def claim_one(
        self,
        now: datetime | None = None,
        params: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> Any | None:
        """Take the oldest row claimable at ``now`` (see :meth:`claim`), or None;
        ``values`` are set on it too: plain values, or SQL expressions whose bound
        parameters ``params`` gives.

        Where the database can (``UPDATE ... RETURNING``: PostgreSQL, SQLite 3.35 and
        later) this is one statement: the row is picked by a subquery (on PostgreSQL
        ``FOR UPDATE SKIP LOCKED``), claimed under the same condition, and returned.
        Elsewhere it is :meth:`claim` of one row.

        The statement is kept and run again with new parameters while the table's
        ``claimable`` gives the same condition object (one built once, its time a
        parameter) and ``values`` the same columns and expressions: building it and
        hashing it for the statement cache cost more than running it.
        """
        bind = self.db.kw.get("bind")
        if bind is None or not bind.dialect.update_returning:
            given = {n: _bound(v, params) for n, v in values.items()}
            return next(iter(self.claim(1, now, **given)), None)
        token = uuid.uuid4().hex
        now = now or utcnow()
        statement = self._claim_statement(self.table.claimable(now), values, bind.dialect.name)
        bound = dict(params or {})
        bound.update(
            {f"c_{n}": v for n, v in values.items() if not isinstance(v, ClauseElement)},
            c_token=token,
            c_now=now,
            c_lease_until=now + self.lease,
        )
        with transaction(self.db) as db:
            row = db.scalars(
                statement, bound, execution_options={"synchronize_session": False}
            ).first()
        if row is not None:
            self.held.add(token, {getattr(row, self.table.key)})
        return row

    def _claim_statement(
        self, condition: ColumnElement[bool], values: Mapping[str, Any], dialect: str
    ) -> Any:
        """The ``UPDATE ... RETURNING`` of :meth:`claim_one`: the kept one if it was
        built for this condition object and these values, else a new one (kept)."""
        names = tuple(sorted(values))
        shape = tuple(v if isinstance(v, ClauseElement) else None for v in map(values.get, names))
        kept = self._claim_kept
        if (
            kept is not None
            and kept[0] is condition
            and kept[1] == names
            and all(a is b for a, b in zip(kept[2], shape, strict=True))
        ):
            return kept[3]
        table, key = self.table, self._column(self.table.key)
        pick = (
            select(key)
            .where(condition)
            .order_by(self._column(table.order_by))
            .limit(1)
            .correlate(None)  # its own scan of the table, not the updated row
        )
        if dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        sets: dict[Any, Any] = {
            self._column(n): v if isinstance(v, ClauseElement) else bindparam(f"c_{n}")
            for n, v in zip(names, shape, strict=True)
        }
        if table.counts_attempts:
            sets[self._column("attempts")] = self._column("attempts") + 1
        statement = (
            update(table.model)
            .where(key == pick.scalar_subquery(), condition)
            .values(
                {
                    self._column("status"): table.claimed_status,
                    self._column("claim_token"): bindparam("c_token"),
                    self._column("lease_until"): bindparam("c_lease_until"),
                    self._column("updated_at"): bindparam("c_now"),
                    **sets,
                }
            )
            .returning(table.model)
        )
        self._claim_kept = (condition, names, shape, statement)
        return statement

    def has_claimable(self) -> bool:
        """Whether a claim now would find a row (a cheap look, no claim)."""
        table, key = self.table, self._column(self.table.key)
        with self.db() as db:
            found = db.scalars(select(key).where(table.claimable(utcnow())).limit(1)).first()
        return found is not None

    def depth(self) -> tuple[int, float]:
        """How many rows are claimable now, and how long the oldest has waited (seconds,
        by the order column: created, or due)."""
        table = self.table
        with self.db() as db:
            now = utcnow()
            count, oldest = db.execute(
                select(func.count(), func.min(self._column(table.order_by))).where(
                    table.claimable(now)
                )
            ).one()
        age = max(0.0, (now - _aware(oldest)).total_seconds()) if oldest is not None else 0.0
        return int(count), age

    def write(self, updates: Mapping[Any, Claimed]) -> set[Any]:
        """Store each row's new values under its claim, in one transaction.

        A row left in the claimed status has its lease extended; any other status
        ends the claim. Returns the keys of the rows whose claim was lost (deleted,
        or taken over by another worker): nothing was written for those.
        """

        def write() -> set[Any]:
            with transaction(self.db) as db:
                return self.write_on(db.connection(), updates)

        # A database restarted while the rows were worked on: their results are kept.
        lost = once_more_if_ended(write)
        self.settle(updates, lost)
        return lost

    def write_on(self, conn: Connection, updates: Mapping[Any, Claimed]) -> set[Any]:
        """:meth:`write` in a transaction the caller owns (the results are committed
        with its other writes, or not at all); once it committed, the caller passes
        the same updates and the keys returned to :meth:`settle`."""
        lost: set[Any] = set()
        now = utcnow()
        for row_key, claimed in updates.items():
            values = dict(claimed.values)
            if values.get("status", self.table.claimed_status) == self.table.claimed_status:
                values["lease_until"] = now + self.lease
            else:
                values.update(claim_token=None, lease_until=None)
            values["updated_at"] = now
            statement, params = self._write_statement(row_key, claimed.token, values)
            if conn.execute(statement, params).rowcount != 1:
                lost.add(row_key)
        return lost

    def settle(self, updates: Mapping[Any, Claimed], lost: set[Any]) -> None:
        """Forget the claims that written updates ended (or found lost)."""
        claimed_status = self.table.claimed_status
        self.held.end(
            (claimed.token, row_key)
            for row_key, claimed in updates.items()
            if row_key in lost or claimed.values.get("status", claimed_status) != claimed_status
        )

    def _write_statement(
        self, row_key: Any, token: str | None, values: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """The guarded ``UPDATE`` of one row and its parameters. Plain values are bound
        at execution into a statement built once per set of columns (building one and
        hashing it for the statement cache cost more than running it); a value that is
        an SQL expression (``attempts - 1``) is built into a statement of its own."""
        model, key = self.table.model, self._column(self.table.key)
        token_column = self._column("claim_token")
        if any(isinstance(v, ClauseElement) for v in values.values()):
            built = update(model).where(key == row_key, token_column == token).values(**values)
            return built, {}
        names = tuple(sorted(values))
        statement = self._writes.get(names)
        if statement is None:
            statement = (
                update(model)
                .where(key == bindparam("w_key"), token_column == bindparam("w_token"))
                .values({self._column(n): bindparam(f"w_{n}") for n in names})
            )
            self._writes[names] = statement  # two threads racing here build the same
        params = {f"w_{n}": v for n, v in values.items()}
        params.update(w_key=row_key, w_token=token)
        return statement, params

    @contextmanager
    def renewing(self, rows: Iterable[Any], every: float | None = None) -> Iterator[None]:
        """While the block runs, renew the leases of these claimed rows (as loaded by a
        claim) every ``every`` seconds, a third of the lease by default, from a thread
        of its own. A row whose claim ended (its result written) or was lost is renewed
        no more; leaving the block stops the renewals."""
        claims = {getattr(row, self.table.key): Claimed(row.claim_token, {}) for row in rows}
        if not claims:
            yield
            return
        stop = threading.Event()
        interval = self.lease.total_seconds() / 3 if every is None else every
        name = f"renew {self.table.model.__tablename__}"
        thread = threading.Thread(target=self._renew, args=(claims, stop, interval), name=name)
        thread.daemon = True
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _renew(self, claims: dict[Any, Claimed], stop: threading.Event, interval: float) -> None:
        while claims and not stop.wait(interval):
            # One row per transaction: the worker's own writes lock several rows at
            # once, and two transactions locking rows in different orders deadlock.
            for row_key, claimed in list(claims.items()):
                if stop.is_set():
                    return
                try:
                    if self.write({row_key: claimed}):
                        del claims[row_key]  # its result was written, or the claim lost
                except Exception:  # the database went away a while: try again next time
                    log.exception("could not renew the lease of %s", row_key)

    def release_all(self) -> int:
        """Give back every row this queue still holds (a worker shutting down): claimable
        again at once, by any worker, instead of after its lease; the attempt is undone.
        Returns how many rows were given back."""
        tokens = self.held.take_all()
        if not tokens:
            return 0
        table = self.table
        undo = {"attempts": self._column("attempts") - 1} if table.counts_attempts else {}
        with transaction(self.db) as db:
            result = db.execute(
                update(table.model)
                .where(
                    self._column("claim_token").in_(tokens),
                    self._column("status") == table.claimed_status,
                )
                .values(
                    status=table.released_status,
                    claim_token=None,
                    lease_until=None,
                    updated_at=utcnow(),
                    **undo,
                )
                .execution_options(synchronize_session=False)
            )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            log.info("%s: gave back %d claimed rows", table.model.__tablename__, count)
        return count


def _bound(value: Any, params: Mapping[str, Any] | None) -> Any:
    """An SQL expression with its bound parameters given their values from ``params``."""
    if params and isinstance(value, ClauseElement):
        return value.params(params)
    return value


def _aware(moment: datetime) -> datetime:
    """A timestamp read back in UTC (SQLite hands back naive ones)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
