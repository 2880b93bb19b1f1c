"""Benchmark the embedded local backend over real HTTP and print a table.

    .venv/bin/python benchmarks/bench_local_backend.py [--starts 200] [--concurrency 20]
        [--true-starts 2000] [--true-concurrency 50] [--running 200] [--finished 1000]

It runs the server twice in subprocesses of its own (so the client does not share the
server's interpreter), with ``isolation="none"`` and with the default isolation (a bubblewrap
box per sandbox where possible), each with a probe in the server's event loop (a 2 ms timer:
how long the loop was kept from running it, and the server's OS thread count). It measures,
with a plain aiohttp client, for both servers in the same run:

- start -> running: from sending ``POST /commands/background`` (``sleep 2``) to the process
  being ``running`` (the answer's status, or the first poll that shows it), one at a time
  (``--starts``/4) and ``--concurrency`` at a time (``--starts``), each on a new sandbox (so
  the first starts wait for its box to be made), and ``--concurrency`` at a time again on a
  sandbox whose box is made (one start before), with the loop's blocked time and the thread
  count while it ran;
- starts per second of ``true`` (``--true-starts``, ``--true-concurrency`` in flight), with the
  loop's blocked time;
- start -> ended of a bash ``echo``, one at a time: the box's spawn cost is the difference
  between the two servers' rows;
- the server's threads with ``--running`` processes running at once;
- list latency with ``--finished`` finished processes in one sandbox (``0``: skipped): the
  documented full list, the ``output=false`` extension and a ``since`` delta with nothing new,
  and the same full list through the official ``hopx_ai`` SDK's ``list_processes()``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self.session = session
        self.base_url = base_url
        self.api_key = api_key

    async def create_sandbox(self) -> dict[str, Any]:
        async with self.session.post(
            self.base_url + "/v1/sandboxes",
            json={"template_name": "code-interpreter"},
            headers={"X-API-Key": self.api_key},
        ) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def agent(
        self, sbx: dict[str, Any], method: str, path: str, **kwargs: Any
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {sbx['auth_token']}"}
        async with self.session.request(
            method, sbx["public_host"] + path, headers=headers, **kwargs
        ) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*[one(job) for job in jobs])


async def measure_round_trips(client: Client, count: int) -> list[float]:
    sbx = await client.create_sandbox()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        answer = await client.agent(
            sbx, "POST", "/commands/background", json={"command": "echo hi"}
        )
        path = f"/execute/processes/{answer['process_id']}?wait=10"
        while (await client.agent(sbx, "GET", path))["status"] in ("queued", "running"):
            pass
        samples.append(time.perf_counter() - t0)
    return samples


async def fill(client: Client, finished: int, concurrency: int) -> dict[str, Any]:
    sbx = await client.create_sandbox()

    def job(n: int) -> Callable[[], Awaitable[Any]]:
        command = f"printf 'process {n} %0200d\\n' 0; echo done >&2"
        return lambda: client.agent(sbx, "POST", "/commands/background", json={"command": command})

    await bounded(concurrency, [job(n) for n in range(finished)])
    while True:
        listed = await client.agent(sbx, "GET", "/execute/processes?output=false")
        if all(p["status"] == "completed" for p in listed["processes"]):
            return sbx
        await asyncio.sleep(0.2)


async def timed(repeat: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    await call()  # warm-up
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    return samples


def official_sdk_list(base_url: str, api_key: str, sandbox_id: str, repeat: int) -> list[float]:
    try:
        import hopx_ai
    except ImportError:
        return []
    sandbox = hopx_ai.Sandbox(sandbox_id, api_key=api_key, base_url=base_url)
    count = len(sandbox.list_processes())  # warm-up: agent client, token, health check
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = len(sandbox.list_processes())
        samples.append(time.perf_counter() - t0)
    assert count > 0
    return samples


# -- the server, in a process of its own, with a probe of its event loop -------------------


class LoopProbe:
    """Measures how long the server's loop was kept from running a 2 ms timer, and threads."""

    TICK = 0.002

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.blocked = 0.0
        self.max_lag = 0.0
        self.threads_max = _threads()
        self.since = time.perf_counter()
        self.cpu_since = time.process_time()

    def report(self) -> dict[str, float]:
        return {
            "blocked_ms": self.blocked * 1000,
            "max_lag_ms": self.max_lag * 1000,
            "wall_ms": (time.perf_counter() - self.since) * 1000,
            # The server process's CPU (all its threads, not its children's).
            "cpu_ms": (time.process_time() - self.cpu_since) * 1000,
            "threads_max": self.threads_max,
            "threads_now": _threads(),
        }

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.TICK)
            lag = time.perf_counter() - t0 - self.TICK
            # Under 0.5 ms is the timer's own jitter, not the loop being busy.
            if lag > 0.0005:
                self.blocked += lag
            self.max_lag = max(self.max_lag, lag)
            self.threads_max = max(self.threads_max, _threads())


def _threads() -> int:
    """The server process's OS threads (Python's and any other)."""
    return len(os.listdir("/proc/self/task"))


async def serve(isolation: str) -> None:
    """The server side of the benchmark: ``mark`` on stdin answers the probe's figures since
    the previous ``mark`` as one JSON line on stdout; end of stdin stops the server."""

    from hopx_async.local import LocalBackend

    probe = LoopProbe()
    loop = asyncio.get_running_loop()
    eof = loop.create_future()

    def on_stdin() -> None:
        data = os.read(0, 4096)
        if not data:
            loop.remove_reader(0)
            if not eof.done():
                eof.set_result(None)
            return
        for _ in range(data.count(b"\n")):
            print(json.dumps(probe.report()), flush=True)
            probe.reset()

    async with LocalBackend(isolation=isolation) as backend:  # type: ignore[arg-type]
        print(f"HOPX_BASE_URL={backend.base_url}", flush=True)
        print(f"HOPX_API_KEY={backend.api_key}", flush=True)
        task = asyncio.ensure_future(probe.run())
        loop.add_reader(0, on_stdin)
        try:
            await eof
        finally:
            task.cancel()


class Server:
    def __init__(self, isolation: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", isolation],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip().split("=", 1)[1]
        self.api_key = self.proc.stdout.readline().strip().split("=", 1)[1]

    def _mark(self) -> dict[str, float]:

        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("mark\n")
        self.proc.stdin.flush()
        figures: dict[str, float] = json.loads(self.proc.stdout.readline())
        return figures

    async def mark(self) -> dict[str, float]:
        return await asyncio.to_thread(self._mark)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


# -- measurements ----------------------------------------------------------------------------


async def measure_command_starts(
    client: Client, sbx: dict[str, Any], count: int, concurrency: int, argv: list[str]
) -> tuple[list[float], float]:
    """Start ``argv`` ``count`` times, ``concurrency`` in flight: (start -> running, wall s)."""

    async def start() -> float:
        t0 = time.perf_counter()
        body = {"command": argv[0], "args": argv[1:]}
        answer = await client.agent(sbx, "POST", "/commands/background", json=body)
        status = answer["status"]
        while status == "queued":
            proc = await client.agent(sbx, "GET", f"/execute/processes/{answer['process_id']}")
            status = proc["status"]
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    samples: list[float] = await bounded(concurrency, [start] * count)
    return samples, time.perf_counter() - t0


async def all_ended(client: Client, sbx: dict[str, Any]) -> None:
    while True:
        listed = await client.agent(sbx, "GET", "/execute/processes?output=false")
        if all(p["status"] not in ("queued", "running") for p in listed["processes"]):
            return
        await asyncio.sleep(0.1)


async def measure_server(
    args: argparse.Namespace, session: aiohttp.ClientSession, server: Server
) -> tuple[str, list[tuple[Any, ...]], list[tuple[str, str]]]:
    client = Client(session, server.base_url, server.api_key)
    box = await isolation_of(session, server.base_url)
    rows: list[tuple[Any, ...]] = []
    figures: list[tuple[str, str]] = []
    sleeper = ["sleep", "2"]
    phases = (
        (1, max(1, args.starts // 4), False),
        (args.concurrency, args.starts, False),
        (args.concurrency, args.starts, True),
    )
    for concurrency, count, warm in phases:
        sbx = await client.create_sandbox()
        if warm:  # one start first: the sandbox's box is made (a VM already booted)
            await measure_command_starts(client, sbx, 1, 1, ["true"])
        await server.mark()
        samples, _ = await measure_command_starts(client, sbx, count, concurrency, sleeper)
        probe = await server.mark()
        made = ", box made" if warm else ""
        label = f"start -> running, {concurrency} in flight{made} [{box}]"
        rows.append((label, "aiohttp", len(samples), samples))
        figures.append(
            (
                label,
                f"loop blocked {probe['blocked_ms']:.0f} of {probe['wall_ms']:.0f} ms, "
                f"max lag {probe['max_lag_ms']:.1f} ms, threads max {probe['threads_max']:.0f}",
            )
        )
        await all_ended(client, sbx)
    sbx = await client.create_sandbox()
    await server.mark()
    samples, wall = await measure_command_starts(
        client, sbx, args.true_starts, args.true_concurrency, ["true"]
    )
    probe = await server.mark()
    await all_ended(client, sbx)
    label = f"starts of `true`, {args.true_concurrency} in flight [{box}]"
    figures.append(
        (
            label,
            f"{len(samples) / wall:.0f} starts/s ({len(samples)} in {wall:.2f} s), "
            f"server CPU {probe['cpu_ms'] / len(samples):.2f} ms per start, "
            f"loop blocked {probe['blocked_ms']:.0f} of {probe['wall_ms']:.0f} ms, "
            f"max lag {probe['max_lag_ms']:.1f} ms, threads max {probe['threads_max']:.0f}",
        )
    )
    trips = await measure_round_trips(client, max(1, args.starts // 4))
    rows.append((f"start -> ended, bash echo, one at a time [{box}]", "aiohttp", len(trips), trips))
    # Threads while many processes run at once.
    sbx = await client.create_sandbox()
    before = (await server.mark())["threads_now"]
    await bounded(
        args.concurrency,
        [
            lambda: client.agent(
                sbx, "POST", "/commands/background", json={"command": "sleep", "args": ["30"]}
            )
        ]
        * args.running,
    )
    during = (await server.mark())["threads_now"]
    await client.session.delete(
        server.base_url + f"/v1/sandboxes/{sbx['id']}", headers={"X-API-Key": server.api_key}
    )
    figures.append(
        (
            f"server threads, {args.running} processes running [{box}]",
            f"{during:.0f} (idle: {before:.0f})",
        )
    )
    return box, rows, figures


async def measure_lists(
    args: argparse.Namespace, session: aiohttp.ClientSession, server: Server
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    client = Client(session, server.base_url, server.api_key)
    sbx = await fill(client, args.finished, args.concurrency)
    listed = await client.agent(sbx, "GET", "/execute/processes")
    size_kib = len(str(listed)) // 1024
    version = listed["version"]
    n = args.finished
    for label, query in [
        (f"list {n} finished, full (~{size_kib} KiB)", ""),
        (f"list {n} finished, output=false", "?output=false"),
        (f"list {n} finished, since=<current>", f"?since={version}"),
    ]:
        path = "/execute/processes" + query

        def call(path: str = path) -> Awaitable[Any]:
            return client.agent(sbx, "GET", path)

        samples = await timed(args.repeat, call)
        rows.append((label, "aiohttp", len(samples), samples))
    peer = await asyncio.to_thread(
        official_sdk_list, server.base_url, server.api_key, sbx["id"], args.repeat
    )
    rows.append((f"list {n} finished, full", "hopx_ai SDK", len(peer), peer))
    return rows


async def isolation_of(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.get(base_url + "/health") as resp:
        return str((await resp.json()).get("isolation", "?"))


async def run(
    args: argparse.Namespace, servers: list[Server]
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    rows: list[tuple[Any, ...]] = []
    figures: list[tuple[str, str]] = []
    limit = max(args.concurrency, args.true_concurrency) + 4
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:
        for server in servers:
            _, server_rows, server_figures = await measure_server(args, session, server)
            rows += server_rows
            figures += server_figures
        if args.finished:
            rows += await measure_lists(args, session, servers[0])
    return rows, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=200, help="processes to start (200)")
    parser.add_argument("--concurrency", type=int, default=20, help="starts in flight (20)")
    parser.add_argument("--true-starts", type=int, default=2000, help="starts of true (2000)")
    parser.add_argument("--true-concurrency", type=int, default=50, help="in flight (50)")
    parser.add_argument("--running", type=int, default=200, help="processes run at once (200)")
    parser.add_argument("--finished", type=int, default=1000, help="finished processes (1000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed list calls (20)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0

    t0 = time.perf_counter()
    servers = [Server("none"), Server("auto")]
    try:
        rows, figures = asyncio.run(run(args, servers))
    finally:
        for server in servers:
            server.stop()
    print(f"local backend benchmark ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    header = f"{'measurement':54} {'client':12} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}"
    print(header)
    print("-" * len(header))
    for label, client, count, samples in rows:
        if not samples:
            print(f"{label:54} {client:12} {'skipped (hopx-ai not installed)':>34}")
            continue
        p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
        mean = statistics.fmean(samples) * 1000
        print(f"{label:54} {client:12} {count:5d} {p50:9.1f} {p99:9.1f} {mean:9.1f}")
    print()
    for label, text in figures:
        print(f"{label:54} {text}")
    ended = {
        label.rsplit("[", 1)[1].rstrip("]"): percentile(samples, 50) * 1000
        for label, _, _, samples in rows
        if label.startswith("start -> ended") and samples
    }
    if "bubblewrap" in ended and "none" in ended:
        print(
            f"{'spawn cost of the box (start -> ended p50)':54} "
            f"{ended['bubblewrap']:.1f} ms boxed, {ended['none']:.1f} ms bare, "
            f"{ended['bubblewrap'] - ended['none']:+.1f} ms per process"
        )
    rates = {
        label.rsplit("[", 1)[1].rstrip("]"): float(text.split(" starts/s", 1)[0])
        for label, text in figures
        if label.startswith("starts of `true`") and " starts/s" in text
    }
    if "bubblewrap" in rates and "none" in rates and rates["none"]:
        print(
            f"{'starts/s boxed vs bare (target >= 0.8x)':54} "
            f"{rates['bubblewrap']:.0f} boxed, {rates['none']:.0f} bare, "
            f"{rates['bubblewrap'] / rates['none']:.2f}x"
        )
    for made in ("", ", box made"):
        in_flight = {
            label.rsplit("[", 1)[1].rstrip("]"): percentile(samples, 99) * 1000
            for label, _, _, samples in rows
            if label.startswith(f"start -> running, {args.concurrency} in flight{made} [")
            and samples
        }
        if "bubblewrap" in in_flight and "none" in in_flight:
            print(
                f"{f'start p99 at {args.concurrency} in flight{made} (target boxed <= 30 ms)':54} "
                f"{in_flight['bubblewrap']:.1f} ms boxed, {in_flight['none']:.1f} ms bare"
            )
    print(f"total run time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
