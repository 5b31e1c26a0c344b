"""params.reproducibility: `reproducibility`, what CI does when a run does not reproduce dvc.lock."""

from __future__ import annotations

from mlops.params.base import Section


class ReproducibilityParams(Section):
    """`reproducibility`: what CI does when a run does not reproduce the committed dvc.lock (`mlops lock-check`)."""

    fail_on_mismatch: bool
    """Fail the job (exit 8) when an output differs from the committed lock, or the lock is stale."""
