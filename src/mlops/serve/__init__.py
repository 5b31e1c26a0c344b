"""serve: the Open Inference Protocol (KServe v2 REST) model server with Prometheus metrics, dynamic
micro-batching and a sampled prediction log. `mlops serve` calls `run`; the API is in the README section "Serving".
"""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> None:
    """Start the server (see `mlops.serve.server.run`)."""
    from mlops.serve.server import run as _run

    _run(*args, **kwargs)
