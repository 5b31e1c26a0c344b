"""worker: one server process, forked by the supervisor in `mlops.serve.server`.

`preload()` runs once in the supervisor before forking: it imports the model runtime (ONNX Runtime, or
torch with `serve.backend: torch`), uvicorn and the app, so each worker starts in milliseconds with those
pages shared copy-on-write (one runtime import per server, not one per worker: faster cold start, less
memory). Nothing runs an inference before the fork, so no thread pool is inherited. `serve()` runs in
the child: binds the port with SO_REUSEPORT and runs uvicorn (uvloop + httptools, no access log:
/metrics counts every request) on the bare ASGI app.
"""

from __future__ import annotations


def preload(backend: str = "onnx") -> None:
    """Import the heavy modules in the supervisor (after the env vars that configure them are set).

    Args:
        backend: `serve.backend`; with `onnx`, torch is never imported.
    """
    import prometheus_client  # noqa: F401 - multiprocess mode is chosen at import
    import uvicorn  # noqa: F401
    import uvloop  # noqa: F401

    import mlops.serve.app  # noqa: F401

    if backend == "onnx":
        import onnxruntime  # noqa: F401

        import mlops.runtime  # noqa: F401
    else:
        import torch  # noqa: F401

        import mlops.model  # noqa: F401


def serve(settings_json: str, host: str, port: int) -> None:
    """Run one worker until SIGTERM (called in the forked child)."""
    import uvicorn

    from mlops.serve.app import App, Settings
    from mlops.serve.server import bind

    app = App(Settings.from_json(settings_json))
    sock = bind(host, port, reuseport=True)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
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
