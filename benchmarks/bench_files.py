"""Benchmark ``sandbox.files`` upload and download against the embedded local backend.

    .venv/bin/python benchmarks/bench_files.py [--mib 500]

Writes a ``--mib`` MiB file of random bytes, uploads it with ``sandbox.files.upload`` and
downloads it back with ``sandbox.files.download`` (client and server in this one process),
then prints the throughput, whether the bytes came back identical (SHA-256, read in chunks)
and the process's peak RSS before and after: with streaming on both sides it grows by a few
MiB, whatever the file's size.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import tempfile
import time

from hopx_async import AsyncHopx
from hopx_async.local import LocalBackend


def digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def peak_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


async def main(mib: int) -> None:
    async with (
        LocalBackend() as backend,
        AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as client,
        client.sandboxes.create("code-interpreter") as sandbox,
    ):
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "source.bin")
            block = os.urandom(1 << 20)
            with open(source, "wb") as f:
                for _ in range(mib):
                    f.write(block)
            before = peak_mib()
            started = time.perf_counter()
            sent = await sandbox.files.upload(source, "bench.bin")
            upload = time.perf_counter() - started
            back = os.path.join(tmp, "back.bin")
            started = time.perf_counter()
            received = await sandbox.files.download("bench.bin", back)
            download = time.perf_counter() - started
            after = peak_mib()
            same = digest(source) == digest(back)
    print(f"file size          {sent / 2**20:8.0f} MiB")
    print(f"upload             {upload:8.2f} s  {sent / upload / 2**20:6.0f} MiB/s")
    print(f"download           {download:8.2f} s  {received / download / 2**20:6.0f} MiB/s")
    print(f"identical          {same!s:>8}")
    print(f"peak RSS           {before:8d} MiB before, {after} MiB after")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500, help="file size in MiB")
    asyncio.run(main(parser.parse_args().mib))
