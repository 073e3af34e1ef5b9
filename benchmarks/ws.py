"""Broadcast latency to many WebSocket connections on one `yuntu serve`, with a same-run baseline.

`yuntu serve` runs with Redis (the distributed event path: a publish to Redis, one subscription
per process, fan-out to every local connection). `--connections` clients (default 5,000, in
several client processes) connect to /ws as one user, and the benchmark publishes broadcasts to
that user's channel through Redis; each client records publish-to-receipt latency. The
baseline is a bare FastAPI WebSocket endpoint that forwards the same Redis channel to all its
sockets, served the same way, measured with the same clients in the same run.

    .venv/bin/python benchmarks/ws.py [--connections 5000] [--broadcasts 5]

Goal (issue 3): p99 <= 500 ms with 5,000 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import WebSocket, WebSocketDisconnect  # module level: endpoint annotations resolve

REDIS = os.environ.get("YUNTU_BENCH_REDIS", "redis://127.0.0.1:6379/13")
CHANNEL_PREFIX = "yuntu:events:"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_bare(port: int, channel: str) -> None:
    import redis.asyncio as redis
    import uvicorn
    from fastapi import FastAPI

    sockets: set[WebSocket] = set()

    async def forward() -> None:
        client = redis.from_url(REDIS)
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        async for item in pubsub.listen():
            if item["type"] == "message":
                text = item["data"].decode()
                await asyncio.gather(
                    *[ws.send_text(text) for ws in list(sockets)], return_exceptions=True
                )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(forward())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws")
    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(json.dumps({"type": "connected"}))
        sockets.add(ws)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            sockets.discard(ws)

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def client_process(
    url: str, count: int, broadcasts: int, ready: mp.Queue, results: mp.Queue
) -> None:
    async def main() -> None:
        import websockets

        latencies: list[float] = []
        connections = []
        for index in range(count):
            for _attempt in range(5):
                try:
                    ws = await websockets.connect(
                        url, open_timeout=30, ping_interval=None, max_queue=None
                    )
                    break
                except OSError:
                    await asyncio.sleep(0.5)
            else:
                raise RuntimeError("could not connect")
            await ws.recv()  # connected
            connections.append(ws)
            if index % 200 == 199:
                await asyncio.sleep(0.05)
        ready.put(len(connections))

        async def listen(ws) -> None:
            for _ in range(broadcasts):
                message = json.loads(await ws.recv())
                sent = message.get("data", {}).get("sent")
                if sent:
                    latencies.append((time.time() - sent) * 1000)

        await asyncio.wait_for(asyncio.gather(*[listen(ws) for ws in connections]), 300)
        results.put(latencies)
        await asyncio.gather(*[ws.close() for ws in connections], return_exceptions=True)

    asyncio.run(main())


def measure(url: str, channel: str, connections: int, broadcasts: int, clients: int) -> list[float]:
    import redis

    ready: mp.Queue = mp.Queue()
    results: mp.Queue = mp.Queue()
    share = connections // clients
    procs = [
        mp.Process(target=client_process, args=(url, share, broadcasts, ready, results))
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    connected = sum(ready.get(timeout=600) for _ in procs)
    print(f"    {connected} connections open", flush=True)
    time.sleep(2)
    publisher = redis.from_url(REDIS)
    for _ in range(broadcasts):
        publisher.publish(
            channel, json.dumps({"type": "notification", "data": {"sent": time.time()}})
        )
        time.sleep(1.5)
    latencies: list[float] = []
    for _ in procs:
        latencies.extend(results.get(timeout=600))
    for proc in procs:
        proc.join(30)
    return latencies


def wait_http(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError(url)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--broadcasts", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument(
        "--serve-bare", nargs=2, metavar=("PORT", "CHANNEL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1])
        return
    script = Path(sys.executable).with_name("yuntu")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTU_")}
        env.update(
            {
                "YUNTU_DATA_DIR": tmp,
                "YUNTU_REDIS_URL": REDIS,
                "YUNTU_WORKERS": "0",
                "YUNTU_LOG_LEVEL": "WARNING",
            }
        )
        server = subprocess.Popen(
            [str(script), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            tokens = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/auth/register",
                json={"username": "bench", "password": "bench-pass-123"},
            ).json()
            user_id, token = tokens["data"]["user"]["id"], tokens["data"]["access_token"]
            print(f"yuntu serve: {args.connections} connections, {args.broadcasts} broadcasts")
            yuntu = measure(
                f"ws://127.0.0.1:{port}/ws?token={token}",
                f"{CHANNEL_PREFIX}user:{user_id}",
                args.connections,
                args.broadcasts,
                args.clients,
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        bare_port = free_port()
        channel = f"{CHANNEL_PREFIX}bare"
        bare = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", str(bare_port), channel],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{bare_port}/docs")
            print("bare FastAPI WebSocket broadcaster (baseline):")
            baseline = measure(
                f"ws://127.0.0.1:{bare_port}/ws",
                channel,
                args.connections,
                args.broadcasts,
                args.clients,
            )
        finally:
            bare.send_signal(signal.SIGTERM)
            bare.wait(30)
    for label, values in (("yuntu", yuntu), ("baseline", baseline)):
        print(
            f"{label:9} receipts={len(values):6}  p50={statistics.median(values):7.1f} ms"
            f"  p99={percentile(values, 99):7.1f} ms"
        )
    ratio = percentile(yuntu, 99) / max(percentile(baseline, 99), 0.001)
    print(
        f"p99 ratio yuntu/baseline: {ratio:.2f}   goal p99 <= 500 ms: "
        f"{'met' if percentile(yuntu, 99) <= 500 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
