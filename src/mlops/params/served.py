"""params.served: the one `serve` key the pipeline reads, `serve.backend`: the path evaluate and the gate score.

The rest of the section belongs to the server (`mlops.params.serve`), which validates it whole; the
stages validate only this key, so editing the server's settings never invalidates their run-cache.
"""

from __future__ import annotations

from pydantic import ConfigDict

from mlops.params.backend import Backend
from mlops.params.base import Section


class ServedBackend(Section):
    """`serve.backend` (the other `serve` keys are the server's: not read, not checked here)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    backend: Backend
