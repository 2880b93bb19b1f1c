"""Benchmark the embedded local backend over real HTTP and print a table.

    .venv/bin/python benchmarks/bench_local_backend.py [--starts 200] [--finished 1000]

It starts ``python -m hopx_async.local serve`` as a subprocess twice (so the client does not
share the server's interpreter): once with the default isolation (a bubblewrap box per
process where possible) and once with ``HOPX_LOCAL_ISOLATION=none``, and measures with a
plain aiohttp client:

- start latency, on both servers: from sending ``POST /execute/background`` to the process
  being ``running`` (the answer's status, or the first poll that shows it), one at a time
  (``--starts``/4) and ``--concurrency`` at a time (``--starts``); and from sending a bash
  ``echo`` to its end (a long poll), one at a time, which includes making and tearing down
  the box;
- list latency with ``--finished`` finished processes in one sandbox: the documented full
  list, the ``output=false`` extension and a ``since`` delta with nothing new;
- the same full list through the official ``hopx_ai`` SDK's ``list_processes()`` (the peer,
  measured in the same run; skipped when hopx-ai is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
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


async def measure_starts(client: Client, count: int, concurrency: int) -> list[float]:
    sbx = await client.create_sandbox()

    async def start() -> float:
        t0 = time.perf_counter()
        answer = await client.agent(
            sbx,
            "POST",
            "/execute/background",
            json={
                "code": os.environ.get("BENCH_CODE", "import time; time.sleep(1)"),
                "language": os.environ.get("BENCH_LANG", "python"),
            },
        )
        pid = answer["process_id"]
        status = answer["status"]
        while status == "queued":
            proc = await client.agent(sbx, "GET", f"/execute/processes/{pid}")
            status = proc["status"]
        return time.perf_counter() - t0

    samples: list[float] = await bounded(concurrency, [start] * count)
    await client.agent(sbx, "GET", "/execute/processes?since=0&wait=0.1")
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


def start_server(isolation: str) -> tuple[subprocess.Popen[str], str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    env["HOPX_LOCAL_ISOLATION"] = isolation
    proc = subprocess.Popen(
        [sys.executable, "-m", "hopx_async.local", "serve", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip().split("=", 1)[1]
    api_key = proc.stdout.readline().strip().split("=", 1)[1]
    return proc, base_url, api_key


async def isolation_of(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.get(base_url + "/health") as resp:
        return str((await resp.json()).get("isolation", "?"))


async def run(args: argparse.Namespace, servers: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    connector = aiohttp.TCPConnector(limit=args.concurrency + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        for base_url, api_key in servers:
            client = Client(session, base_url, api_key)
            box = await isolation_of(session, base_url)
            alone = await measure_starts(client, args.starts // 4, 1)
            rows.append((f"start -> running, one at a time [{box}]", "aiohttp", len(alone), alone))
            starts = await measure_starts(client, args.starts, args.concurrency)
            label = f"start -> running, {args.concurrency} in flight [{box}]"
            rows.append((label, "aiohttp", len(starts), starts))
            trips = await measure_round_trips(client, args.starts // 4)
            rows.append((f"start -> ended, bash echo [{box}]", "aiohttp", len(trips), trips))
        base_url, api_key = servers[0]
        client = Client(session, base_url, api_key)
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
            samples = await timed(args.repeat, lambda path=path: client.agent(sbx, "GET", path))
            rows.append((label, "aiohttp", len(samples), samples))
        peer = await asyncio.to_thread(official_sdk_list, base_url, api_key, sbx["id"], args.repeat)
        if peer:
            rows.append((f"list {n} finished, full", "hopx_ai SDK", len(peer), peer))
        else:
            rows.append((f"list {n} finished, full", "hopx_ai SDK", 0, []))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=200, help="processes to start (200)")
    parser.add_argument("--concurrency", type=int, default=10, help="starts in flight (10)")
    parser.add_argument("--finished", type=int, default=1000, help="finished processes (1000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed list calls (20)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    started = [start_server("auto"), start_server("none")]
    try:
        rows = asyncio.run(run(args, [(url, key) for _, url, key in started]))
    finally:
        for server, _, _ in started:
            server.terminate()
            server.wait(timeout=15)
            if server.stdout is not None:
                server.stdout.close()
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
    print(f"total run time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
