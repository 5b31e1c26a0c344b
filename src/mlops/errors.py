"""errors: one hierarchy; each class carries its CLI exit code and its HTTP status.

Exit codes (the CLI contract, documented in the README):
    0 ok, 1 unexpected (or an output that could not be written), 2 usage or config error,
    3 data error (source unreadable or validation failed), 4 gate failed, 5 model missing or not ready,
    6 promotion refused / checksum mismatch, 7 drift over the `drift` thresholds, 8 outputs did not
    reproduce the committed dvc.lock, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base class: an expected failure with a one-line message naming the file, key or column at fault."""

    exit_code = 1
    http_status = 500


class OutputNotWritten(MlopsError):
    """An output could not be written (disk full, file-size limit, read-only or not permitted); nothing
    was written under its name."""

    exit_code = 1
    http_status = 500


class ConfigError(MlopsError):
    """params.yaml or a command-line argument is wrong (unknown, missing or mistyped key)."""

    exit_code = 2
    http_status = 500


class DataError(MlopsError):
    """The input data cannot be read or does not satisfy its schema."""

    exit_code = 3
    http_status = 400


class GateFailed(MlopsError):
    """The candidate model misses at least one gate rule."""

    exit_code = 4
    http_status = 409


class ModelNotReady(MlopsError):
    """The model files are missing, unreadable or not loaded yet."""

    exit_code = 5
    http_status = 503


class ChecksumMismatch(MlopsError):
    """The model weights do not match the recorded sha256; loading or promoting them is refused."""

    exit_code = 6
    http_status = 409


class PromotionRefused(MlopsError):
    """A promotion or registration was refused (gate not passed, checksum mismatch, ...)."""

    exit_code = 6
    http_status = 409


class RehearsalFailed(ModelNotReady):
    """The deploy rehearsal's pod did not start, become ready or serve the recorded version (exit 5)."""


class DriftDetected(MlopsError):
    """`mlops drift`: the logged predictions drifted from the reference beyond params.yaml `drift`."""

    exit_code = 7
    http_status = 409


class NotReproduced(MlopsError):
    """`mlops lock-check`: an output differs from the committed dvc.lock for the same inputs, or the lock
    was not updated for changed inputs."""

    exit_code = 8
    http_status = 409
