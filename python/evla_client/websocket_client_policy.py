"""A synchronous openpi-style policy client over python3-websockets' asyncio API.

Debian's websockets 10.4 has no ``websockets.sync``, so an event loop runs on
a private daemon thread (which also answers the server's keep-alive pings
between calls) and each public method waits for its coroutine.
"""
import asyncio
import threading
import time
from typing import Dict, Optional

import websockets

from . import msgpack_numpy


class ServerError(RuntimeError):
    """The server answered with an error text frame (and closed the connection)."""


class WebsocketClientPolicy:
    """Same call shape as openpi's ``WebsocketClientPolicy``.

    ``wait_s`` bounds how long the constructor keeps retrying while the server
    is not up yet (openpi waits forever); ``timeout_s`` bounds each call.
    """

    def __init__(self, host: str = "127.0.0.1", port: Optional[int] = 8000, api_key: Optional[str] = None,
                 wait_s: float = 30.0, timeout_s: float = 60.0) -> None:
        self._uri = f"ws://{host}" + (f":{port}" if port is not None else "")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._packer = msgpack_numpy.Packer()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="evla-client", daemon=True)
        self._thread.start()
        self._ws = None
        try:
            self._server_metadata = self._run(self._wait_for_server(wait_s), timeout=wait_s + 10)
        except BaseException:
            self.close()
            raise

    # -- public API (openpi's) --------------------------------------------
    def get_server_metadata(self) -> Dict:
        return self._server_metadata

    def infer(self, obs: Dict) -> Dict:
        data = self._packer.pack(obs)
        response = self._run(self._exchange(data))
        if isinstance(response, str):
            # A text frame is the server's error report; it closes with 1011 next.
            raise ServerError(f"Error in inference server:\n{response}")
        return msgpack_numpy.unpackb(response)

    def reset(self) -> None:
        pass

    # -- lifetime ----------------------------------------------------------
    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._ws is not None:
            try:
                self._run(self._ws.close(), timeout=5)
            except Exception:
                pass
            self._ws = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals ---------------------------------------------------------
    def _run(self, coro, timeout=None):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(self._timeout_s if timeout is None else timeout)

    async def _wait_for_server(self, wait_s: float):
        headers = {"Authorization": f"Api-Key {self._api_key}"} if self._api_key else None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._ws = await websockets.connect(self._uri, compression=None, max_size=None,
                                                    extra_headers=headers, open_timeout=max(1.0, wait_s))
                break
            except websockets.InvalidStatusCode as e:
                if e.status_code == 401:
                    raise PermissionError(f"{self._uri} refused the connection: missing or wrong API key") from None
                raise
            except OSError:  # not listening yet
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no policy server at {self._uri} after {wait_s:.0f} s") from None
                await asyncio.sleep(0.2)
        return msgpack_numpy.unpackb(await self._ws.recv())

    async def _exchange(self, data: bytes):
        await self._ws.send(data)
        return await self._ws.recv()
