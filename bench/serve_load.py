#!/usr/bin/python3
"""Bounded load test for `evla serve` (loopback only; stops by itself).

Starts `evla serve` on an ephemeral loopback port (or drives --connect
HOST:PORT, e.g. nginx in front of replicas), warms it up, then runs
--clients concurrent WebSocket clients x --requests sequential requests each,
and reports latency p50/p99, throughput, errors and the server's RSS before
and after the load (and before it, the anonymous part: memory private to the
process, where a second copy of a plan's weights would show).

    PYTHONPATH=python /usr/bin/python3 bench/serve_load.py --evla build/bin/evla \
        --model models/evla-tiny-random --clients 8 --requests 200 --workers 2

Exits 1 if any request failed or the deadline (--max-seconds) cut the run short.
"""
import argparse
import asyncio
import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import websockets

from evla_client import msgpack_numpy  # noqa: E402


def rss_mb(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def start_server(args):
    cmd = [args.evla, "serve", "--model", args.model, "--port", "0", "--workers", str(args.workers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.plan:
        cmd += ["--plan", args.plan]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + args.start_seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"on ws://[\d.]+:(\d+)", line)
        if m:
            # Keep draining its log so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(m.group(1))
    proc.kill()
    raise SystemExit("evla serve did not start")


def observation(meta, size, seed):
    rng = np.random.default_rng(seed)
    obs = {key: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for key in meta["image_keys"]}
    if meta.get("state_dim"):
        obs[meta["state_key"]] = rng.standard_normal(meta["state_dim"]).astype(np.float32)
    obs[meta["prompt_key"]] = "put the eggplant in the basket"
    obs["seed"] = seed
    if len(meta.get("unnorm_keys") or []) > 1:  # a model with several datasets' statistics needs one named
        obs["unnorm_key"] = meta["unnorm_keys"][0]
    return obs


async def client(uri, headers, n, first_seed, size, deadline, latencies, errors, timings):
    try:
        async with websockets.connect(uri, compression=None, max_size=None, extra_headers=headers,
                                      open_timeout=30) as ws:
            meta = msgpack_numpy.unpackb(await ws.recv())
            packed = [msgpack_numpy.packb(observation(meta, size or meta["image_size"], first_seed + i))
                      for i in range(min(n, 8))]  # a few distinct frames, cycled
            for i in range(n):
                if time.monotonic() > deadline:
                    errors.append("deadline")
                    return
                t0 = time.perf_counter()
                await ws.send(packed[i % len(packed)])
                reply = await asyncio.wait_for(ws.recv(), timeout=max(1.0, deadline - time.monotonic()))
                latencies.append((time.perf_counter() - t0) * 1000.0)
                if isinstance(reply, str):
                    errors.append(reply[:200])
                    return
                out = msgpack_numpy.unpackb(reply)
                if out["actions"].shape != (meta["action_horizon"], meta["action_dim"]):
                    errors.append(f"bad shape {out['actions'].shape}")
                st = out.get("server_timing", {})
                timings.append((st.get("infer_ms", float("nan")), st.get("queue_ms", float("nan"))))
    except Exception as e:  # connection refused, closed, timeout: all count as errors
        errors.append(f"{type(e).__name__}: {e}")


async def run_load(uri, headers, clients, requests, size, max_seconds):
    latencies, errors, timings = [], [], []
    deadline = time.monotonic() + max_seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(client(uri, headers, requests, 1000 * c, size, deadline, latencies, errors, timings)
                           for c in range(clients)))
    return latencies, errors, timings, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evla", default="build/bin/evla", help="evla binary (when starting the server)")
    ap.add_argument("--model", default="models/evla-tiny-random")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plan", help="plan JSON the server runs (when starting it)")
    ap.add_argument("--start-seconds", type=float, default=60,
                    help="how long the server may take to load, compile its plan and warm up its workers")
    ap.add_argument("--threads", type=int, default=0, help="threads per worker (0: server default)")
    ap.add_argument("--connect", help="HOST:PORT of a running server/proxy instead of starting one")
    ap.add_argument("--api-key")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--image-size", type=int, default=0, help="frame side sent (0: the model's input size)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the load; RSS is sampled after each round")
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.clients * args.requests * args.rounds > 100000:
        raise SystemExit("refusing more than 100000 requests")

    proc = None
    if args.connect:
        host, port = args.connect.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("loopback only")
    else:
        proc, port = start_server(args)
        host = "127.0.0.1"
    uri = f"ws://{host}:{port}"
    headers = {"Authorization": f"Api-Key {args.api_key}"} if args.api_key else None
    try:
        _, errors, _, _ = asyncio.run(run_load(uri, headers, 1, args.warmup, args.image_size, 120))
        rss_before = rss_mb(proc.pid) if proc else None
        anon_before = rss_mb(proc.pid, "RssAnon:") if proc else None
        latencies, timings, wall, rss_after = [], [], 0.0, []
        for _ in range(args.rounds):
            lat, err, tim, w = asyncio.run(
                run_load(uri, headers, args.clients, args.requests, args.image_size, args.max_seconds))
            latencies += lat
            errors += err
            timings += tim
            wall += w
            if proc:
                rss_after.append(round(rss_mb(proc.pid), 1))
    finally:
        if proc:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = sorted(latencies)

    def q(values, p):
        values = sorted(values)
        return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else None
    result = {
        "uri": uri, "clients": args.clients, "requests_per_client": args.requests,
        "workers": None if args.connect else args.workers,
        "rounds": args.rounds, "completed": len(lat), "errors": len(errors),
        "p50_ms": q(lat, 0.50), "p99_ms": q(lat, 0.99), "max_ms": q(lat, 1.0),
        "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
        "server_infer_p50_ms": q([t[0] for t in timings], 0.5),
        "server_queue_p50_ms": q([t[1] for t in timings], 0.5),
        "throughput_rps": round(len(lat) / wall, 1) if wall > 0 else None, "wall_s": round(wall, 2),
        "rss_before_mb": round(rss_before, 1) if rss_before else None,
        "rss_anon_before_mb": round(anon_before, 1) if anon_before else None,
        "rss_after_mb": rss_after or None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v}")
        for e in errors[:5]:
            print("error:", e)
    ok = not errors and len(lat) == args.clients * args.requests * args.rounds
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
