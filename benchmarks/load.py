"""A closed-loop HTTP load generator: N keep-alive clients, each sending its next request when
the previous one answered, bounded both in time and in request count.

Each client is its own ``httpx.AsyncClient`` holding one keep-alive connection. Every client
first sends a few warm-up requests (not counted) so that connections are open before timing
starts. The generator reports its own CPU time, because on a small machine it competes with the
server for the same cores.

Run it as a separate process (the benchmarks do) so its CPU use is its own::

    python -m benchmarks.load --url http://127.0.0.1:8000/ping --clients 32 --duration 15

It prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any, Optional

import httpx

from benchmarks.stats import summary_ms

MAX_ERROR_SAMPLES = 5


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_load(
    url: str,
    *,
    clients: int = 1,
    duration_s: float = 10.0,
    max_requests: int = 100_000,
    method: str = "GET",
    headers: Optional[dict[str, str]] = None,
    form: Optional[dict[str, str]] = None,
    expect: tuple[int, ...] = (200,),
    warmup_per_client: int = 2,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Drive ``url`` with ``clients`` concurrent closed-loop clients; returns the figures."""
    if clients < 1 or max_requests < 1 or duration_s <= 0:
        raise ValueError("clients, max_requests and duration_s must be positive")
    latencies: list[float] = []  # seconds, in completion order
    statuses: dict[str, int] = {}
    errors: list[str] = []
    issued = 0
    start = asyncio.Event()
    ready = 0
    all_ready = asyncio.Event()
    deadline = [0.0]

    async def one(client: httpx.AsyncClient) -> httpx.Response:
        if method == "GET":
            return await client.get(url, headers=headers)
        return await client.request(method, url, headers=headers, data=form)

    async def worker() -> None:
        nonlocal issued, ready
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=timeout_s, trust_env=False) as client:
            for _ in range(warmup_per_client):
                try:
                    await one(client)
                except httpx.HTTPError as exc:
                    if len(errors) < MAX_ERROR_SAMPLES:
                        errors.append(f"warm-up: {type(exc).__name__}: {exc}")
            ready += 1
            if ready == clients:
                all_ready.set()
            await start.wait()
            while issued < max_requests and time.perf_counter() < deadline[0]:
                issued += 1
                sent = time.perf_counter()
                try:
                    response = await one(client)
                    code = str(response.status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                    if len(errors) < MAX_ERROR_SAMPLES:
                        errors.append(f"{code}: {exc}")
                latencies.append(time.perf_counter() - sent)
                statuses[code] = statuses.get(code, 0) + 1
                if code.isdigit() and int(code) not in expect and len(errors) < MAX_ERROR_SAMPLES:
                    errors.append(f"HTTP {code}: {response.text[:200]}")

    tasks = [asyncio.create_task(worker()) for _ in range(clients)]
    # Warm-up is bounded too: a server that never answers must not hang the benchmark.
    try:
        await asyncio.wait_for(all_ready.wait(), timeout=timeout_s * (warmup_per_client + 1))
    except asyncio.TimeoutError:
        pass
    cpu_before = _cpu_seconds()
    began = time.perf_counter()
    deadline[0] = began + duration_s
    start.set()
    await asyncio.wait(tasks, timeout=duration_s + timeout_s + 5)
    for task in tasks:
        task.cancel()
    wall = time.perf_counter() - began
    cpu = _cpu_seconds() - cpu_before
    ok = sum(n for code, n in statuses.items() if code.isdigit() and int(code) in expect)
    fifth = max(len(latencies) // 5, 1)
    return {
        "url": url,
        "method": method,
        "clients": clients,
        "requests": len(latencies),
        "ok": ok,
        "statuses": statuses,
        "errors": errors,
        "wall_s": wall,
        "rps": len(latencies) / wall if wall > 0 else None,
        "ok_rps": ok / wall if wall > 0 else None,
        "latency_ms": summary_ms(latencies),
        "first_fifth_p50_ms": summary_ms(latencies[:fifth])["p50"],
        "last_fifth_p50_ms": summary_ms(latencies[-fifth:])["p50"],
        "client_cpu_s": cpu,
        "client_cpu_pct_of_core": 100.0 * cpu / wall if wall > 0 else None,
        "client_cpu_ms_per_request": 1000.0 * cpu / len(latencies) if latencies else None,
    }


def _parse_pairs(items: list[str], sep: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, _, value = item.partition(sep)
        out[key.strip()] = value.strip() if sep == ":" else value
    return out


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load (default 10)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--form", action="append", default=[], help="'key=value' form field, repeatable")
    parser.add_argument("--expect", default="200", help="comma-separated status codes counted as success")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted requests per client first")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    args = parser.parse_args(argv)
    try:
        import uvloop  # the client's own overhead is not what is measured: keep it low

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        run_load(
            args.url,
            clients=args.clients,
            duration_s=args.duration,
            max_requests=args.max_requests,
            method=args.method.upper(),
            headers=_parse_pairs(args.header, ":"),
            form=_parse_pairs(args.form, "=") or None,
            expect=tuple(int(c) for c in args.expect.split(",")),
            warmup_per_client=args.warmup,
            timeout_s=args.timeout,
        )
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
