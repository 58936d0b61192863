"""``python -m benchmarks.streams``: hold many server-sent event streams open (a helper process).

Opens one ``GET …/events`` stream per task id of ``--ids`` (token in ``BENCH_TOKEN``), prints ``ready <n>`` once every
stream has its first event, keeps them open (reading keep-alives) for ``--hold`` seconds, closes
them and prints a JSON summary as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import httpx


async def hold(base: str, token: str, task_ids: list[str], hold_s: float, open_timeout: float) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=len(task_ids) + 8, max_keepalive_connections=0)
    first = asyncio.Event()
    opened = 0
    lines = 0
    failures: list[str] = []
    release = asyncio.Event()

    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=httpx.Timeout(open_timeout, read=None), trust_env=False
    ) as client:

        async def one(task_id: str) -> None:
            nonlocal opened, lines
            try:
                async with client.stream("GET", f"/tasks/{task_id}/events", headers=headers) as response:
                    if response.status_code != 200:
                        failures.append(str(response.status_code))
                        return
                    seen_event = False
                    async for line in response.aiter_lines():
                        lines += 1
                        if line.startswith("event:") and not seen_event:
                            seen_event = True
                            opened += 1
                            if opened == len(task_ids):
                                first.set()
                        if release.is_set():
                            return
            except (httpx.HTTPError, asyncio.CancelledError) as exc:
                if not release.is_set():
                    failures.append(type(exc).__name__)

        started = time.monotonic()
        tasks = [asyncio.create_task(one(t)) for t in task_ids]
        try:
            await asyncio.wait_for(first.wait(), open_timeout)
        except asyncio.TimeoutError:
            pass
        open_s = time.monotonic() - started
        print(f"ready {opened}", flush=True)
        lines_at_ready = lines
        await asyncio.sleep(hold_s)
        lines_held = lines - lines_at_ready
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": len(task_ids),
        "opened": opened,
        "open_s": round(open_s, 2),
        "held_s": hold_s,
        "lines_while_held": lines_held,
        "failures": failures[:5],
        "failure_count": len(failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ids", required=True, help="a file with one task id per line")
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--open-timeout", type=float, default=120.0)
    args = parser.parse_args()
    with open(args.ids) as lines:
        task_ids = [line.strip() for line in lines if line.strip()]
    token = os.environ["BENCH_TOKEN"]  # not an argument: command lines are visible to everyone
    print(json.dumps(asyncio.run(hold(args.url, token, task_ids, args.hold, args.open_timeout))), flush=True)


if __name__ == "__main__":
    main()
