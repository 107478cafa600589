#!/usr/bin/env python3
"""Bounded load test of `bert2lr serve` on loopback.

Starts the service on 127.0.0.1, then keeps a fixed number of keep-alive connections busy
with POST /predict (one test review per request) for a fixed time, and prints requests/s,
p50/p99 latency and the error count as JSON. It never contacts anything beyond 127.0.0.1.

    .venv/bin/python scripts/loadtest.py --seconds 60 --connections 16 --out metrics/loadtest.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def worker(port: int, bodies: list[bytes], stop_at: float, latencies: list[float], errors: list[str]):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random(len(latencies))
    try:
        while time.perf_counter() < stop_at:
            body = rng.choice(bodies)
            request = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status_line or b'"predictions"' not in payload:
                errors.append(status_line.decode(errors="replace").strip())
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()


async def load(port: int, bodies: list[bytes], seconds: float, connections: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(worker(port, bodies, started + seconds, latencies, errors) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "seconds": round(elapsed, 1), "connections": connections, "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3)},
        "errors": len(errors), "first_errors": errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/student")
    parser.add_argument("--reviews", default="data/splits/test.jsonl")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", type=Path, help="also write the result here")
    args = parser.parse_args()

    texts = [json.loads(line)["text"] for line in open(args.reviews, encoding="utf-8")]
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bert2lr", "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--model", args.model], stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("loadtest: the server exited: " + server.stderr.read().decode())
                time.sleep(0.1)
        result = asyncio.run(load(port, bodies, args.seconds, args.connections))
    finally:
        server.terminate()
        server.wait(timeout=10)
    result["server"] = "bert2lr serve (uvicorn, 1 process)"
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
