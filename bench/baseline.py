"""The baseline: the straightforward script a user would write instead of batchgen.

asyncio with a semaphore around every request, every row started at once, a fixed 5 s between
polls, exponential backoff on 429 and 5xx with "full jitter" (a random delay up to 1 s, 2 s, 4 s,
... capped at 30 s: the AWS-recommended form; without jitter, every row in backoff retries in
the same instant and a 2,000-row run degenerates into 60-second waves). No journal, no resume,
no idempotency keys. Reads the same CSV manifest (columns id, prompt, model) as the benchmark's
batchgen job and prints a JSON summary on stdout.

    RIVYA_API_KEY=... RIVYA_BASE_URL=http://127.0.0.1:8787 python bench/baseline.py manifest.csv
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import time

import aiohttp

CONCURRENCY = 32
POLL_EVERY = 5.0
BACKOFF_CAP = 30.0


async def request(
    session: aiohttp.ClientSession, sem: asyncio.Semaphore, method: str, url: str, **kw
):  # type: ignore[no-untyped-def]
    attempt = 0
    while True:
        async with sem, session.request(method, url, **kw) as resp:
            body = await resp.json(content_type=None)
            status = resp.status
        if status != 429 and status < 500:
            return status, body
        attempt += 1
        await asyncio.sleep(random.uniform(0.0, min(BACKOFF_CAP, 2.0 ** (attempt - 1))))


async def one_row(session, sem, base: str, row: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    status, task = await request(
        session,
        sem,
        "POST",
        f"{base}/api/v1/generations",
        json={"model": row["model"], "prompt": row["prompt"]},
    )
    if status >= 400:
        return "failed"
    while task["status"] not in ("succeeded", "failed"):
        await asyncio.sleep(POLL_EVERY)
        _status, task = await request(
            session, sem, "GET", f"{base}/api/v1/generations/{task['id']}"
        )
    return str(task["status"])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    args = ap.parse_args()
    base = os.environ["RIVYA_BASE_URL"].rstrip("/")
    headers = {"Authorization": f"Bearer {os.environ['RIVYA_API_KEY']}"}
    with open(args.manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    started = time.monotonic()
    sem = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        results = await asyncio.gather(*(one_row(session, sem, base, row) for row in rows))
    counts: dict[str, int] = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    print(
        json.dumps(
            {
                "rows": len(rows),
                "by_status": counts,
                "wall_seconds": round(time.monotonic() - started, 2),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
