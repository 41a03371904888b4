"""What a caller imports: `App`, the handles `@app.function` returns, `Call`, sessions.

It never imports the worker or the control plane: a script that calls functions loads
only this room and the core.
"""

from runtime.client.app import App
from runtime.client.calls import Call
from runtime.client.handles import BatchedFunction, Function
from runtime.client.packs import PACK_BATCHES, pack_size
from runtime.client.session import Session
from runtime.client.sessions import SessionProvider

__all__ = [
    "PACK_BATCHES",
    "App",
    "BatchedFunction",
    "Call",
    "Function",
    "Session",
    "SessionProvider",
    "pack_size",
]
