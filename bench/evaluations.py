"""An evaluation's cost per case, against the same runs sent straight to the run API.

appforge runs as its own server process (``harness.start_appforge``: uvicorn
from the source checkout, a fresh ``APPFORGE_HOME`` on SQLite, rate limiting
off), its ``default`` model being ``bench/fake_openai.py`` on 127.0.0.1, which
answers a fixed text at once. The one-step bench app (``harness.APP_YAML``) is
created, and a dataset of ``--cases`` (100) cases, each expecting that text.
The server gets ``APPFORGE_EVALS__WORKERS`` = ``--concurrency``, so one
evaluation can run that many cases at once. Then, in ``--rounds`` alternating
rounds (after a warm-up of each):

- direct: the same cases' inputs sent as ``POST /api/apps/<uuid>/run``
  (non-streamed) by ``--concurrency`` (8) threads, each on its own keep-alive
  connection, until all are answered; the time from the first request to the
  last answer;
- evaluation: ``POST /api/evaluations`` over the dataset at ``concurrency`` 8
  with one ``equals`` scorer; the time from sending it to the evaluation's
  ``finished_at`` (the server's clock, which is this machine's), checked by
  polling ``GET /api/evaluations/<id>`` every second.

It prints the median of each side, their ratio (goal: evaluation at most 1.2x
direct), and the server's CPU per case on each side (from /proc), which is
what bounds both on a machine with few cores.

    python -P bench/evaluations.py
    python -P bench/evaluations.py --cases 100 --concurrency 8 --rounds 5
    python -P bench/evaluations.py --src /work/wt-before    # another checkout

``-P`` keeps ``bench/`` off the front of ``sys.path`` (``bench/providers.py``
would shadow the ``providers`` package).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

GOAL_RATIO = 1.2
JSON = {"Content-Type": "application/json"}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--src", type=Path, default=h.REPO_DIR, help="appforge checkout to run")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side")
    parser.add_argument("--max-tokens", type=int, default=4)
    return parser.parse_args()


def _post(client: h.Client, path: str, body: object, expect: int) -> dict[str, object]:
    status, data = client.request("POST", path, json.dumps(body).encode(), JSON)
    if status != expect:
        raise RuntimeError(f"POST {path} gave {status}: {data[:500]!r}")
    answer: dict[str, object] = json.loads(data)
    return answer


def _inputs(count: int) -> list[dict[str, str]]:
    return [{"q": f"{h.QUESTION} ({n})"} for n in range(count)]


@dataclass
class Side:
    """One side's rounds: seconds each, and the server's CPU seconds each."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class Bench:
    def __init__(self, args: argparse.Namespace, server: h.Server, uuid: str) -> None:
        self.args, self.server, self.uuid = args, server, uuid
        self.client = h.Client(server.base, auth=True)
        self.inputs = _inputs(args.cases)

    def make_dataset(self) -> None:
        _post(self.client, "/api/datasets", {"name": "bench"}, 201)
        cases = [{"input": i, "expected": {"a": h.EXPECTED}} for i in self.inputs]
        _post(self.client, "/api/datasets/bench/cases", {"cases": cases}, 201)

    def direct(self, inputs: list[dict[str, str]]) -> float:
        """Send these runs from ``--concurrency`` threads; seconds until the last answer."""
        todo = list(reversed(inputs))
        lock = threading.Lock()
        failures: list[str] = []
        path = f"/api/apps/{self.uuid}/run"

        def worker() -> None:
            client = h.Client(self.server.base, auth=True)
            try:
                while True:
                    with lock:
                        if not todo:
                            return
                        given = todo.pop()
                    body = json.dumps({"input": given}).encode()
                    status, data = client.request("POST", path, body, JSON)
                    if status != 200 or h.EXPECTED.encode() not in data:
                        failures.append(f"{status} {data[:200]!r}")
            finally:
                client.close()

        threads = [threading.Thread(target=worker) for _ in range(self.args.concurrency)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"{len(failures)} runs failed, the first: {failures[0]}")
        return elapsed

    def evaluation(self) -> float:
        """One evaluation of the dataset; seconds from sending it to its ``finished_at``."""
        body = {
            "dataset": "bench",
            "app": self.uuid,
            "scorers": [{"type": "equals", "output": "a"}],
            "concurrency": self.args.concurrency,
        }
        sent = time.time()
        evaluation_id = _post(self.client, "/api/evaluations", body, 202)["id"]
        while True:
            time.sleep(1.0)
            info = self.client.get_json(f"/api/evaluations/{evaluation_id}")
            if info["status"] not in ("queued", "running"):
                break
        passed = info["summary"]["cases_passed"]
        if info["status"] != "done" or passed != self.args.cases:
            raise RuntimeError(f"evaluation ended {info['status']}, {passed} passed: {info}")
        finished = datetime.fromisoformat(info["finished_at"].replace("Z", "+00:00"))
        return finished.timestamp() - sent

    def measured(self, fn: object) -> tuple[float, float]:
        """(seconds, server CPU seconds) of one call of ``fn``."""
        assert callable(fn)
        cpu = h.cpu_seconds(self.server.proc.pid)
        seconds = fn()
        return float(seconds), h.cpu_seconds(self.server.proc.pid) - cpu


def _measure(args: argparse.Namespace, tmp: Path) -> tuple[Side, Side, str]:
    fake = h.start_fake(tmp)
    server = None
    try:
        origin = h.appforge_source(args.src)
        workers = {"APPFORGE_EVALS__WORKERS": str(args.concurrency)}
        server = h.start_appforge(
            "appforge",
            args.src,
            tmp / "home",
            tmp,
            openai_base=f"{fake.base}/v1",
            extra_env=workers,
        )
        bench = Bench(args, server, h.create_app(server, args.max_tokens))
        bench.make_dataset()
        bench.direct(_inputs(2 * args.concurrency))  # warm-up of both sides
        bench.evaluation()
        direct, evaluation = Side(), Side()
        for _ in range(args.rounds):
            for side, fn in (
                (direct, lambda: bench.direct(bench.inputs)),
                (evaluation, bench.evaluation),
            ):
                seconds, cpu = bench.measured(fn)
                side.seconds.append(seconds)
                side.cpu.append(cpu)
        bench.client.close()
        return direct, evaluation, origin
    finally:
        if server is not None:
            server.stop()
        fake.stop()


def _report(args: argparse.Namespace, direct: Side, evaluation: Side, origin: str) -> None:
    print(
        f"evaluation of {args.cases} cases vs the same runs sent to the run API, "
        f"concurrency {args.concurrency}"
    )
    print("  model:  fake OpenAI-compatible server on 127.0.0.1 (bench/fake_openai.py)")
    print(f"  server: {origin}")
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(f"  {'side':<44}{'median s':>10}{'CPU ms/case':>13}  rounds s")
    for label, side in (
        ("direct: POST /api/apps/<uuid>/run x N", direct),
        ("evaluation: POST /api/evaluations", evaluation),
    ):
        rounds = " ".join(f"{s:.2f}" for s in side.seconds)
        cpu = 1000 * statistics.median(side.cpu) / args.cases
        print(f"  {label:<44}{side.median:>10.2f}{cpu:>13.2f}  {rounds}")
    ratio = evaluation.median / direct.median
    print()
    print(f"  ratio evaluation/direct: {ratio:.2f}x (goal: at most {GOAL_RATIO:g}x)")
    print(f"  goal met: {'yes' if ratio <= GOAL_RATIO else 'no'}")


def main() -> None:
    args = _arguments()
    args.src = args.src.resolve()
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        direct, evaluation, origin = _measure(args, Path(tmp))
    _report(args, direct, evaluation, origin)


if __name__ == "__main__":
    main()
