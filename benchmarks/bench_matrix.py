"""Benchmark matrix: N background tasks over N/50 sandboxes, five clients, one table.

    python benchmarks/bench_matrix.py                     # N = 100, 1,000, 5,000; median of 3
    python benchmarks/bench_matrix.py --quick             # CI smoke run, N = 100, once
    python benchmarks/bench_matrix.py --sizes 100,1000 --repeat 5 --clients raw,hopx_async

Layout, one process each: the local backend (``python -m hopx_async.local serve``), this
driver (which runs the counting proxies, on loopback between client and server) and every
client run (a fresh ``python benchmarks/bench_matrix.py --run-client NAME`` per run).

A client creates N/50 sandboxes, lists each once (health check, features; before the clock),
then starts N background commands (``sleep 0.2`` by default), ``--batch`` starts in flight at
a time, spread over the sandboxes, and waits for each while the next batches start. For every
task it notes when it learned that the task ended; detection latency is that moment minus the
task's ``completed_at`` as the server wrote it (same machine, same clock, millisecond
resolution). Clients:

- ``hopx_async``: ``AsyncHopx``; ``proc.wait()`` on each handle as soon as its start is
  answered (what ``client.wait_all`` does for a list);
- ``hopx_async-noext``: the same through a proxy that hides ``features`` in ``/health``
  (what the client does against the real service);
- ``raw``: raw aiohttp, one session, one ``GET /execute/processes`` per sandbox every
  ``--interval`` s while the sandbox has tasks to wait for;
- ``hopx_ai-smart``: the official SDK (sync ``Sandbox``), one thread per sandbox doing one
  ``list_processes()`` every ``--interval`` s; starts from a pool of ``--batch`` threads;
- ``hopx_ai-docs``: the official SDK as its docs show it: per task, start it, then
  ``list_processes()`` and sleep ``--doc-interval`` s until it ended; one thread per task,
  bounded to ``--doc-threads`` threads at a time (so at most that many tasks in flight).

Measured per client run, between the first start and the last task detected:

- requests the proxy received (the N starts excluded: every client sends exactly N) and the
  KiB of the answers' bodies to them;
- client CPU (user + sys of the client process, all its threads) per task;
- the client process's peak RSS (``ru_maxrss``, imports included), and memory per task: how
  much that peak exceeds the resident memory at the first start (sandboxes made, imports
  done), divided by N;
- detection latency p50 and p99;
- the server process's CPU per task over the same phase (its threads, not the tasks it runs),
  and the most threads it had during the client run (Linux ``/proc``; 0 elsewhere).

The table shows medians of ``--repeat`` runs (the client order rotates between repeats), and
for each figure its ratio to raw aiohttp's median in the same invocation. Timings on a shared
machine are noisy: read medians and ratios, never single figures; nothing here asserts a
timing. The exit status is non-zero if a client run failed or a sandbox was left behind.

``--dialect NAME`` (``extended`` by default, the behaviour above) starts the server with that
dialect (``serve --dialect``). With ``hopx`` (the service as documented: no extensions, rate
limits per fixed window of ``--rate-window`` s, 60 by default: control plane 100, agent 300
per sandbox, 20 creations; a new agent not ready for ``--boot-seconds`` s, 2 by default):

- the clients are hopx_async, raw, hopx_ai smart and hopx_ai as documented (the no-extension
  client would repeat hopx_async: every extension is already off);
- a fresh server per client run, so that one run's creations and control-plane requests do not
  use up the next run's window (creations and the boot wait are before the clock);
- raw and hopx_ai smart poll every ``max(--interval, W / L_agent)`` s (W the window, L_agent the
  agent limit: 0.2 s at 300/min), the fastest a poller may sustain without a 429 however the
  window falls, so raw is a fair peer; hopx_ai as documented keeps its ``--doc-interval`` pause
  per task thread, as its docs show it, and takes the 429s that follow;
- ``--create-rate``, ``--boot-seconds``, ``--control-rate``, ``--rate-window`` and
  ``--agent-rate`` pass through to ``serve`` (the dialect's documented values if not given);
  with the documented agent limit (300 per sandbox) the limit does not bind at 50 tasks per
  sandbox; ``--agent-rate 30 --rate-window 20 --boot-seconds 0`` is a workload where it does;
- raw aiohttp and both hopx_ai clients send a request refused with 429 again after a pause
  (raw: its ``Retry-After``; hopx_ai, whose own retries give up within 3 s: 1 s), as their
  users would; the refused requests count as requests, not as starts;
- three more columns: the 429s the proxy answered during the whole client run (creations and
  clean-up included), the least wall time the rate limit allows for the measured phase, and
  the mean poll pause (wall * sandboxes / requests: the average time between two polls of one
  sandbox, for hopx_async whose pause adapts; raw's is its fixed interval plus the answer), and
  ``requests / rate``: ``(S + 2) * W / L_agent``, the least wall time at the sustained rate
  (the bound of a server that counts in a sliding window).

That least wall time: per sandbox the client must send S = ceil(N / sandboxes) starts plus at
least one list after its last task ended, and it has already sent one list (the health check
before the clock) in the current window. In a fixed window of L_agent requests per W seconds,
``r = S + 2`` requests need ``ceil(r / L_agent) - 1`` window resets after the first, so::

    T_min = (ceil((S + 2) / L_agent) - 1) * W + d

where d is the task's duration (``--task-seconds``, 0.2 for ``sleep 0.2``): the last task
cannot be seen as ended before it has run. At N = 1,000 over 20 sandboxes S = 50 and r = 52 <=
300, so the agent limit does not bind and T_min = d. The agent requests of the set-up (the
readiness checks of a booting agent, 8 to 12 per sandbox with the 2 s boot) count in the first
window too, so ``--boot-seconds 0`` keeps them to the one or two the formula assumes. The
creation limit binds the set-up, not the measured phase:
``(ceil(sandboxes / L_create) - 1) * W + boot`` (printed on its own line).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

TEMPLATE = "code-interpreter"
TERMINAL = frozenset({"completed", "failed", "killed", "timeout"})
START_ROUTE = "POST /execute/background"
PER_SANDBOX = 50
#: no client run may take longer than this (a hang is a failure, not a figure)
RUN_LIMIT = 900.0
MARK_PREFIX = "/__bench__/"

CLIENTS: dict[str, str] = {
    "hopx_async": "hopx_async",
    "hopx_async-noext": "hopx_async, no extensions",
    "raw": "raw aiohttp poller",
    "hopx_ai-smart": "hopx_ai smart (list per sandbox)",
    "hopx_ai-docs": "hopx_ai as documented",
}
BASELINE = "raw"
#: the clients of the ``hopx`` dialect (every extension is off there: no separate no-ext run)
HOPX_CLIENTS = ["hopx_async", "raw", "hopx_ai-smart", "hopx_ai-docs"]
#: the documented limits of the ``hopx`` dialect (serve's defaults)
HOPX_AGENT_RATE = 300
HOPX_CREATE_RATE = 20
HOPX_WINDOW = 60.0
HOPX_BOOT = 2.0


# =========================================================================== driver side
def route_key(method: str, path: str) -> str:
    """``GET /execute/processes`` for ``/sandboxes/sbx_1/execute/processes``."""
    path = re.sub(r"^/sandboxes/[^/]+", "", path)
    path = re.sub(r"/(proc|sbx)_[A-Za-z0-9_-]+", r"/{\1}", path)
    return f"{method} {path}"


class CountingProxy:
    """Forwards everything to the backend, counting requests and answer bytes by route.

    ``GET /__bench__/<name>`` is answered by the proxy itself: it records the counters under
    ``name`` (the clients mark the start and end of the measured phase this way). With
    ``hide_features`` the ``features`` of ``/health`` answers are emptied.
    """

    def __init__(self, upstream: str, *, hide_features: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.hide_features = hide_features
        self.counts: Counter[str] = Counter()
        self.sizes: Counter[str] = Counter()
        #: 429 answers forwarded (all routes, the whole client run)
        self.refused = 0
        self.marks: dict[str, tuple[Counter[str], Counter[str], dict[str, float]]] = {}
        #: called at each mark; its figures are stored with the counters
        self.probe: Callable[[], dict[str, float]] = dict
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CountingProxy:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def phase(self) -> tuple[Counter[str], Counter[str], dict[str, float]]:
        """Requests, answer bytes by route and the probe's figures between the marks
        ``begin`` and ``end``."""
        (c0, s0, p0), (c1, s1, p1) = self.marks["begin"], self.marks["end"]
        return c1 - c0, s1 - s0, {k: p1[k] - p0[k] for k in p0.keys() & p1.keys()}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(MARK_PREFIX):
            name = request.path[len(MARK_PREFIX) :]
            self.marks[name] = (Counter(self.counts), Counter(self.sizes), self.probe())
            return web.Response(text="ok")
        key = route_key(request.method, request.path)
        self.counts[key] += 1
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body or None,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            if status == 429:  # counted apart: a refused start is a request, not a start
                self.refused += 1
                self.counts[key] -= 1
                self.counts[f"{key} (429)"] += 1
            content_type = upstream.headers.get("Content-Type", "").split(";")[0]
            passthrough = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower().startswith("x-") or k.lower() == "retry-after"
            }
        if request.path.startswith("/v1/"):  # sandbox objects: public_host points back here
            payload = payload.replace(self.upstream.encode(), self.url.encode())
        if self.hide_features and key == "GET /health" and status == 200:
            data = json.loads(payload)
            data["features"] = {}
            payload = json.dumps(data).encode()
        self.sizes[key] += len(payload)
        return web.Response(
            body=payload, status=status, headers=passthrough, content_type=content_type or None
        )


@dataclass
class Sample:
    """One client run."""

    requests: int
    kib: float
    cpu_ms_per_task: float
    rss_mib: float
    grown_kib_per_task: float
    p50_ms: float
    p99_ms: float
    wall: float
    server_cpu_ms_per_task: float
    server_threads: float
    proxy_cpu_ms_per_task: float
    refused: float = 0.0
    #: the mean pause between two non-start requests to one sandbox: wall * sandboxes / requests
    pause_ms: float = 0.0


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    def median(self, attr: str) -> float:
        return statistics.median(float(getattr(s, attr)) for s in self.samples)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def process_cpu(pid: int) -> float:
    """User + sys seconds of process ``pid`` (its threads, not its children); 0 off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_threads(pid: int) -> int:
    """The number of threads of process ``pid`` now; 0 off Linux."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve_options(args: argparse.Namespace) -> list[str]:
    """The ``serve`` options of ``--dialect`` and the knobs given."""
    if args.dialect == "extended":
        return []
    options = ["--dialect", args.dialect]
    for flag, value in (
        ("--create-rate", args.create_rate),
        ("--boot-seconds", args.boot_seconds),
        ("--control-rate", args.control_rate),
        ("--rate-window", args.rate_window),
        ("--agent-rate", args.agent_rate),
    ):
        if value is not None:
            options += [flag, str(value)]
    return options


def start_server(options: list[str] | None = None) -> tuple[subprocess.Popen[str], str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hopx_async.local",
            "serve",
            "--log-level",
            "WARNING",
            *(options or []),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip().split("=", 1)[1]
    api_key = proc.stdout.readline().strip().split("=", 1)[1]
    return proc, base_url.strip("'"), api_key.strip("'")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def live_sandboxes(base_url: str, api_key: str) -> int:
    """Sandboxes still alive on the server (every page of the list)."""
    alive = 0
    params = {"limit": "100"}
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        while True:
            async with session.get(
                f"{base_url}/v1/sandboxes", params=params, headers={"X-API-Key": api_key}
            ) as resp:
                data = await resp.json()
            alive += sum(
                1 for s in data.get("data", []) if s.get("status") not in ("deleted", "killed")
            )
            if not data.get("has_more") or not data.get("next_cursor"):
                return alive
            params = {"limit": "100", "cursor": str(data["next_cursor"])}


async def run_client(
    name: str,
    proxy: CountingProxy,
    server: int,
    api_key: str,
    tasks: int,
    args: argparse.Namespace,
) -> Sample:
    """One client run in a subprocess of its own; its figures plus the proxy's counts."""
    env = dict(os.environ, HOPX_API_KEY=api_key, HOPX_BASE_URL=proxy.url)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--run-client",
        name,
        "--tasks",
        str(tasks),
        "--batch",
        str(args.batch),
        "--command",
        args.command,
        "--interval",
        str(args.interval),
        "--doc-interval",
        str(args.doc_interval),
        "--doc-threads",
        str(args.doc_threads),
    ]
    proxy.marks.clear()
    proxy.refused = 0
    proxy.probe = lambda: {"server": process_cpu(server), "proxy": own_cpu()}
    threads = 0

    async def count_threads() -> None:
        nonlocal threads
        while True:
            threads = max(threads, process_threads(server))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(count_threads())
    child = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(), RUN_LIMIT)
    except asyncio.TimeoutError:
        child.kill()
        await child.wait()
        raise RuntimeError(f"no result after {RUN_LIMIT:g} s") from None
    finally:
        sampler.cancel()
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-12:]
        raise RuntimeError(f"exit status {child.returncode}:\n    " + "\n    ".join(tail))
    result = json.loads(out.decode().strip().splitlines()[-1])
    counts, sizes, cpu = proxy.phase()
    starts = counts[START_ROUTE]
    if starts != tasks:
        raise RuntimeError(f"the proxy saw {starts} starts for {tasks} tasks")
    latencies = [float(x) for x in result["latencies"]]
    requests = sum(n for key, n in counts.items() if key != START_ROUTE)
    return Sample(
        requests=requests,
        kib=sum(n for key, n in sizes.items() if key != START_ROUTE) / 1024,
        cpu_ms_per_task=result["cpu"] * 1000 / tasks,
        rss_mib=result["rss_kib"] / 1024,
        grown_kib_per_task=result["grown_kib"] / tasks,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        wall=result["wall"],
        server_cpu_ms_per_task=cpu.get("server", 0.0) * 1000 / tasks,
        server_threads=threads,
        proxy_cpu_ms_per_task=cpu.get("proxy", 0.0) * 1000 / tasks,
        refused=proxy.refused,
        pause_ms=result["wall"] * max(1, tasks // PER_SANDBOX) * 1000 / max(1, requests),
    )


def official_installed() -> bool:
    try:
        importlib.metadata.version("hopx-ai")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


async def run_matrix(
    args: argparse.Namespace, clients: list[str]
) -> tuple[dict[tuple[int, str], Cell], int]:
    cells: dict[tuple[int, str], Cell] = {}
    left = 0
    # extended: one server per size; a rate-limited dialect: one per client run, so that
    # a run's creations and control-plane requests leave the next run a fresh window
    fresh = args.dialect != "extended"
    for tasks in args.sizes:
        runs = [
            (r, name)
            for r in range(args.repeat)
            for name in clients[r % len(clients) :] + clients[: r % len(clients)]
        ]
        groups = [[run] for run in runs] if fresh else [runs]
        for group in groups:
            server, base_url, api_key = start_server(serve_options(args))
            try:
                async with (
                    CountingProxy(base_url) as plain,
                    CountingProxy(base_url, hide_features=True) as hidden,
                ):
                    for r, name in group:
                        cell = cells.setdefault((tasks, name), Cell())
                        if cell.error is not None:
                            continue
                        if name.startswith("hopx_ai") and not official_installed():
                            cell.error = "hopx-ai not installed (pip install 'hopx-async[bench]')"
                            continue
                        proxy = hidden if name == "hopx_async-noext" else plain
                        try:
                            sample = await run_client(name, proxy, server.pid, api_key, tasks, args)
                        except RuntimeError as exc:
                            cell.error = str(exc)
                            print(f"  N={tasks} {name}: FAILED, {exc}", flush=True)
                            continue
                        cell.samples.append(sample)
                        print(
                            f"  N={tasks:<5} run {r + 1}/{args.repeat} {name:<17} "
                            f"{sample.wall:6.2f} s {sample.requests:7d} req "
                            f"{sample.refused:5.0f} 429s "
                            f"{sample.kib:9.1f} KiB {sample.cpu_ms_per_task:6.3f} ms/task "
                            f"{sample.rss_mib:6.1f} MiB p50 {sample.p50_ms:6.1f} ms "
                            f"p99 {sample.p99_ms:7.1f} ms; server "
                            f"{sample.server_cpu_ms_per_task:6.3f} ms/task "
                            f"{sample.server_threads:4.0f} threads; proxy "
                            f"{sample.proxy_cpu_ms_per_task:6.3f} ms/task",
                            flush=True,
                        )
                remaining = await live_sandboxes(base_url, api_key)
                if remaining:
                    print(f"  N={tasks}: {remaining} sandbox(es) left on the server", flush=True)
                left += remaining
            finally:
                stop_server(server)
    return cells, left


def agent_rate(args: argparse.Namespace) -> int:
    """The agent limit per sandbox and window (``--agent-rate``, else the documented 300)."""
    return int(args.agent_rate) if args.agent_rate is not None else HOPX_AGENT_RATE


def least_wall(args: argparse.Namespace, tasks: int) -> float:
    """The least wall time the agent limit allows for the measured phase, in its fixed
    windows (module docstring)."""
    sandboxes = max(1, tasks // PER_SANDBOX)
    starts = math.ceil(tasks / sandboxes)
    window = args.rate_window if args.rate_window is not None else HOPX_WINDOW
    resets = math.ceil((starts + 2) / agent_rate(args)) - 1
    return resets * window + args.task_seconds


def least_at_rate(args: argparse.Namespace, tasks: int) -> float:
    """The requests needed per sandbox over the sustained rate the agent limit allows:
    (S + 2) * W / L, the least of a server that counts in a sliding window."""
    sandboxes = max(1, tasks // PER_SANDBOX)
    starts = math.ceil(tasks / sandboxes)
    window = args.rate_window if args.rate_window is not None else HOPX_WINDOW
    return (starts + 2) * window / agent_rate(args)


def least_setup(args: argparse.Namespace, tasks: int) -> float:
    """The least time the creation limit and the boot delay allow for the set-up."""
    sandboxes = max(1, tasks // PER_SANDBOX)
    rate = args.create_rate if args.create_rate is not None else HOPX_CREATE_RATE
    window = args.rate_window if args.rate_window is not None else HOPX_WINDOW
    boot = args.boot_seconds if args.boot_seconds is not None else HOPX_BOOT
    return (math.ceil(sandboxes / rate) - 1) * window + boot


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def table(
    cells: dict[tuple[int, str], Cell],
    sizes: list[int],
    clients: list[str],
    args: argparse.Namespace | None = None,
) -> str:
    limited = args is not None and args.dialect != "extended"
    columns = [
        ("requests", "requests", 0),
        ("kib", "KiB", 0),
        ("cpu_ms_per_task", "CPU ms/task", 3),
        ("rss_mib", "peak RSS MiB", 1),
        ("grown_kib_per_task", "memory KiB/task", 2),
        ("p50_ms", "detect p50 ms", 1),
        ("p99_ms", "detect p99 ms", 1),
        ("server_cpu_ms_per_task", "server CPU ms/task", 3),
        ("server_threads", "server threads", 0),
    ]
    if limited:
        columns.insert(0, ("refused", "429s", 0))
        columns.insert(2, ("pause_ms", "mean poll pause ms", 0))
    extra = ["least wall s", "requests / rate s"] if limited else []
    head = ["N", "sandboxes", "client", "runs", "wall s", *extra, *(c[1] for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for tasks in sizes:
        base = cells.get((tasks, BASELINE))
        for name in clients:
            cell = cells.get((tasks, name))
            row = [f"{tasks:,}", str(max(1, tasks // PER_SANDBOX)), CLIENTS[name]]
            if cell is None or not cell.samples:
                why = cell.error.splitlines()[0] if cell and cell.error else "not run"
                row += [f"failed: {why}" if cell and cell.error else why]
                row += [""] * (len(head) - len(row))
                lines.append("| " + " | ".join(row) + " |")
                continue
            row += [str(len(cell.samples)), _fmt(cell.median("wall"), 2)]
            if limited:
                assert args is not None
                least = least_wall(args, tasks)
                row.append(f"{_fmt(least, 2)} ({cell.median('wall') / least:.2f}x)")
                steady = least_at_rate(args, tasks)
                row.append(f"{_fmt(steady, 2)} ({cell.median('wall') / steady:.2f}x)")
            for attr, _, digits in columns:
                value = cell.median(attr)
                text = _fmt(value, digits)
                if base is not None and base.samples and name != BASELINE:
                    ref = base.median(attr)
                    text += f" ({value / ref:.2f}x)" if ref > 0 else " (-)"
                row.append(text)
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def driver(args: argparse.Namespace) -> int:
    clients = args.clients
    started = time.perf_counter()
    print(
        f"benchmark matrix: sizes {', '.join(f'{n:,}' for n in args.sizes)}, "
        f"{PER_SANDBOX} tasks per sandbox, {args.batch} starts in flight, "
        f"task `{args.command}`, median of {args.repeat}"
    )
    print(
        f"Python {platform.python_version()}, aiohttp {_version('aiohttp')}, "
        f"hopx-async {_version('hopx-async')}, hopx-ai {_version('hopx-ai')}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(
        f"raw and hopx_ai smart poll every {args.interval:g} s; hopx_ai as documented: "
        f"{args.doc_interval:g} s pause, at most {args.doc_threads} threads (tasks) at a time"
    )
    if args.dialect != "extended":
        print(
            f"dialect {args.dialect}: serve {' '.join(serve_options(args))}; agent limit "
            f"{agent_rate(args)}/window per sandbox; raw and hopx_ai smart poll every "
            f"{args.interval:g} s (at most the sustained rate the agent limit allows)"
        )
        for n in args.sizes:
            print(
                f"  N={n:,}: least wall time of the measured phase {least_wall(args, n):.2f} s "
                f"(fixed windows; {least_at_rate(args, n):.2f} s at the sustained rate); "
                f"least set-up (creations, boot) {least_setup(args, n):.1f} s"
            )
    cells, left = asyncio.run(run_matrix(args, clients))
    wall = time.perf_counter() - started
    print()
    print(table(cells, args.sizes, clients, args))
    print()
    print(
        "requests and KiB: what the proxy received and answered between the first start and "
        "the last detection, the N starts excluded (KiB: answer bodies); CPU: user+sys of the "
        "client process over the same phase; peak RSS: the client process's maximum; "
        "memory/task: that peak minus the resident memory at the first start, over N; "
        "detect: client's moment of knowing minus the server's completed_at; server CPU: "
        "user+sys of the server process (not of the tasks) over the same phase; server "
        "threads: the most seen in the server process (sampled every 50 ms) during the client "
        f"run; (x): ratio to {CLIENTS[BASELINE]} in this invocation."
        + (
            " 429s: refusals the proxy forwarded over the whole client run (set-up and "
            "clean-up included); least wall: (ceil((S + 2) / L_agent) - 1) * W + d, "
            "S the starts per sandbox (see the module docstring), (x): wall over it; requests / "
            "rate: (S + 2) * W / L_agent, the least at the sustained rate; mean poll "
            "pause: wall * sandboxes / requests, the average pause between two polls of a "
            "sandbox (compare detect p50 with it)."
            if args.dialect != "extended"
            else ""
        )
    )
    hard = [
        f"N={n} {c}"
        for (n, c), cell in cells.items()
        if cell.error is not None and "not installed" not in cell.error
    ]
    print(f"total wall time {wall:.1f} s; sandboxes left on the server: {left}")
    if hard:
        print("failed: " + ", ".join(hard))
    return 0 if not hard and left == 0 else 1


# =========================================================================== client side
@dataclass
class Config:
    url: str
    api_key: str
    tasks: int
    batch: int
    command: str
    interval: float
    doc_interval: float
    doc_threads: int

    @property
    def sandboxes(self) -> int:
        return max(1, self.tasks // PER_SANDBOX)

    def batches(self) -> Iterator[range]:
        for first in range(0, self.tasks, self.batch):
            yield range(first, min(self.tasks, first + self.batch))

    def mark(self, name: str) -> None:
        with urllib.request.urlopen(f"{self.url}{MARK_PREFIX}{name}", timeout=30) as resp:
            resp.read()


@dataclass
class Meter:
    """CPU and peak RSS of this process over the measured phase, and the detections."""

    config: Config
    detected: list[tuple[float, str | datetime | None, str]] = field(default_factory=list)
    _cpu0: float = 0.0
    _t0: float = 0.0
    _rss0: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        self.config.mark("begin")
        self._t0 = time.perf_counter()
        self._cpu0 = own_cpu()
        self._rss0 = current_rss_kib()

    def seen(self, completed_at: str | datetime | None, status: str) -> None:
        now = time.time()
        with self._lock:
            self.detected.append((now, completed_at, status))

    def end(self) -> dict[str, Any]:
        cpu = own_cpu() - self._cpu0
        wall = time.perf_counter() - self._t0
        self.config.mark("end")
        if len(self.detected) != self.config.tasks:
            raise AssertionError(f"{len(self.detected)} detections for {self.config.tasks} tasks")
        statuses = Counter(status for _, _, status in self.detected)
        if set(statuses) != {"completed"}:
            raise AssertionError(f"statuses {dict(statuses)}")
        latencies = [now - _timestamp(at) for now, at, _ in self.detected]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "latencies": latencies,
            "cpu": cpu,
            "wall": wall,
            "rss_kib": rss,
            "grown_kib": max(0, rss - self._rss0),
        }


def current_rss_kib() -> int:
    """This process's resident memory now (KiB; Linux ``/proc``, else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _timestamp(value: str | datetime | None) -> float:
    if value is None:
        raise AssertionError("a finished task without completed_at")
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()


async def client_hopx_async(cfg: Config) -> dict[str, Any]:
    from hopx_async import AsyncHopx

    meter = Meter(cfg)
    async with AsyncHopx(api_key=cfg.api_key, base_url=cfg.url) as client:
        made = await asyncio.gather(
            *(client.sandboxes.create(TEMPLATE) for _ in range(cfg.sandboxes)),
            return_exceptions=True,
        )
        sandboxes = [s for s in made if not isinstance(s, BaseException)]
        try:
            for s in made:
                if isinstance(s, BaseException):
                    raise s
            await asyncio.gather(*(s.list_processes() for s in sandboxes))

            async def watch(proc: Any) -> None:
                result = await proc.wait(timeout=RUN_LIMIT)
                meter.seen(result.completed_at, str(result.status))

            meter.begin()
            # the waits still running (a finished one is dropped, as the other clients
            # forget a task once seen: the harness's bookkeeping is not the client's memory)
            waits: set[asyncio.Future[None]] = set()
            failures: list[BaseException] = []

            def finished(task: asyncio.Future[None]) -> None:
                waits.discard(task)
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    failures.append(error)

            for batch in cfg.batches():
                starts = [
                    sandboxes[i % len(sandboxes)].run_code_background(
                        cfg.command, language="bash", name=f"task-{i}"
                    )
                    for i in batch
                ]
                # wait on each process from the moment its start is answered, as the
                # other clients do, not from the end of its batch
                for started in asyncio.as_completed(starts):
                    waiting = asyncio.ensure_future(watch(await started))
                    waits.add(waiting)
                    waiting.add_done_callback(finished)
            while waits and not failures:
                await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
            if failures:
                raise failures[0]
            return meter.end()
        finally:
            await asyncio.gather(*(s.kill() for s in sandboxes), return_exceptions=True)


async def client_raw(cfg: Config) -> dict[str, Any]:
    meter = Meter(cfg)
    control = {"X-API-Key": cfg.api_key}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=True) as session:

        async def create() -> dict[str, Any]:
            async with session.post(
                f"{cfg.url}/v1/sandboxes", json={"template_name": TEMPLATE}, headers=control
            ) as resp:
                data: dict[str, Any] = await resp.json()
            return data

        def agent(sandbox: dict[str, Any]) -> tuple[str, dict[str, str]]:
            host = str(sandbox["public_host"]).rstrip("/")
            return host, {"Authorization": f"Bearer {sandbox['auth_token']}"}

        async def send(method: str, url: str, **kwargs: Any) -> Any:
            """One request; a 429 is sent again after its Retry-After (the plain way)."""
            while True:
                async with session.request(method, url, raise_for_status=False, **kwargs) as resp:
                    if resp.status != 429:
                        resp.raise_for_status()
                        return await resp.json()
                    pause = float(resp.headers.get("Retry-After", "1"))
                await asyncio.sleep(pause)

        async def listing(sandbox: dict[str, Any]) -> list[dict[str, Any]]:
            host, headers = agent(sandbox)
            data = await send("GET", f"{host}/execute/processes", headers=headers)
            return list(data["processes"])

        pending: list[set[str]] = [set() for _ in range(cfg.sandboxes)]
        starting = True

        async def start(n: int, i: int) -> None:
            host, headers = agent(sandboxes[n])
            body = {"code": cfg.command, "language": "bash", "name": f"task-{i}"}
            data = await send("POST", f"{host}/execute/background", json=body, headers=headers)
            pending[n].add(str(data["process_id"]))

        async def poll(n: int) -> None:
            deadline = time.monotonic() + RUN_LIMIT
            while starting or pending[n]:
                if pending[n]:
                    for p in await listing(sandboxes[n]):
                        if p["process_id"] in pending[n] and p["status"] in TERMINAL:
                            pending[n].discard(p["process_id"])
                            meter.seen(p.get("completed_at"), p["status"])
                if time.monotonic() > deadline:
                    raise TimeoutError("tasks still running")
                await asyncio.sleep(cfg.interval)

        async def ready(sandbox: dict[str, Any]) -> None:
            # before the clock: a new agent may not be ready yet (the hopx dialect's boot)
            deadline = time.monotonic() + 60
            while True:
                try:
                    await listing(sandbox)
                    return
                except aiohttp.ClientResponseError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.25)

        made = await asyncio.gather(*(create() for _ in range(cfg.sandboxes)))
        sandboxes = list(made)
        try:
            await asyncio.gather(*(ready(s) for s in sandboxes))
            meter.begin()
            pollers = [asyncio.ensure_future(poll(n)) for n in range(len(sandboxes))]
            for batch in cfg.batches():
                await asyncio.gather(*(start(i % len(sandboxes), i) for i in batch))
            starting = False
            await asyncio.gather(*pollers)
            return meter.end()
        finally:
            for sandbox in sandboxes:
                async with session.delete(
                    f"{cfg.url}/v1/sandboxes/{sandbox['id']}", headers=control
                ):
                    pass


def _official_sandboxes(cfg: Config) -> list[Any]:
    sandbox_class = importlib.import_module("hopx_ai").Sandbox

    def create(_: int) -> Any:
        return sandbox_class.create(template=TEMPLATE, api_key=cfg.api_key, base_url=cfg.url)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(create, n) for n in range(cfg.sandboxes)]
        made = [f.result() for f in futures if f.exception() is None]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        _official_kill(made)
        raise errors[0]  # type: ignore[misc]
    # before the clock: builds each sandbox's agent client (its lazy set-up is not
    # thread-safe) and health-checks it, as the other clients' first list does
    for sandbox in made:
        deadline = time.monotonic() + 60
        while True:  # a new agent may not be ready yet (the hopx dialect's boot)
            try:
                sandbox.list_processes()
                break
            except Exception:
                if time.monotonic() > deadline:
                    _official_kill(made)
                    raise
                time.sleep(0.25)
    return made


def _patient(call: Callable[[], Any]) -> Any:
    """``call()``, again after a second while it fails on a 429 (hopx_ai retries a 429 twice
    within 3 s, then raises; past a rate-limit window that is too short)."""
    while True:
        try:
            return call()
        except Exception as exc:
            if getattr(exc, "status_code", None) != 429 and "429" not in str(exc):
                raise
        time.sleep(1.0)


def _official_kill(sandboxes: list[Any]) -> None:
    for sandbox in sandboxes:
        try:
            sandbox.kill()
        except Exception as exc:
            print(f"hopx_ai: kill of {sandbox.sandbox_id} failed: {exc!r}", file=sys.stderr)


def client_official_smart(cfg: Config) -> dict[str, Any]:
    """One poller thread per sandbox; starts from a pool of ``batch`` threads."""
    meter = Meter(cfg)
    sandboxes = _official_sandboxes(cfg)
    try:
        pending: list[set[str]] = [set() for _ in sandboxes]
        lock = threading.Lock()
        starting = threading.Event()
        starting.set()
        failures: list[BaseException] = []

        def poll(n: int) -> None:
            try:
                deadline = time.monotonic() + RUN_LIMIT
                while True:
                    with lock:
                        waiting = bool(pending[n])
                    if not waiting and not starting.is_set():
                        return
                    if waiting:
                        for p in _patient(sandboxes[n].list_processes):
                            pid = p["process_id"]
                            if p["status"] in TERMINAL:
                                with lock:
                                    mine = pid in pending[n]
                                    pending[n].discard(pid)
                                if mine:
                                    meter.seen(p.get("completed_at"), p["status"])
                    if time.monotonic() > deadline:
                        raise TimeoutError("tasks still running")
                    time.sleep(cfg.interval)
            except BaseException as exc:
                failures.append(exc)

        def start(i: int) -> None:
            n = i % len(sandboxes)
            answer = _patient(
                lambda: sandboxes[n].run_code_background(
                    code=cfg.command, language="bash", name=f"task-{i}"
                )
            )
            with lock:
                pending[n].add(answer["process_id"])

        meter.begin()
        pollers = [threading.Thread(target=poll, args=(n,)) for n in range(len(sandboxes))]
        for thread in pollers:
            thread.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=cfg.batch) as pool:
                for batch in cfg.batches():
                    for future in [pool.submit(start, i) for i in batch]:
                        future.result()
        finally:
            starting.clear()
            for thread in pollers:
                thread.join()
        if failures:
            raise failures[0]
        return meter.end()
    finally:
        _official_kill(sandboxes)


def client_official_docs(cfg: Config) -> dict[str, Any]:
    """The docs' pattern per task, one thread per task, ``doc_threads`` at a time."""
    meter = Meter(cfg)
    sandboxes = _official_sandboxes(cfg)
    try:

        def one(i: int) -> None:
            sandbox = sandboxes[i % len(sandboxes)]
            started = _patient(
                lambda: sandbox.run_code_background(
                    code=cfg.command, language="bash", name=f"task-{i}"
                )
            )
            pid = started["process_id"]
            deadline = time.monotonic() + RUN_LIMIT
            while True:
                listed = _patient(sandbox.list_processes)
                proc = next((p for p in listed if p["process_id"] == pid), None)
                if proc is None:
                    raise AssertionError(f"process {pid} not listed")
                if proc["status"] in TERMINAL:
                    meter.seen(proc.get("completed_at"), proc["status"])
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"process {pid} still {proc['status']}")
                time.sleep(cfg.doc_interval)

        meter.begin()
        with concurrent.futures.ThreadPoolExecutor(max_workers=cfg.doc_threads) as pool:
            for future in [pool.submit(one, i) for i in range(cfg.tasks)]:
                future.result()
        return meter.end()
    finally:
        _official_kill(sandboxes)


CLIENT_RUNS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "hopx_async": lambda cfg: asyncio.run(client_hopx_async(cfg)),
    "hopx_async-noext": lambda cfg: asyncio.run(client_hopx_async(cfg)),
    "raw": lambda cfg: asyncio.run(client_raw(cfg)),
    "hopx_ai-smart": client_official_smart,
    "hopx_ai-docs": client_official_docs,
}


def client_main(args: argparse.Namespace) -> int:
    cfg = Config(
        url=os.environ["HOPX_BASE_URL"],
        api_key=os.environ["HOPX_API_KEY"],
        tasks=args.tasks,
        batch=args.batch,
        command=args.command,
        interval=args.interval,
        doc_interval=args.doc_interval,
        doc_threads=args.doc_threads,
    )
    result = CLIENT_RUNS[args.run_client](cfg)
    print(json.dumps(result))
    return 0


# =========================================================================== command line
def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated task counts, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"task counts must be at least 1, got {text!r}")
    return sizes


def _clients(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in CLIENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown client(s) {unknown or text!r}; choose from {', '.join(CLIENTS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[100, 1000, 5000], metavar="N,N,...")
    parser.add_argument("--repeat", type=int, default=3, metavar="R", help="runs per cell (3)")
    parser.add_argument(
        "--clients", type=_clients, default=list(CLIENTS), metavar="A,B,...", help="default all"
    )
    parser.add_argument("--batch", type=int, default=50, help="starts in flight (50)")
    parser.add_argument("--command", default="sleep 0.2", help="each task (`sleep 0.2`)")
    parser.add_argument(
        "--interval", type=float, default=0.05, help="raw and hopx_ai smart poll pause (0.05 s)"
    )
    parser.add_argument(
        "--doc-interval", type=float, default=0.2, help="hopx_ai as documented pause (0.2 s)"
    )
    parser.add_argument(
        "--doc-threads", type=int, default=100, help="hopx_ai as documented: threads (100)"
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke run: N=100, once")
    parser.add_argument(
        "--dialect",
        choices=["extended", "hopx", "openapi"],
        default="extended",
        help="the local backend's dialect (extended; hopx: documented rate limits)",
    )
    parser.add_argument(
        "--task-seconds", type=float, default=0.2, help="a task's duration, for the least wall"
    )
    knobs = parser.add_argument_group("dialect knobs, passed to serve (the dialect's default)")
    knobs.add_argument("--create-rate", type=int, default=None, metavar="N", help="per window")
    knobs.add_argument("--boot-seconds", type=float, default=None, metavar="S")
    knobs.add_argument("--control-rate", type=int, default=None, metavar="N", help="per window")
    knobs.add_argument("--rate-window", type=float, default=None, metavar="S", help="seconds")
    knobs.add_argument(
        "--agent-rate", type=int, default=None, metavar="N", help="per sandbox and window"
    )
    parser.add_argument("--run-client", choices=list(CLIENTS), help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.repeat, args.batch, args.doc_threads) < 1:
        parser.error("--repeat, --batch and --doc-threads must be at least 1")
    if args.interval <= 0 or args.doc_interval <= 0:
        parser.error("--interval and --doc-interval must be positive")
    if args.run_client:
        return client_main(args)
    if args.quick:
        args.sizes, args.repeat = [100], 1
    if args.dialect != "extended":
        if args.clients == list(CLIENTS):
            args.clients = list(HOPX_CLIENTS)
        window = args.rate_window if args.rate_window is not None else HOPX_WINDOW
        # raw and hopx_ai smart: the sustained rate the agent limit allows, no faster
        args.interval = max(args.interval, window / agent_rate(args))
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
