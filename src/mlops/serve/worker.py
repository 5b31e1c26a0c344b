"""worker: one server process, forked by the supervisor in `mlops.serve.server`.

`preload()` runs once in the supervisor before forking: it imports the model runtime (ONNX Runtime, or
torch with `serve.backend: torch`), uvicorn with the protocol, lifespan and event-loop modules its
`Config` would otherwise import in every worker, and the app, so each worker starts in milliseconds with
those pages shared copy-on-write (one runtime import per server, not one per worker: faster cold start,
less memory). With ONNX Runtime on one intra-op thread (`serve.threads: 1`, which starts no thread pool,
so there is none a fork would lose) the supervisor also loads, verifies and warms up the model before the
fork, so a worker is ready as soon as it listens; otherwise (more threads, or torch, whose forward pass
starts its OpenMP pool) each worker loads the model after the fork, in a background thread. `serve()`
runs in the child: binds the port with SO_REUSEPORT and runs uvicorn (uvloop + httptools, no
websockets, no access log: /metrics counts every request) on the bare ASGI app.
"""

from __future__ import annotations

from typing import Any


def preload(backend: str = "onnx") -> None:
    """Import the heavy modules in the supervisor (after the env vars that configure them are set).

    Args:
        backend: `serve.backend`; with `onnx`, torch is never imported.
    """
    import prometheus_client  # noqa: F401 - multiprocess mode is chosen at import
    import uvicorn  # noqa: F401
    import uvicorn.lifespan.on  # noqa: F401 - what uvicorn.Config.load imports for the settings below
    import uvicorn.loops.uvloop  # noqa: F401
    import uvicorn.protocols.http.httptools_impl  # noqa: F401
    import uvloop  # noqa: F401

    import mlops.serve.app  # noqa: F401

    if backend == "onnx":
        import onnxruntime  # noqa: F401

        import mlops.scorer  # noqa: F401
    else:
        import torch  # noqa: F401

        import mlops.model  # noqa: F401


def serve(settings_json: str, host: str, port: int, model: Any = None) -> None:
    """Run one worker until SIGTERM (called in the forked child).

    Args:
        settings_json: `Settings` as JSON.
        host: bind address.
        port: TCP port, shared with the other workers (SO_REUSEPORT).
        model: the model the supervisor loaded before forking, or None to load it here.
    """
    import uvicorn

    from mlops.serve.app import App, Settings
    from mlops.serve.server import bind

    app = App(Settings.from_json(settings_json), model)
    sock = bind(host, port, reuseport=True)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        ws="none",  # the API has no websocket route; "auto" would import a websockets library per worker
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=max(1, round(app.params.grace_period_s)),
        backlog=2048,
        timeout_keep_alive=app.params.keep_alive_s,
        server_header=False,
        proxy_headers=False,  # the app reads neither client address nor scheme: no middleware per request
    )
    uvicorn.Server(config).run(sockets=[sock])
