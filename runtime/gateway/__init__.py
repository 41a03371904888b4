"""The HTTP bridge: `POST /v1/functions/{app}/{fn}` and friends, on Starlette and uvicorn.

It reaches the stack through the shared `Link` (like any caller) and never imports the
worker or the control plane. The only room that imports starlette and uvicorn.
"""

from runtime.gateway.server import create_app, serve_gateway

__all__ = ["create_app", "serve_gateway"]
