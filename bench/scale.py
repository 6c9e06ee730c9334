"""Streamed runs per second at 1, 2 and 4 API processes, against a bare FastAPI app.

appforge runs the way docs/deploy.md deploys it: ``appforge serve --workers N
--no-worker --no-ui`` (N uvicorn processes sharing one port) on PostgreSQL (a
database made for the benchmark on the server at ``APPFORGE_BENCH_POSTGRES``,
default ``postgresql://postgres@127.0.0.1:5432``, dropped at the end; or
``--sqlite``) and a ``chroma run`` server they share, logs at WARNING, rate limits off,
``APPFORGE_RUNS__MAX_ACTIVE_PER_APP``
256 (the default 16 would refuse half of 32 clients on one app). The model is
``bench/fake_openai.py`` on 127.0.0.1, which answers at once. A one-step text
app (one llm step) is created through the API, then 32 (``--clients``) wrk
connections post streamed runs, ``{"input": {"q": ...}, "stream": true}``, for
``--duration`` seconds, in ``--rounds`` slices alternating with the same load
on the baseline:

- **bare relay**: ``bench/bare_stream.py`` under uvicorn with the same number of
  processes: FastAPI reads the same request, calls the same fake model with
  ``stream: true`` and streams NDJSON lines of the same shape and size (no auth,
  no database, no templates). The goal is measured against it: 1 appforge
  process reaches at least 0.5x its runs/s.
- **recorded relay** (PostgreSQL only): the same relay recording each run in the
  benchmark's database the least a shared, durable record can cost (one INSERT
  before the model call, one UPDATE after, autocommitted, raw psycopg async): what
  recording alone costs on this machine, with no auth, admission, session or
  template. Its ratio to the relay bounds what any server that records its runs in
  PostgreSQL can reach here; appforge's ratio to it is its own overhead;
- **bare bytes**: the same app streaming the same lines without calling the
  model: the floor of FastAPI's streaming on this machine, for scale.

A slice's latency percentiles come from wrk; over several slices they are the
slices' percentiles weighted by their requests. A run counts as bad unless it
is 200 with the model's text in its body. CPU per run is read from /proc for
the server's process tree, PostgreSQL's processes, the fake model and wrk
during the appforge slices: it shows where the time goes. Needs ``wrk``
(``apt-get install -y wrk``).

    python -P bench/scale.py                           # 1, 2, 4 processes, 32 clients, 10 s
    python -P bench/scale.py --procs 1 --duration 4    # quick look
    python -P bench/scale.py --sqlite                  # SQLite in the home instead
    python -P bench/scale.py --procs 1 --src /work/main   # another checkout (before/after)
    python -P bench/scale.py --procs 1 --run-workers 4    # fewer run threads per process

``-P`` keeps ``bench/`` off the front of ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

PG_SERVER = os.environ.get("APPFORGE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
GOAL_RATIO = 0.5
BODY = json.dumps({"input": {"q": h.QUESTION}, "stream": True})
JSON_HEADERS = {"Content-Type": "application/json"}


# -- CPU by process group ---------------------------------------------------------------


def _processes() -> dict[int, tuple[str, int, float]]:
    """Every process: pid -> (command name, parent pid, CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return found


def _tree(procs: dict[int, tuple[str, int, float]], root: int) -> set[int]:
    pids, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, (_, ppid, _) in procs.items() if ppid == parent]
        pids.update(children)
        todo.extend(children)
    return pids


@dataclass
class CpuGroups:
    """CPU seconds used by each group of processes between ``start`` and ``stop``."""

    server_pid: int
    fake_pid: int
    seconds: dict[str, float] = field(default_factory=dict)
    _before: dict[int, tuple[str, int, float]] = field(default_factory=dict)

    def _groups(self, procs: dict[int, tuple[str, int, float]]) -> dict[int, str]:
        server = _tree(procs, self.server_pid)
        groups: dict[int, str] = {}
        for pid, (name, _, _) in procs.items():
            if pid in server:
                groups[pid] = "appforge"
            elif pid == self.fake_pid:
                groups[pid] = "fake model"
            elif name.startswith("postgres"):
                groups[pid] = "postgres"
            elif name == "wrk":
                groups[pid] = "wrk"
        return groups

    def start(self) -> None:
        self._before = _processes()

    def stop(self) -> None:
        after = _processes()
        for pid, group in self._groups(after).items():
            before = self._before.get(pid, ("", 0, 0.0))[2]
            used = after[pid][2] - before
            self.seconds[group] = self.seconds.get(group, 0.0) + used


# -- servers -------------------------------------------------------------------------------


def _make_database() -> str:
    import psycopg

    name = f"appforge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}"


def _drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_chroma(log_dir: Path) -> h.Server:
    """A ``chroma run`` server (telemetry off) for the appforge processes to share, as
    docs/deploy.md deploys them (``serve --workers N`` refuses an embedded Chroma)."""
    port = h.free_port()
    exe = str(Path(sys.executable).parent / "chroma")
    argv = [exe, "run", "--path", str(log_dir / "chroma"), "--host", h.HOST, "--port", str(port)]
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc, log_path, log_file = h._spawn("chroma", argv, cwd=log_dir, env=env, log_dir=log_dir)
    server = h.Server("chroma", proc, f"http://{h.HOST}:{port}", log_path, log_file)
    h.wait_http(server, "/api/v2/heartbeat", 120)
    return server


def start_serve(
    procs: int,
    home: Path,
    log_dir: Path,
    servers: tuple[h.Server, h.Server],
    db: str | None,
    src: Path,
    run_workers: int | None = None,
) -> h.Server:
    """``appforge serve --workers procs --no-worker --no-ui`` from the checkout ``src``, on
    the fake model and Chroma server of ``servers``."""
    fake, chroma = servers
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPFORGE_")}
    env.update(
        APPFORGE_HOME=str(home),
        APPFORGE_ADMIN_TOKEN=h.TOKEN,
        APPFORGE_RATE_LIMIT__ENABLED="false",
        # Runs of one app at once are counted over all processes: room for every client.
        APPFORGE_RUNS__MAX_ACTIVE_PER_APP="256",
        APPFORGE_LOG_LEVEL="WARNING",
        APPFORGE_OPENAI__BASE_URL=f"{fake.base}/v1",
        APPFORGE_OPENAI__API_KEY="x",
        APPFORGE_MODELS='{"default": "openai:fake"}',
        APPFORGE_CHROMA_URL=chroma.base,
        PYTHONPATH=str(src),
    )
    if db is not None:
        env["APPFORGE_DATABASE_URL"] = db
    if run_workers is not None:
        env["APPFORGE_RUNS__WORKERS"] = str(run_workers)
    port = h.free_port()
    exe = str(Path(sys.executable).parent / "appforge")
    argv = [exe, "serve", "--host", h.HOST, "--port", str(port), "--workers", str(procs)]
    argv += ["--no-worker", "--no-ui"]
    proc, log_path, log_file = h._spawn(
        f"appforge-{procs}", argv, cwd=src, env=env, log_dir=log_dir
    )
    server = h.Server(f"appforge x{procs}", proc, f"http://{h.HOST}:{port}", log_path, log_file)
    h.wait_http(server, "/api/health", 180)
    return server


def start_bare(procs: int, log_dir: Path, fake: h.Server, db: str | None) -> h.Server:
    """``bench/bare_stream.py`` under uvicorn with ``procs`` processes (recording its
    runs in ``db`` on ``/run-recorded``)."""
    env = {**os.environ, "BENCH_MODEL_URL": f"{fake.base}/v1"}
    if db is not None:
        env["BENCH_DATABASE_URL"] = db
    port = h.free_port()
    argv = [sys.executable, "-m", "uvicorn", "bare_stream:create_app", "--factory"]
    argv += ["--app-dir", str(h.BENCH_DIR), "--host", h.HOST, "--port", str(port)]
    argv += ["--workers", str(procs), "--log-level", "warning"]
    proc, log_path, log_file = h._spawn(
        f"bare-{procs}", argv, cwd=h.BENCH_DIR, env=env, log_dir=log_dir
    )
    server = h.Server(f"bare x{procs}", proc, f"http://{h.HOST}:{port}", log_path, log_file)
    h.wait_http(server, "/health", 60)
    return server


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Row:
    procs: int
    appforge: h.Load = field(default_factory=h.Load)
    relay: h.Load = field(default_factory=h.Load)
    recorded: h.Load = field(default_factory=h.Load)
    floor: h.Load = field(default_factory=h.Load)
    cpu: dict[str, float] = field(default_factory=dict)
    relay_cpu: dict[str, float] = field(default_factory=dict)
    recorded_cpu: dict[str, float] = field(default_factory=dict)
    body_bytes: tuple[int, int] = (0, 0)  # one streamed answer: appforge's, the bare app's


def _loader(url: str, clients: int, headers: dict[str, str]) -> Callable[[float], h.Load]:
    def load(seconds: float) -> h.Load:
        return h.wrk_load(
            url, seconds, clients, method="POST", body=BODY, headers=headers, expect=h.EXPECTED
        )

    return load


def _one_body(server: h.Server, path: str, headers: dict[str, str]) -> int:
    client = h.Client(server.base)
    try:
        status, data = client.request("POST", path, BODY.encode(), headers)
    finally:
        client.close()
    if status != 200 or h.EXPECTED.encode() not in data:
        raise RuntimeError(f"{server.name} {path}: {status} {data[:300]!r}")
    return len(data)


def measure(
    args: argparse.Namespace, procs: int, tmp: Path, fake: h.Server, chroma: h.Server
) -> Row:
    """One process count: appforge and the bare app side by side, slices alternating."""
    row = Row(procs)
    db = None if args.sqlite else _make_database()
    servers: list[h.Server] = []
    try:
        home = tmp / f"home-{procs}"
        servers.append(
            start_serve(procs, home, tmp, (fake, chroma), db, args.src, args.run_workers)
        )
        servers.append(start_bare(procs, tmp, fake, db))
        app, bare = servers
        auth = {**JSON_HEADERS, "Authorization": f"Token {h.TOKEN}"}
        run_path = f"/api/apps/{h.create_app(app, 16)}/run"
        row.body_bytes = (_one_body(app, run_path, auth), _one_body(bare, "/run", JSON_HEADERS))
        loads = {
            "appforge": _loader(app.base + run_path, args.clients, auth),
            "relay": _loader(bare.base + "/run", args.clients, JSON_HEADERS),
            "floor": _loader(bare.base + "/bytes", args.clients, JSON_HEADERS),
        }
        if db is not None:
            loads["recorded"] = _loader(bare.base + "/run-recorded", args.clients, JSON_HEADERS)
        for load in loads.values():  # warm every process of both servers
            load(args.warmup)
        cpu = CpuGroups(app.proc.pid, fake.proc.pid)
        # The relay's server counts as "appforge" in its groups.
        relay_cpu = CpuGroups(bare.proc.pid, fake.proc.pid)
        recorded_cpu = CpuGroups(bare.proc.pid, fake.proc.pid)
        slice_s = args.duration / args.rounds
        for _ in range(args.rounds):
            cpu.start()
            row.appforge.add(loads["appforge"](slice_s))
            cpu.stop()
            relay_cpu.start()
            row.relay.add(loads["relay"](slice_s))
            relay_cpu.stop()
            row.floor.add(loads["floor"](slice_s))
            if "recorded" in loads:
                recorded_cpu.start()
                row.recorded.add(loads["recorded"](slice_s))
                recorded_cpu.stop()
        row.cpu = {**cpu.seconds, "wrk": row.appforge.generator_cpu}
        row.relay_cpu = {**relay_cpu.seconds, "wrk": row.relay.generator_cpu}
        row.recorded_cpu = {**recorded_cpu.seconds, "wrk": row.recorded.generator_cpu}
    finally:
        for server in servers:
            server.stop()
        if db is not None:
            _drop_database(db)
    return row


# -- report -------------------------------------------------------------------------------------


def _cells(load: h.Load) -> str:
    p50, p95 = load.latency_ms(0.5), load.latency_ms(0.95)
    return f"{load.rps:>9.0f}{h.fmt(p50, 1):>8}{h.fmt(p95, 1):>8}"


def report(args: argparse.Namespace, rows: list[Row], load_avg: tuple[float, ...]) -> None:
    storage = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"appforge scale-out: streamed runs, {args.clients} clients (wrk, 1 thread), {storage}")
    workers = f", APPFORGE_RUNS__WORKERS={args.run_workers}" if args.run_workers else ""
    print(f"  appforge from {args.src}{workers}")
    print(f"  {args.duration:g} s per system and process count, in {args.rounds} slices")
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in load_avg)}; {os.cpu_count()} CPUs")
    print()
    head = f"{'runs/s':>9}{'p50 ms':>8}{'p95 ms':>8}"
    names = ("appforge", "bare relay", "recorded relay", "bare bytes")
    print(f"  {'procs':<6}" + "".join(f"{name:>25}" for name in names) + f"{'ratio':>8}")
    print(f"  {'':<6}{head * len(names)}{'':>8}")
    for row in rows:
        ratio = row.appforge.rps / row.relay.rps if row.relay.rps else 0.0
        cells = _cells(row.appforge) + _cells(row.relay) + _cells(row.recorded) + _cells(row.floor)
        print(f"  {row.procs:<6}{cells}{ratio:>7.2f}x")
    print("  ratio: appforge's runs/s over the bare relay's")
    print()
    print("  CPU ms per run during its slices (from /proc; server: appforge or the relay):")
    for row in rows:
        for name, load, cpu in (
            ("appforge", row.appforge, row.cpu),
            ("bare relay", row.relay, row.relay_cpu),
            ("recorded relay", row.recorded, row.recorded_cpu),
        ):
            if not load.requests:
                continue
            parts = ", ".join(
                f"{'server' if group == 'appforge' else group} {seconds * 1000 / load.requests:.2f}"
                for group, seconds in sorted(cpu.items())
            )
            print(f"    {row.procs} procs, {name}: {parts}")
    sizes = ", ".join(f"{r.body_bytes[0]}/{r.body_bytes[1]}" for r in rows)
    print(f"  bytes of one streamed answer, appforge/bare: {sizes}")
    for row in rows:
        if row.recorded.rps and row.relay.rps:
            bound, own = row.recorded.rps / row.relay.rps, row.appforge.rps / row.recorded.rps
            print(
                f"  {row.procs} procs: recording alone keeps the relay to {bound:.2f}x;"
                f" appforge reaches {own:.2f}x of the recorded relay"
            )
    for row in rows:
        loads = (("appforge", row.appforge), ("relay", row.relay), ("recorded", row.recorded))
        for name, load in (*loads, ("bytes", row.floor)):
            if load.bad or load.errors:
                print(f"  {row.procs} procs {name}: {load.bad} bad, errors {load.errors}")
    one = next((r for r in rows if r.procs == 1), None)
    if one is not None and one.relay.rps:
        ratio = one.appforge.rps / one.relay.rps
        verdict = "met" if ratio >= GOAL_RATIO else "missed"
        goal = f"1 process >= {GOAL_RATIO}x the bare relay's runs/s"
        print(f"  goal: {goal}: {ratio:.2f}x, {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", default="1,2,4", help="API process counts, comma-separated")
    parser.add_argument("--clients", type=int, default=32, help="concurrent streaming clients")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per system")
    parser.add_argument("--rounds", type=int, default=2, help="slices per system")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--src", type=Path, default=h.REPO_DIR, help="appforge checkout to run")
    parser.add_argument(
        "--run-workers", type=int, help="APPFORGE_RUNS__WORKERS of appforge (default: its own)"
    )
    args = parser.parse_args()
    if not h.have_wrk():
        sys.exit("bench/scale.py needs wrk (apt-get install -y wrk)")
    load_avg = os.getloadavg()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="appforge-scale-") as tmp:
        fake = h.start_fake(Path(tmp))
        chroma = start_chroma(Path(tmp))
        try:
            for procs in (int(p) for p in args.procs.split(",")):
                rows.append(measure(args, procs, Path(tmp), fake, chroma))
        finally:
            chroma.stop()
            fake.stop()
    report(args, rows, load_avg)


if __name__ == "__main__":
    main()
