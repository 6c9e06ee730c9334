"""Shared parts of the overhead benchmarks: server processes, a lean client, wrk, RSS.

Not a benchmark itself: ``run_overhead.py`` and ``peers.py`` import it. It
imports nothing from appforge, so the benchmark process stays the same
whichever source checkout the measured server runs from.
"""

from __future__ import annotations

import functools
import http.client
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
TOKEN = "af_bench_token_0123456789abcdef"
SYSTEM = "You are terse."
QUESTION = "Say hi"
EXPECTED = "Hello from the fake model."  # fake_openai.py's default answer

APP_YAML = """\
version: 1
name: Bench
type: text
input:
  q: {{type: string, required: true}}
steps:
  - id: a
    kind: llm
    model: default
    prompt:
      system: {system}
      user: "{{{{ input.q }}}}"
    params: {{temperature: 0, seed: 1, max_tokens: {max_tokens}}}
output:
  a: "{{{{ a.text }}}}"
"""


# -- numbers ---------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# -- processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and all its descendants, in kB, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total


@dataclass
class Server:
    """A server process this benchmark started; its output goes to a log file."""

    name: str
    proc: subprocess.Popen[Any]
    base: str
    log_path: Path
    log_file: TextIO | None = None

    def rss_mb(self) -> float:
        return tree_rss_kb(self.proc.pid) / 1024

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.log_file is not None:
            self.log_file.close()


def _spawn(
    name: str, argv: list[str], *, cwd: Path, env: dict[str, str], log_dir: Path
) -> tuple[subprocess.Popen[Any], Path, TextIO]:
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    return proc, log_path, log_file


def wait_http(server: Server, path: str, timeout: float) -> None:
    """Poll ``GET path`` until it answers 200; raise with the log's tail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        client = Client(server.base)
        try:
            status, _ = client.request("GET", path)
            if status == 200:
                return
        except OSError:
            pass
        finally:
            client.close()
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not start:\n{server.log_tail()}")


def start_fake(log_dir: Path, text: str = EXPECTED) -> Server:
    """bench/fake_openai.py on a free port; returns once it printed its ready line."""
    argv = [sys.executable, "-P", str(BENCH_DIR / "fake_openai.py"), "--port", "0", "--text", text]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:(\d+)/v1", line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"fake_openai.py did not start: {line!r}")
    log_path = log_dir / "fake-openai.log"

    def drain(stream: TextIO) -> None:  # into a file, so the pipe never fills
        with log_path.open("w") as log:
            for text_line in stream:
                log.write(text_line)

    threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
    return Server("fake-openai", proc, f"http://{HOST}:{match.group(1)}", log_path)


def appforge_source(src: Path) -> str:
    """Where ``api.app`` is imported from when Python starts in ``src`` (checks --src works)."""
    code = "import importlib.util as u; print(u.find_spec('api.app').origin)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=src, capture_output=True, text=True, check=True
    ).stdout.strip()


def start_appforge(
    name: str,
    src: Path,
    home: Path,
    log_dir: Path,
    *,
    openai_base: str | None,
    extra_env: dict[str, str] | None = None,
    startup_timeout: float = 120,
) -> Server:
    """``uvicorn api.app:from_environment --factory`` from ``src`` with its data in ``home``.

    ``openai_base`` (``http://host:port/v1``) makes ``default`` the fake server's
    model; None leaves the default, the bundled local model.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPFORGE_")}
    env.update(
        APPFORGE_HOME=str(home),
        APPFORGE_ADMIN_TOKEN=TOKEN,
        APPFORGE_RATE_LIMIT__ENABLED="false",
    )
    if openai_base is not None:
        env.update(
            APPFORGE_OPENAI__BASE_URL=openai_base,
            APPFORGE_OPENAI__API_KEY="x",
            APPFORGE_MODELS='{"default": "openai:fake"}',
        )
    env.update(extra_env or {})
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.app:from_environment",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc, log_path, log_file = _spawn(name, argv, cwd=src, env=env, log_dir=log_dir)
    server = Server(name, proc, f"http://{HOST}:{port}", log_path, log_file)
    wait_http(server, "/api/health", startup_timeout)
    return server


def create_app(server: Server, max_tokens: int) -> str:
    """POST the one-step bench app; its uuid."""
    client = Client(server.base, auth=True)
    body = APP_YAML.format(system=SYSTEM, max_tokens=max_tokens).encode()
    status, data = client.request("POST", "/api/apps", body, {"Content-Type": "application/yaml"})
    if status != 201:
        raise RuntimeError(f"creating the app on {server.name} gave {status}: {data[:500]!r}")
    return str(json.loads(data)["uuid"])


# -- client ---------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection (``http.client``): the lightest client at hand.

    httpx costs about 0.35 ms more per request on this machine; that would be
    counted as server overhead.
    """

    def __init__(self, base: str, *, auth: bool = False) -> None:
        match = re.match(r"http://([^:/]+):(\d+)", base)
        if match is None:
            raise ValueError(base)
        self.host, self.port = match.group(1), int(match.group(2))
        self.headers = {"Authorization": f"Token {TOKEN}"} if auth else {}
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        all_headers = {**self.headers, **(headers or {})}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self._conn.request(method, path, body=body, headers=all_headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> Any:
        status, data = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- load -------------------------------------------------------------------------------


@dataclass
class Load:
    """Requests completed over some seconds at a fixed concurrency (summed over rounds)."""

    requests: int = 0
    seconds: float = 0.0
    bad: int = 0  # non-200, or a body without the expected text
    errors: list[str] = field(default_factory=list)
    generator_cpu: float = 0.0  # CPU seconds the load generator (wrk) used
    # wrk's latency percentiles of each slice: (requests, p50 ms, p95 ms)
    slices: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def latency_ms(self, q: float) -> float | None:
        """p50 (q=0.5) or p95 (q=0.95) of the slices, weighted by their requests (wrk
        gives percentiles, not samples, so slices cannot be pooled exactly)."""
        index = 1 if q == 0.5 else 2
        total = sum(s[0] for s in self.slices)
        if not total:
            return None
        return sum(s[0] * s[index] for s in self.slices) / total

    def add(self, other: Load) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.bad += other.bad
        self.errors.extend(other.errors)
        self.generator_cpu += other.generator_cpu
        self.slices.extend(other.slices)


_WRK_LUA = """\
wrk.method = {method}
wrk.body = {body}
{headers}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, {expect}, 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("BENCH requests=%d us=%d bad=%d p50=%d p95=%d\\n",
    summary.requests, summary.duration, total,
    latency:percentile(50), latency:percentile(95)))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk_load(
    url: str,
    seconds: float,
    concurrency: int,
    *,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    expect: str = EXPECTED,
) -> Load:
    """Drive ``url`` with wrk (one thread, ``concurrency`` connections) for ``seconds``.

    wrk takes whole seconds: ``seconds`` is rounded (at least 1); the rate uses
    the duration wrk reports.
    """
    lua = _WRK_LUA.format(
        method=_lua_string(method),
        body=_lua_string(body) if body is not None else "nil",
        headers="\n".join(
            f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in (headers or {}).items()
        ),
        expect=_lua_string(expect),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
        script = f.name
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        argv = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "-s",
            script,
            url,
        ]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    match = re.search(r"BENCH requests=(\d+) us=(\d+) bad=(\d+) p50=(\d+) p95=(\d+)", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests, p50_us, p95_us = int(match.group(1)), int(match.group(4)), int(match.group(5))
    load = Load(requests, int(match.group(2)) / 1e6, int(match.group(3)))
    load.slices.append((requests, p50_us / 1000, p95_us / 1000))
    load.generator_cpu = cpu
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        load.errors.append(errors.group(1).strip())
    return load


def http_load(
    url: str,
    seconds: float,
    concurrency: int,
    *,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    expect: str = EXPECTED,
) -> Load:
    """The same load as :func:`wrk_load` from Python threads (when wrk is not installed)."""
    match = re.match(r"(http://[^/]+)(/.*)", url)
    assert match is not None
    base, path = match.group(1), match.group(2)
    data = body.encode() if body is not None else None

    def one(client: Client) -> bool:
        status, answer = client.request(method, path, data, headers)
        return status == 200 and expect.encode() in answer

    clients = [Client(base) for _ in range(concurrency)]
    try:
        return thread_load([functools.partial(one, c) for c in clients], seconds)
    finally:
        for c in clients:
            c.close()


def thread_load(calls: Sequence[Callable[[], bool]], seconds: float) -> Load:
    """Run each call in its own thread, over and over, for ``seconds``; count them."""
    counts = [0] * len(calls)
    bad = [0] * len(calls)
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            try:
                ok = calls[i]()
            except Exception as exc:  # noqa: BLE001 - counted, reported once
                ok = False
                if len(errors) < 3:
                    errors.append(repr(exc))
            counts[i] += 1
            bad[i] += 0 if ok else 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Load(sum(counts), time.perf_counter() - started, sum(bad), errors)
