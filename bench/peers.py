"""appforge next to PromptMage on the same instant model: run overhead, side by side.

Every system serves the same one-step text app (one model call with a system
and a user message, the answer's text returned) and calls the same
``bench/fake_openai.py`` on 127.0.0.1, which answers at once:

- **direct**: the fake server called with the openai SDK from this process
  (``chat.completions.create``), the floor every other row stands on;
- **appforge**: this checkout as its own server (``python -m uvicorn
  api.app:from_environment --factory --log-level warning``, SQLite, fresh
  home, rate limits off), the app created through ``POST /api/apps`` and run
  with ``POST /api/apps/<uuid>/run``;
- **appforge before** (with ``--before DIR``): the same from another checkout;
- **PromptMage 0.1.4**, in its own venv ``bench/.peers-venv`` (made on first
  use with ``python -m venv`` and ``pip install promptmage==0.1.4 openai==<the
  openai version of this venv>``, so both sides use the same SDK). Served the
  way its docs say, ``promptmage run flow.py --host 127.0.0.1 --port P``: the
  flow file has one ``@mage.step(prompt_name=..., initial=True)`` that calls the
  fake server with the openai SDK, using an active prompt stored beforehand in
  its SQLite prompt store (what its GUI does). Its run endpoint is
  ``GET /api/<flow>/run_flow/<q>``. PromptMage's defaults are kept (INFO logs
  from loguru and uvicorn, sent to a file), as are appforge's.

Columns: p50 (and p95) per run over ``--runs`` sequential runs on one
keep-alive connection (``http.client``); runs/s at ``--concurrency`` 8 for
``--duration`` seconds, driven by wrk (one thread; the direct row by 8 Python
threads in this process, since the SDK's client cost is what it measures);
idle memory, the RSS of the server's process tree after the warm-up. Systems
are interleaved: sequential runs in batches of ``--batch`` per system, load in
``--rounds`` slices per system, the order rotating each round, so drift in the
machine's speed hits all alike.

    python -P bench/peers.py                                  # defaults: 200 runs, 20 s
    python -P bench/peers.py --before /work/wt-before
    python -P bench/peers.py --runs 40 --duration 4 --no-promptmage   # quick look

Worth knowing when reading PromptMage's row: its endpoint is an ``async def``
that runs the flow synchronously, so it serves one run at a time on its event
loop, and its SQLite store (rollback journal, default ``synchronous``) calls
``fdatasync`` about four times per run, so its figures follow the disk's fsync
latency; appforge's SQLite is in WAL mode with ``synchronous=NORMAL``. "bad
answers" counts runs that were not 200 with the model's text (sequential and
under load). Flowise and Langflow are not included.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

PROMPTMAGE_VERSION = "0.1.4"
VENV = h.BENCH_DIR / ".peers-venv"

FLOW_PY = '''\
"""One PromptMage step: the stored prompt's system and user message, one model call."""

import os

from openai import OpenAI
from promptmage import MageResult, Prompt, PromptMage

client = OpenAI(base_url=os.environ["BENCH_OPENAI_BASE_URL"], api_key="x", max_retries=0)
MAX_TOKENS = int(os.environ["BENCH_MAX_TOKENS"])
mage = PromptMage(name="bench")


@mage.step(name="answer", prompt_name="answer", initial=True)
def answer(q: str, prompt: Prompt) -> MageResult:
    messages = [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user.format(q=q)},
    ]
    response = client.chat.completions.create(
        model="fake", messages=messages, temperature=0, seed=1, max_tokens=MAX_TOKENS
    )
    return MageResult(text=response.choices[0].message.content)
'''

SEED_PY = """\
from pathlib import Path

from promptmage.prompt import Prompt
from promptmage.storage import SQLitePromptBackend

Path(".promptmage").mkdir(exist_ok=True)
SQLitePromptBackend().store_prompt(
    Prompt(name="answer", system={system!r}, user="{{q}}", template_vars=["q"], active=True)
)
"""


class System:
    """One column of the table: a sequential call, a load, a memory reading."""

    name = ""

    def call(self) -> bool:
        raise NotImplementedError

    def load(self, seconds: float, concurrency: int) -> h.Load:
        raise NotImplementedError

    def rss_mb(self) -> float | None:
        return None

    def stop(self) -> None:
        return None


class Direct(System):
    def __init__(self, fake: h.Server, max_tokens: int) -> None:
        import openai

        self.name = "the model server called with the openai SDK"
        self.client = openai.OpenAI(base_url=f"{fake.base}/v1", api_key="x", max_retries=0)
        self.max_tokens = max_tokens

    def call(self) -> bool:
        response = self.client.chat.completions.create(
            model="fake",
            messages=[
                {"role": "system", "content": h.SYSTEM},
                {"role": "user", "content": h.QUESTION},
            ],
            temperature=0,
            seed=1,
            max_tokens=self.max_tokens,
        )
        return response.choices[0].message.content == h.EXPECTED

    def load(self, seconds: float, concurrency: int) -> h.Load:
        return h.thread_load([self.call] * concurrency, seconds)


class HttpSystem(System):
    """A server process run over HTTP: sequential calls on one connection, load by wrk."""

    def __init__(
        self, name: str, server: h.Server, method: str, path: str, body: bytes | None, auth: bool
    ) -> None:
        self.name = name
        self.server = server
        self.method, self.path, self.body = method, path, body
        self.client = h.Client(server.base, auth=auth)
        self.headers = {"Content-Type": "application/json"} if body is not None else {}

    def call(self) -> bool:
        status, data = self.client.request(self.method, self.path, self.body, self.headers)
        return status == 200 and h.EXPECTED.encode() in data

    def load(self, seconds: float, concurrency: int) -> h.Load:
        load = h.wrk_load if h.have_wrk() else h.http_load
        return load(
            self.server.base + self.path,
            seconds,
            concurrency,
            method=self.method,
            body=self.body.decode() if self.body is not None else None,
            headers={**self.client.headers, **self.headers},
        )

    def rss_mb(self) -> float | None:
        return self.server.rss_mb()

    def stop(self) -> None:
        self.client.close()
        self.server.stop()


def appforge(
    name: str, slug: str, src: Path, tmp: Path, fake: h.Server, max_tokens: int
) -> HttpSystem:
    server = h.start_appforge(slug, src, tmp / f"home-{slug}", tmp, openai_base=f"{fake.base}/v1")
    try:
        uuid = h.create_app(server, max_tokens)
    except Exception:
        server.stop()
        raise
    body = json.dumps({"input": {"q": h.QUESTION}}).encode()
    return HttpSystem(name, server, "POST", f"/api/apps/{uuid}/run", body, auth=True)


def ensure_venv() -> Path:
    """bench/.peers-venv with promptmage==0.1.4 and this venv's openai version."""
    python = VENV / "bin" / "python"
    want = {"promptmage": PROMPTMAGE_VERSION, "openai": importlib.metadata.version("openai")}
    if not python.exists():
        print(f"creating {VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"  # noqa: E501
    have = subprocess.run([str(python), "-c", probe, *want], capture_output=True, text=True)
    if have.returncode != 0 or json.loads(have.stdout) != want:
        print(f"installing {want} into {VENV} ...", file=sys.stderr)
        pins = [f"{name}=={version}" for name, version in want.items()]
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *pins], capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"pip install {' '.join(pins)} failed:\n{done.stderr[-3000:]}")
    return VENV


def promptmage(tmp: Path, fake: h.Server, max_tokens: int) -> HttpSystem:
    venv = ensure_venv()
    work = tmp / "promptmage"
    work.mkdir()
    (work / "flow.py").write_text(FLOW_PY)
    (work / "seed.py").write_text(SEED_PY.format(system=h.SYSTEM))
    subprocess.run(
        [str(venv / "bin" / "python"), "seed.py"], cwd=work, check=True, capture_output=True
    )
    env = {
        **os.environ,
        "BENCH_OPENAI_BASE_URL": f"{fake.base}/v1",
        "BENCH_MAX_TOKENS": str(max_tokens),
    }
    port = h.free_port()
    argv = [
        str(venv / "bin" / "promptmage"),
        "run",
        "flow.py",
        "--host",
        h.HOST,
        "--port",
        str(port),
    ]
    log_path = tmp / "promptmage.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        argv, cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    server = h.Server("promptmage", proc, f"http://{h.HOST}:{port}", log_path, log_file)
    h.wait_http(server, "/api/flows", 120)
    path = "/api/bench/run_flow/" + urllib.parse.quote(h.QUESTION)
    return HttpSystem(f"PromptMage {PROMPTMAGE_VERSION}", server, "GET", path, None, auth=False)


def rotate(items: list[System], by: int) -> list[System]:
    k = by % len(items)
    return items[k:] + items[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--before", type=Path, help="also run appforge from this checkout")
    parser.add_argument("--runs", type=int, default=200, help="sequential runs per system")
    parser.add_argument("--batch", type=int, default=10, help="sequential runs per turn")
    parser.add_argument("--warmup", type=int, default=20, help="runs per system before measuring")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per system")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="slices of the load per system")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--no-current", action="store_true", help="skip this checkout")
    parser.add_argument("--no-promptmage", action="store_true")
    args = parser.parse_args()

    systems: list[System] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="af-peers-") as tmp_name:
        tmp = Path(tmp_name)
        fake = h.start_fake(tmp)
        try:
            systems.append(Direct(fake, args.max_tokens))
            wanted: list[tuple[str, Callable[[str], System]]] = []
            if not args.no_current:
                wanted.append(
                    (
                        f"appforge ({h.REPO_DIR})",
                        lambda n: appforge(n, "appforge", h.REPO_DIR, tmp, fake, args.max_tokens),
                    )
                )
            if args.before is not None:
                before = args.before.resolve()
                wanted.append(
                    (
                        f"appforge before ({before})",
                        lambda n: appforge(
                            n, "appforge-before", before, tmp, fake, args.max_tokens
                        ),
                    )
                )
            if not args.no_promptmage:
                wanted.append(
                    (
                        f"PromptMage {PROMPTMAGE_VERSION}",
                        lambda n: promptmage(tmp, fake, args.max_tokens),
                    )
                )
            for name, start in wanted:
                try:
                    systems.append(start(name))
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    failed[name] = str(exc).strip().splitlines()[-1] if str(exc) else repr(exc)
                    print(f"{name} did not start: {exc}", file=sys.stderr)
            results = measure(systems, args)
        finally:
            for system in systems:
                system.stop()
            fake.stop()
    report(results, failed, args)


def measure(systems: list[System], args: argparse.Namespace) -> list[dict[str, Any]]:
    load_before = os.getloadavg()
    for system in systems:
        for _ in range(args.warmup):
            if not system.call():
                raise RuntimeError(f"{system.name}: a warm-up run gave an unexpected answer")
    time.sleep(2)
    idle = {s.name: s.rss_mb() for s in systems}

    per_run: dict[str, list[float]] = {s.name: [] for s in systems}
    bad: dict[str, int] = {s.name: 0 for s in systems}
    turn = 0
    while any(len(v) < args.runs for v in per_run.values()):
        for system in rotate(systems, turn):
            for _ in range(min(args.batch, args.runs - len(per_run[system.name]))):
                started = time.perf_counter()
                ok = system.call()
                per_run[system.name].append((time.perf_counter() - started) * 1000)
                bad[system.name] += 0 if ok else 1
        turn += 1

    loads = {s.name: h.Load() for s in systems}
    for system in systems:  # a short warm-up of the concurrent path
        system.load(1.0, args.concurrency)
    for round_no in range(args.rounds):
        for system in rotate(systems, round_no):
            loads[system.name].add(system.load(args.duration / args.rounds, args.concurrency))
    load_after = os.getloadavg()
    return [
        {
            "name": s.name,
            "p50": statistics.median(per_run[s.name]),
            "p95": h.pct(per_run[s.name], 0.95),
            "bad": bad[s.name] + loads[s.name].bad,
            "rps": loads[s.name].rps,
            "errors": loads[s.name].errors,
            "rss": idle[s.name],
            "load": (load_before, load_after),
        }
        for s in systems
    ]


def report(results: list[dict[str, Any]], failed: dict[str, str], args: argparse.Namespace) -> None:
    print(
        f"One-step text app, fake OpenAI-compatible model on 127.0.0.1 answering at once; "
        f"{args.runs} sequential runs and {args.duration:g} s at concurrency "
        f"{args.concurrency} per system, interleaved "
        f"(batches of {args.batch}, {args.rounds} load rounds; "
        f"load: {'wrk' if h.have_wrk() else 'Python threads'})."
    )
    if results:
        before, after = results[0]["load"]
        print(f"Load average before {before[0]:.2f}, after {after[0]:.2f} (1 min).")
    print()
    print(
        f"| system | p50 per run | p95 per run | runs/s at concurrency {args.concurrency} "
        f"| idle memory | bad answers |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        rss = "-" if r["rss"] is None else f"{r['rss']:.0f} MB"
        print(
            f"| {r['name']} | {r['p50']:.1f} ms | {r['p95']:.1f} ms | {r['rps']:.0f} "
            f"| {rss} | {r['bad']} |"
        )
    for name, why in failed.items():
        print(f"| {name} | did not start: {why} | | | | |")
    for r in results:
        for error in r["errors"]:
            print(f"{r['name']}: {error}")
    by_name = {r["name"]: r for r in results}
    pm = by_name.get(f"PromptMage {PROMPTMAGE_VERSION}")
    direct = results[0] if results else None
    print()
    for r in results[1:]:
        notes = []
        if direct is not None:
            notes.append(f"p50 {r['p50'] / direct['p50']:.1f}x direct")
        if pm is not None and r is not pm and pm["rps"]:
            notes.append(f"runs/s {r['rps'] / pm['rps']:.2f}x PromptMage")
        print(f"{r['name']}: " + ", ".join(notes))
    current = next((r for r in results if r["name"].startswith("appforge (")), None)
    old = next((r for r in results if r["name"].startswith("appforge before")), None)
    if current is not None and old is not None and old["rps"]:
        print(
            f"appforge now/before: runs/s {current['rps'] / old['rps']:.2f}x (goal >= 2.5x), "
            f"p50 {current['p50']:.1f} vs {old['p50']:.1f} ms"
        )


if __name__ == "__main__":
    main()
