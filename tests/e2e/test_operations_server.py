"""Run as a service, against real processes: SIGTERM mid-stream, metrics summed over two
API processes, a worker giving back its claim, an API process without torch.

The model is a fake OpenAI-compatible server on 127.0.0.1 (the network edge);
everything behind it is real.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_model import FakeModel, serve_model
from fastapi.testclient import TestClient
from log_watch import check_output
from openai_edge import Reply, serve_edge, sse_chunk
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess
from waiting import poll_until

from api.tables import WebhookDelivery
from appforge.core.settings import Settings

TOKEN = "af_operations_admin_token_0123456789"
AUTH = {"Authorization": f"Token {TOKEN}"}
YAML = {"Content-Type": "application/yaml"}
APP = """\
version: 1
name: Talker
type: text
input:
  q: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.q }}"
output:
  answer: "{{ answer.text }}"
"""
LONG = " ".join(f"word{n}" for n in range(400))  # 20 s at the model's pace


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    replies = {"slowly": LONG}
    with serve_model(FakeModel(default="A short answer.", replies=replies)) as m:
        yield m


def _env(model: FakeModel, home: Path, **more: str) -> dict[str, str]:
    return {
        "APPFORGE_HOME": str(home),
        "APPFORGE_ADMIN_TOKEN": TOKEN,
        "APPFORGE_OPENAI__BASE_URL": model.url,
        "APPFORGE_OPENAI__API_KEY": "fake",
        "APPFORGE_MODELS": json.dumps({"default": "openai:fake"}),
        "APPFORGE_RATE_LIMIT__ENABLED": "false",
        **more,
    }


def _stream(base: str, app: str, question: str, lines: list[dict[str, Any]]) -> None:
    body = {"input": {"q": question}, "stream": True}
    with httpx.stream(
        "POST", f"{base}/api/apps/{app}/run", json=body, headers=AUTH, timeout=120
    ) as r:
        for line in r.iter_lines():
            if line:
                lines.append(json.loads(line))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _runs_counted_by_every_process(server: ServerProcess, app: str, folder: Path) -> None:
    """4 runs, then scrapes: whichever API process answers sums both processes' runs."""
    for n in range(4):  # a new connection each: the processes share them out
        r = httpx.post(
            f"{server.base}/api/apps/{app}/run", json={"input": {"q": f"hi {n}"}},
            headers=AUTH, timeout=60,
        )  # fmt: skip
        assert r.status_code == 200, r.text
    assert len({p.stem.rsplit("_", 1)[-1] for p in folder.glob("counter_*.db")}) == 2
    key = ("appforge_runs_total", (("app", app), ("status", "succeeded")))
    for _ in range(6):
        scrape = {"Authorization": f"Bearer {SCRAPE}"}
        text = httpx.get(f"{server.base}/metrics", headers=scrape, timeout=60).text
        assert _samples(text)[key] == 4


SCRAPE = "scrape-token-0123456789"


def test_two_api_processes_count_together_and_drain_on_sigterm(
    start_server: Callable[..., ServerProcess],
    model: FakeModel,
    chroma_server: str,
    tmp_path: Path,
):
    """``serve --workers 2``: metrics summed over both; on SIGTERM a stream that ends
    within the grace ends as usual, one that does not gets its error line, and the
    run is stored ``cancelled`` with what it produced."""
    home, folder = tmp_path / "home", tmp_path / "metrics"
    env = _env(
        model,
        home,
        APPFORGE_CHROMA_URL=chroma_server,  # the processes share datasources
        # Far more than the short answer needs even on a loaded machine, far less
        # than the long one takes (20 s).
        APPFORGE_SHUTDOWN_GRACE_SECONDS="8",
        APPFORGE_LOG_FORMAT="json",
        APPFORGE_METRICS__ENABLED="true",
        APPFORGE_METRICS__TOKEN=SCRAPE,
        PROMETHEUS_MULTIPROC_DIR=str(folder),
    )
    server = start_server(env, ("--workers", "2"))
    app = httpx.post(f"{server.base}/api/apps", content=APP, headers={**AUTH, **YAML}).json()
    _runs_counted_by_every_process(server, app["uuid"], folder)
    short: list[dict[str, Any]] = []
    cut: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=_stream, args=(server.base, app["uuid"], "hello", short)),
        threading.Thread(target=_stream, args=(server.base, app["uuid"], "say it slowly", cut)),
    ]
    for thread in threads:
        thread.start()
    poll_until(lambda: short and cut, detail=server.output)
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=120)
    server.proc.wait(timeout=60)
    # The short stream ended as usual; the long one got its error line at the grace.
    assert short[-1]["done"] is True and short[-1]["run"]["status"] == "succeeded"
    assert cut[-1]["error"]["code"] == "CANCELLED", cut[-1]
    assert all("error" not in line for line in cut[:-1])
    with sqlite3.connect(home / "appforge.db") as db:
        stored = db.execute("SELECT status, output FROM runs").fetchall()
    assert sorted(status for status, _ in stored) == ["cancelled"] + ["succeeded"] * 5
    partial = json.loads(next(out for status, out in stored if status == "cancelled"))["answer"]
    assert partial.startswith("word0 word1") and len(partial) < len(LONG)
    logged = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("shutting down") for line in logged)


def test_sigterm_cuts_a_run_still_waiting_for_the_model_first_byte(
    start_server: Callable[..., ServerProcess], tmp_path: Path
):
    """The model server takes the request and says nothing (a queue in front of it). On
    SIGTERM the run is cancelled at the grace and its wait for the first byte cut: the
    caller is answered ``CANCELLED``, the run is stored ``cancelled`` and the process
    exits. Before, the run's thread waited for the model (here two minutes, the
    provider's timeout being longer), and the process with it."""
    with serve_edge() as edge:
        edge.replies = [Reply(200, None, sse=[sse_chunk("late", None)], mute=True)]
        home = tmp_path / "home"
        env = {
            "APPFORGE_HOME": str(home),
            "APPFORGE_ADMIN_TOKEN": TOKEN,
            "APPFORGE_OPENAI__BASE_URL": edge.url,
            "APPFORGE_OPENAI__API_KEY": "fake",
            "APPFORGE_OPENAI__TIMEOUT": "600",
            "APPFORGE_MODELS": json.dumps({"default": "openai:fake"}),
            "APPFORGE_SHUTDOWN_GRACE_SECONDS": "1",
        }
        server = start_server(env)
        made = httpx.post(f"{server.base}/api/apps", content=APP, headers={**AUTH, **YAML})
        answers: list[httpx.Response] = []

        def run() -> None:
            answers.append(
                httpx.post(
                    f"{server.base}/api/apps/{made.json()['uuid']}/run",
                    json={"input": {"q": "hi"}},
                    headers=AUTH,
                    timeout=300,
                )  # fmt: skip
            )

        caller = threading.Thread(target=run)
        caller.start()
        poll_until(lambda: edge.requests, detail=server.output)  # the model has the call
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=60)
        caller.join(60)
        assert edge.hung_up.wait(20)  # the model server saw the call go
    assert answers and answers[0].json()["error"]["code"] == "CANCELLED", answers
    with sqlite3.connect(home / "appforge.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("cancelled",)]


class _Receiver:
    """A webhook receiver whose first request hangs until released."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(body)
                if len(receiver.requests) == 1:
                    receiver.release.wait(120)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    pass  # the worker is gone

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_worker_gives_back_its_claim_on_sigterm(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
):
    allow = {"url_allowlist": ["127.0.0.1"], "workers": 0}
    settings = make_settings(datasources=allow, webhooks={"workers": 0})
    client = make_client(settings)
    receiver = _Receiver()
    try:
        hook = {"url": receiver.url, "events": ["prompt.created"], "secret": "hook-secret-1"}
        assert client.post("/api/webhooks", json=hook).status_code == 201
        use_case = client.post("/api/v1/use-cases", json={"name": "Ops"}).json()["id"]
        prompt = {"name": "greet"}
        assert client.post(f"/api/v1/use-cases/{use_case}/prompts", json=prompt).status_code == 201
        exe = Path(sys.executable).parent / "appforge"
        worker = subprocess.Popen(
            [str(exe), "--home", str(settings.home), "worker", "--only", "webhooks"],
            env={
                **os.environ,
                "APPFORGE_DATASOURCES__URL_ALLOWLIST": '["127.0.0.1"]',
                "APPFORGE_SHUTDOWN_GRACE_SECONDS": "0.5",
                "APPFORGE_WEBHOOKS__POLL_SECONDS": "0.1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        poll_until(lambda: receiver.requests)  # the worker claimed it and is sending it
        state = client.app.state.api  # type: ignore[attr-defined]
        with state.db() as db:
            row = db.query(WebhookDelivery).one()
            assert (row.status, row.attempts) == ("delivering", 1)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=60)
        check_output("appforge worker --only webhooks", out.decode(errors="replace"))
        assert worker.returncode == 0, out.decode()
        with state.db() as db:
            row = db.query(WebhookDelivery).one()
            # Given back: claimable at once (not after its 60 s lease), the attempt undone.
            assert (row.status, row.claim_token, row.attempts) == ("pending", None, 0)
        receiver.release.set()
        assert state.webhooks.run_once() == 1  # another worker takes it at once
        with state.db() as db:
            assert db.query(WebhookDelivery).one().status == "delivered"
        assert "webhooks" in out.decode()
    finally:
        receiver.close()


NO_TORCH = """
import json, sys
from fastapi.testclient import TestClient
from api.app import create_app
from appforge.core.settings import Settings

home, url, token, app_yaml = sys.argv[1:5]
settings = Settings(
    home=home, admin_token=token, models={"default": "openai:fake"},
    openai={"base_url": url, "api_key": "fake"}, health={"timeout_seconds": 30},
)
with TestClient(create_app(settings)) as client:
    client.headers["Authorization"] = f"Token {token}"
    assert client.get("/api/health/ready").status_code == 200
    created = client.post("/api/apps", content=app_yaml,
                          headers={"Content-Type": "application/yaml"})
    run = client.post(f"/api/apps/{created.json()['uuid']}/run", json={"input": {"q": "hi"}})
    assert run.status_code == 200, run.text
heavy = ("torch", "llama_cpp", "sentence_transformers", "transformers")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_api_process_with_model_servers_only_never_imports_torch(model: FakeModel, tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path / "home"), model.url, TOKEN, APP],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_worker_refuses_unknown_queues():
    from click.testing import CliRunner

    from appforge.cli import main

    result = CliRunner().invoke(main, ["worker", "--only", "ingest,mail"])
    assert result.exit_code == 2
    assert "queues are ingest, refresh, webhooks" in result.output


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["serve", "--workers", "2", "--no-ui"], "serve --workers N"),
        (["worker", "--only", "ingest"], "appforge worker (ingest)"),
        (["worker"], "appforge worker (ingest)"),
    ],
)
def test_several_processes_on_an_embedded_chroma_are_refused(
    args: list[str], what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # An embedded Chroma's index is in one process's memory: a second process's
    # searches would miss what the first adds. Refused before anything is made.
    from click.testing import CliRunner

    from appforge.cli import main

    monkeypatch.delenv("APPFORGE_CHROMA_URL", raising=False)
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    assert result.exit_code == 2, result.output
    assert f"error [CHROMA_SERVER_REQUIRED]: {what} needs a Chroma server" in result.output
    assert f"chroma run --path {home / 'chroma'}" in result.output
    assert not home.exists()
