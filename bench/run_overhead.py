"""The runtime's own overhead per run, against calling the same model directly.

A one-step text app (one llm step, the bundled local model, temperature 0,
few tokens) is run N times non-streamed through the real API over loopback
HTTP (uvicorn in a thread, one keep-alive httpx client), and the same messages
are sent N times straight to the provider. Runs are interleaved so drift in
the machine's speed hits both sides alike. Prints p50/p95 of each, the paired
overhead (API - direct) with the ratio, and the in-request overhead (request
time minus the llm step's own time, read from the stored run), which is free
of the model's run-to-run jitter.

    .venv/bin/python bench/run_overhead.py [--runs 60] [--max-tokens 4]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

from api.app import create_app
from appforge.settings import LocalModelSettings, Settings
from providers.base import GenerationParams
from providers.local import LocalProvider

TOKEN = "af_bench_token_0123456789abcdef"

APP = """\
version: 1
name: Bench
input:
  q: {{type: string, required: true}}
steps:
  - id: a
    kind: llm
    prompt:
      system: You are terse.
      user: "{{{{ input.q }}}}"
    params: {{temperature: 0, seed: 1, max_tokens: {max_tokens}}}
output:
  a: "{{{{ a.text }}}}"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()

    provider = LocalProvider(LocalModelSettings())
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), admin_token=SecretStr(TOKEN))
        app = create_app(settings, providers={"local": provider})
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Token {TOKEN}"}, timeout=60
        ) as client:
            uuid = client.post(
                "/api/apps",
                content=APP.format(max_tokens=args.max_tokens),
                headers={"Content-Type": "application/yaml"},
            ).json()["uuid"]
            question = "Say hi"
            messages = [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": question},
            ]
            params = GenerationParams(temperature=0, seed=1, max_tokens=args.max_tokens)
            body = {"input": {"q": question}}
            # warm up both paths (model load, first SQLite writes, import caches)
            for _ in range(3):
                client.post(f"/api/apps/{uuid}/run", json=body)
                provider.complete("smollm2", messages, params)  # type: ignore[arg-type]
            api_ms: list[float] = []
            direct_ms: list[float] = []
            inside_ms: list[float] = []  # request time minus the model call in that request
            for _ in range(args.runs):
                t = time.perf_counter()
                r = client.post(f"/api/apps/{uuid}/run", json=body)
                elapsed = (time.perf_counter() - t) * 1000
                api_ms.append(elapsed)
                assert r.status_code == 200, r.text
                run = client.get(f"/api/runs/{r.json()['run']['id']}").json()
                inside_ms.append(elapsed - run["steps"][0]["latency_ms"])
                t = time.perf_counter()
                provider.complete("smollm2", messages, params)  # type: ignore[arg-type]
                direct_ms.append((time.perf_counter() - t) * 1000)
        server.should_exit = True
        thread.join(timeout=10)
    provider.close()

    overhead = [a - d for a, d in zip(api_ms, direct_ms, strict=True)]
    p50_api, p50_direct = statistics.median(api_ms), statistics.median(direct_ms)
    print(f"one-step app, local SmolLM2, max_tokens={args.max_tokens}, {args.runs} runs each")
    print(f"{'path':<34}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'model called directly':<34}{p50_direct:>10.2f}{_pct(direct_ms, 0.95):>10.2f}")
    print(f"{'POST /api/apps/<uuid>/run (HTTP)':<34}{p50_api:>10.2f}{_pct(api_ms, 0.95):>10.2f}")
    print(
        f"{'overhead per run (paired)':<34}{statistics.median(overhead):>10.2f}"
        f"{_pct(overhead, 0.95):>10.2f}"
    )
    print(
        f"{'overhead in-request (time - step)':<34}{statistics.median(inside_ms):>10.2f}"
        f"{_pct(inside_ms, 0.95):>10.2f}"
    )
    print(f"ratio api/direct (p50): {p50_api / p50_direct:.3f}   goal: overhead p50 < 5 ms")
    print("(paired: API run minus the next direct call, noisy with the model's own jitter;")
    print(" in-request: the HTTP request time minus its own llm step, so no model jitter)")


if __name__ == "__main__":
    main()
