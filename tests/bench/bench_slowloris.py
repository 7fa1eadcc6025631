"""Normal clients' latency through the sidecar while 1,000 connections hold a slowloris.

Run it from the repository root::

    .venv/bin/python tests/bench/bench_slowloris.py           # ~40 s
    .venv/bin/python tests/bench/bench_slowloris.py --quick   # ~15 s

Not a pytest test. Everything on loopback, each part in its own process: the upstream of
``bench_proxy.py`` (a fixed KServe V2 answer), ``modelmon serve`` with its file descriptor limit
set to ``--nofile`` (default 1024, soft and hard: the issue's set-up, where 1,000 slow clients
used to leave no descriptor for the upstream pool), and this process as both the attacker and
the normal clients.

1. Normal clients alone: POSTs at ``--rate`` requests/s over 8 keep-alive connections for
   ``--seconds``; p50, p99 and max latency, and how many were not a 200.
2. The same while 1,000 attacking connections each send a request head a few bytes at a time
   (one byte every 5 s, the classic slowloris) and are reopened whenever the sidecar closes
   them; how many the sidecar closed to make room (``evicted``) or for taking too long
   (``head_timeout``), read from its ``/metrics``.

Prints the figures; exits 1 if a normal call failed during the attack, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from bench_proxy import Child, free_ports, not_ready, percentile, wait_for

BODY = (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", '
        b'"data": [0.1, 0.2, 0.3, 0.4]}]}')
TARGET = "/v2/models/m/infer"
# Runs modelmon with RLIMIT_NOFILE (soft and hard) set to argv[1].
WITH_NOFILE = ("import os, resource, sys; n = int(sys.argv[1]); "
               "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
               "os.execv(sys.executable, [sys.executable, '-m', 'modelmon', *sys.argv[2:]])")


async def normal_clients(port: int, rate: float, seconds: float) -> tuple[list[float], int]:
    """Fixed-rate POSTs over 8 keep-alive connections: (latencies in seconds, failures)."""
    latencies: list[float] = []
    failures = 0
    url = f"http://127.0.0.1:{port}{TARGET}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:

        async def one() -> None:
            nonlocal failures
            t = time.perf_counter()
            try:
                async with session.post(url, data=BODY,
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                failures += 1

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return latencies, failures


class Slowloris:
    """``n`` connections, each sending a request head one byte every ``interval`` seconds,
    reopened when the sidecar closes them."""

    def __init__(self, port: int, n: int, interval: float = 5.0) -> None:
        self.port, self.n, self.interval = port, n, interval
        self.reopened = 0
        self.refused = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self) -> None:
        head = b"POST " + TARGET.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.5)
                continue
            try:
                for byte in head:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:  # the sidecar answering or closing ends this connection
                        if await asyncio.wait_for(reader.read(1024), self.interval) == b"":
                            break
                        break
                    except asyncio.TimeoutError:
                        continue
            except ConnectionError:
                pass
            finally:
                writer.close()
            self.reopened += 1
            await asyncio.sleep(0.5)  # as slowloris tools do: reopen on their next round

    async def start(self) -> None:
        for _ in range(self.n):
            self._tasks.append(asyncio.ensure_future(self._one()))
            await asyncio.sleep(0.001)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def metric(admin: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def summary(label: str, latencies: list[float], failures: int) -> str:
    lat = sorted(latencies)
    if not lat:
        return f"{label:<28} no successful call, {failures} failed"
    return (f"{label:<28} {len(lat):>6} ok {failures:>5} failed   p50 {statistics.median(lat) * 1e3:7.2f} ms"
            f"   p99 {percentile(lat, 0.99) * 1e3:7.2f} ms   max {lat[-1] * 1e3:8.2f} ms")


async def attack(port: int, n: int) -> None:
    """The attacker process: holds the slowloris until terminated."""
    slow = Slowloris(port, n)
    await slow.start()
    await asyncio.Event().wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--connections", type=int, default=1000, help="slowloris connections")
    p.add_argument("--nofile", type=int, default=1024, help="the sidecar's RLIMIT_NOFILE")
    p.add_argument("--role", choices=["bench", "attack"], default="bench")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    if args.role == "attack":
        resource.setrlimit(resource.RLIMIT_NOFILE, (4 * args.connections + 256,) * 2)
        asyncio.run(attack(args.port, args.connections))
        return 0
    seconds = 4.0 if args.quick else 15.0
    bench = Path(__file__).parent / "bench_proxy.py"
    up_port, traffic, admin = free_ports(3)
    logdir = Path(tempfile.mkdtemp(prefix="bench-slowloris-"))
    upstream = Child("upstream", [sys.executable, str(bench), "--role", "upstream", "--port", str(up_port)],
                     logdir)
    sidecar = Child("sidecar", [sys.executable, "-c", WITH_NOFILE, str(args.nofile), "serve", "--upstream",
                                f"http://127.0.0.1:{up_port}", "--host", "127.0.0.1",
                                "--traffic-port", str(traffic), "--admin-port", str(admin),
                                "--log-level", "warning"], logdir)
    try:
        wait_for("sidecar", lambda: not_ready(admin, "/healthz"), sidecar)
        quiet, quiet_failed = asyncio.run(normal_clients(traffic, args.rate, seconds))
        attacker = Child("attacker", [sys.executable, __file__, "--role", "attack", "--port", str(traffic),
                                      "--connections", str(args.connections)], logdir)
        try:
            time.sleep(3.0)  # all connections open
            attacker.check_alive()
            loud, loud_failed = asyncio.run(normal_clients(traffic, args.rate, seconds))
        finally:
            attacker.stop()
        evicted = metric(admin, 'modelmon_proxy_client_connections_closed_total{reason="evicted"}')
        timed_out = metric(admin, 'modelmon_proxy_client_connections_closed_total{reason="head_timeout"}')
        cap = metric(admin, "modelmon_proxy_client_connections_limit")
        print(f"sidecar RLIMIT_NOFILE {args.nofile}; client connection limit {cap:.0f}; "
              f"{args.connections} slowloris connections; normal clients at {args.rate:.0f}/s for {seconds:.0f} s")
        print(summary("normal clients alone", quiet, quiet_failed))
        print(summary("during the slowloris", loud, loud_failed))
        if quiet and loud:
            print(f"p99 during the attack / alone: {percentile(sorted(loud), 0.99) / percentile(sorted(quiet), 0.99):.2f}x")
        print(f"attack connections closed by the sidecar: evicted {evicted:.0f}, head_timeout {timed_out:.0f}")
        too_many = "Too many open files" in sidecar.log_text()
        print("'Too many open files' in the sidecar's log:", "yes" if too_many else "no")
        return 1 if loud_failed or too_many else 0
    finally:
        sidecar.stop()
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
