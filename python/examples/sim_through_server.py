#!/usr/bin/python3
"""Drive evla's built-in simulator through `evla serve`: the whole robot loop.

    # terminal 1
    build/bin/evla serve --model models/evla-tiny-random
    # terminal 2
    PYTHONPATH=build/python:python /usr/bin/python3 python/examples/sim_through_server.py --task pick

or in one go: add `--spawn build/bin/evla --model models/evla-tiny-random`.

Each step renders the camera image (evla.sim.Env, from the `evla` module),
sends it with the episode's instruction to the server as an openpi
observation, and executes the returned action chunk. The random demo model
will not solve the task; a model trained on the simulator (action_dim 4) does.
Without the `evla` module (or without its sim), pass --synthetic to drive the
server with a synthetic image loop instead.
"""
import argparse
import re
import signal
import subprocess
import threading
import time

import numpy as np

from evla_client import WebsocketClientPolicy  # noqa: E402


class SyntheticEnv:
    """A stand-in with the Env interface: a moving gradient, 20 steps."""
    ACTION_DIM = 4

    def __init__(self, seed):
        self.steps, self.max_steps, self.success = 0, 20, False
        self.instruction = "pick up the red cube"
        self.rng = np.random.default_rng(seed)

    @property
    def done(self):
        return self.steps >= self.max_steps

    def render(self, w, h):
        x = (np.arange(w)[None, :] + 3 * self.steps) % 256
        y = np.arange(h)[:, None] % 256
        return np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)),
                         np.full((h, w), 128)], axis=-1).astype(np.uint8)

    def state(self):
        return np.zeros(4, dtype=np.float32)

    def step(self, action):
        self.steps += 1


def spawn(evla_bin, model):
    proc = subprocess.Popen([evla_bin, "serve", "--model", model, "--port", "0"], stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        line = proc.stderr.readline()
        m = re.search(r"on ws://[\d.]+:(\d+)", line or "")
        if m:
            # Keep draining its log so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(m.group(1))
        if not line:
            break
    proc.kill()
    raise SystemExit("evla serve did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key")
    ap.add_argument("--spawn", metavar="EVLA_BIN", help="start `EVLA_BIN serve --model MODEL` on a free port")
    ap.add_argument("--model", default="models/evla-tabletop")
    ap.add_argument("--split", default="matching")
    ap.add_argument("--task", default="pick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--execute", type=int, default=None,
                    help="chunk rows executed per request (default: the server's action_steps; 0: all)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic images instead of evla.sim")
    args = ap.parse_args()

    make_env = None
    if not args.synthetic:
        try:
            import evla
            make_env = lambda seed: evla.sim.Env(args.split, args.task, seed)  # noqa: E731
            action_dim = evla.sim.ACTION_DIM
        except (ImportError, AttributeError) as e:
            raise SystemExit(f"evla.sim is not available ({e}); build the module "
                             "(PYTHONPATH=build/python) or pass --synthetic")
    if make_env is None:
        make_env, action_dim = SyntheticEnv, SyntheticEnv.ACTION_DIM

    proc = None
    if args.spawn:
        proc, args.port = spawn(args.spawn, args.model)
    try:
        with WebsocketClientPolicy(args.host, args.port, api_key=args.api_key) as policy:
            meta = policy.get_server_metadata()
            print(f"server: {meta['model']} (horizon {meta['action_horizon']} x dim {meta['action_dim']}, "
                  f"plan {meta['plan']['name']}), images {meta['image_keys']}")
            if meta["action_dim"] != action_dim:
                print(f"note: the model's action_dim {meta['action_dim']} is not the simulator's {action_dim}; "
                      f"executing the first {min(action_dim, meta['action_dim'])} dimensions")
            size = meta["image_size"]
            successes = 0
            for ep in range(args.episodes):
                env = make_env(args.seed + ep)
                latencies, requests = [], 0
                while not env.done:
                    obs = {key: env.render(size, size) for key in meta["image_keys"]}
                    if meta["state_dim"]:
                        obs[meta["state_key"]] = np.resize(env.state(), meta["state_dim"]).astype(np.float32)
                    obs[meta["prompt_key"]] = env.instruction
                    obs["seed"] = requests
                    t0 = time.perf_counter()
                    chunk = policy.infer(obs)["actions"]
                    latencies.append((time.perf_counter() - t0) * 1000)
                    requests += 1
                    steps = meta.get("action_steps", len(chunk)) if args.execute is None else args.execute
                    for row in chunk[: steps or len(chunk)]:
                        if env.done:
                            break
                        action = np.zeros(action_dim, dtype=np.float32)
                        n = min(action_dim, len(row))
                        action[:n] = row[:n]
                        env.step(action)
                successes += bool(env.success)
                print(f"episode {ep}: '{env.instruction}' -> {'success' if env.success else 'failure'} "
                      f"after {env.steps} steps, {requests} requests, median round trip "
                      f"{np.median(latencies):.1f} ms")
            print(f"success rate {successes}/{args.episodes}")
    finally:
        if proc:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)


if __name__ == "__main__":
    main()
