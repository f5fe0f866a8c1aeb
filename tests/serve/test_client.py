#!/usr/bin/python3
"""The Python wire client against a live `evla serve` (plain script: exits
non-zero on failure). Also compares the server with the bindings when the
`evla` module is importable.

    PYTHONPATH=build/python:python /usr/bin/python3 tests/serve/test_client.py --evla build/bin/evla
"""
import argparse
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np

import pycheck  # noqa: E402  (beside this script)
from pycheck import FIXTURE, ROOT, TINY, check, image  # noqa: E402

from evla_client import ServerError, WebsocketClientPolicy, msgpack_numpy  # noqa: E402


class Server:
    """`evla serve --port 0` in a child process; the port comes from its first log line."""

    def __init__(self, evla_bin, model, *args):
        self.proc = subprocess.Popen([evla_bin, "serve", "--model", model, "--port", "0", "--threads", "1", *args],
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("evla serve exited early:\n" + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r"on ws://[\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
        raise RuntimeError("evla serve did not start")

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        try:
            rest = self.proc.communicate(timeout=15)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("evla serve did not stop on signal")
        self.lines.append(rest)
        return self.proc.returncode


def test_codec():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = msgpack_numpy.unpackb(msgpack_numpy.packb({"a": a, "s": np.int64(5)}))
    check(np.array_equal(out["a"], a) and out["a"].dtype == np.float32, out)
    check(out["s"] == 5 and isinstance(out["s"], np.int64), out)
    import msgpack
    str_keys = msgpack.packb({"__ndarray__": True, "data": a.tobytes(), "dtype": "<f4", "shape": [2, 3]})
    check(np.array_equal(msgpack_numpy.unpackb(str_keys), a), "str keys tolerated")
    try:
        msgpack_numpy.packb({"o": np.array([object()])})
        check(False, "object arrays must be refused")
    except ValueError:
        pass
    try:
        msgpack_numpy.unpackb(msgpack.packb(msgpack.ExtType(1, b"x")))
        check(False, "ext types must be refused")
    except ValueError:
        pass


def test_tiny(evla_bin):
    srv = Server(evla_bin, TINY, "--api-key", "py-secret")
    try:
        health = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=10)
        check(health.status == 200 and health.read() == b"OK\n", "healthz")
        try:
            WebsocketClientPolicy("127.0.0.1", srv.port, api_key="wrong", wait_s=5)
            check(False, "wrong key accepted")
        except PermissionError as e:
            check("API key" in str(e), e)
        try:
            WebsocketClientPolicy("127.0.0.1", srv.port, wait_s=5)
            check(False, "missing key accepted")
        except PermissionError:
            pass

        with WebsocketClientPolicy("127.0.0.1", srv.port, api_key="py-secret") as client:
            meta = client.get_server_metadata()
            check(meta["model"] == "evla-tiny-random" and meta["image_keys"] == ["observation/image"], meta)
            obs = {"observation/image": image(64, 64), "prompt": "put the eggplant in the basket", "seed": 3}
            out = client.infer(obs)
            a = out["actions"]
            check(a.dtype == np.float32 and a.shape == (meta["action_horizon"], meta["action_dim"]), a.shape)
            check(out["server_timing"]["infer_ms"] > 0 and "prev_total_ms" not in out["server_timing"], out)
            out2 = client.infer(obs)
            check(np.array_equal(out2["actions"], a) and "prev_total_ms" in out2["server_timing"], out2)
            full = client.infer(dict(obs, **{"observation/image": image(480, 640)}))
            check(full["actions"].shape == a.shape, "a full camera frame is resized")
            # This test exists only where the module is built (python/CMakeLists.txt): never skipped.
            import evla
            local = evla.Policy(TINY, threads=1).infer(obs)["actions"]
            check(np.array_equal(local, a), "server and bindings agree bit for bit")

        with WebsocketClientPolicy("127.0.0.1", srv.port, api_key="py-secret") as bad:
            try:
                bad.infer({"observation/image": image(64, 64).astype(np.float32), "prompt": "x"})
                check(False, "float image accepted")
            except ServerError as e:
                check("images must be uint8" in str(e), e)
        # The server keeps serving others after an error.
        with WebsocketClientPolicy("127.0.0.1", srv.port, api_key="py-secret") as again:
            check(np.array_equal(again.infer(obs)["actions"], a), "still serving")
    finally:
        rc = srv.stop(signal.SIGINT)
    log = "".join(srv.lines)
    check(rc == 0, f"exit code {rc} after SIGINT:\n{log}")
    check("SIGINT: shutting down" in log and "py-secret" not in log and "eggplant" not in log, log)


def test_fixture(evla_bin):
    srv = Server(evla_bin, FIXTURE, "--workers", "2")
    try:
        with WebsocketClientPolicy("127.0.0.1", srv.port) as client:
            meta = client.get_server_metadata()
            check(meta["state_dim"] == 5 and len(meta["image_keys"]) == 2, meta)
            obs = {"observation/image": image(28, 28, 1), "observation/wrist_image": image(28, 28, 2),
                   "observation/state": np.array([0.1, -0.2, 0.3, 0.0, 1.0]), "prompt": "pick", "seed": 1}
            check(client.infer(obs)["actions"].shape == (meta["action_horizon"], 4), "fixture round trip")
    finally:
        rc = srv.stop(signal.SIGTERM)
    check(rc == 0, f"exit code {rc} after SIGTERM")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--evla", default=os.path.join(ROOT, "build", "bin", "evla"))
    args = ap.parse_args()
    test_codec()
    test_tiny(args.evla)
    test_fixture(args.evla)
    print(f"test_client: {pycheck.passed} checks passed")
