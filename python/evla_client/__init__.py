"""Client for ``evla serve`` (and any openpi-protocol policy server).

    from evla_client import WebsocketClientPolicy
    policy = WebsocketClientPolicy("127.0.0.1", 8000, api_key=None)
    print(policy.get_server_metadata())
    out = policy.infer({"observation/image": frame_uint8_hwc, "prompt": "pick up the can"})
    out["actions"]  # float32 [horizon, dim]

Needs only Debian's python3-websockets (10.4, asyncio API), python3-msgpack
and numpy.
"""
from .msgpack_numpy import packb, unpackb
from .websocket_client_policy import ServerError, WebsocketClientPolicy

__all__ = ["WebsocketClientPolicy", "ServerError", "packb", "unpackb"]
