"""files: atomic writes and content hashes.

Every stage writes through these helpers so an interrupted or failed stage never leaves a half-written
output behind: data goes to a temporary file in the target directory, then is renamed over the target.
A write the disk refuses (full, over a file-size limit, read-only) is one error naming the target
(`OutputNotWritten`, exit 1), and its temporary file is removed.
The file then has the mode any plainly created file would have (0666 less the umask: 0644 under the usual
umask 022), not the 0600 of the private temp file, so other users (a container running as uid 10001, a
CI job's artifact upload) can read what a stage or CLI command wrote.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops.errors import OutputNotWritten

# what a full disk, a file-size limit (RLIMIT_FSIZE), a quota or a read-only mount raise while writing
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def _not_written(target: Path, error: OSError) -> OutputNotWritten:
    reason = os.strerror(error.errno) if error.errno else str(error)
    return OutputNotWritten(f"{target}: cannot write ({reason}); nothing was written under this name")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it over `target` only if the block succeeds.

    Args:
        target: the final file path. Its parent directory is created if needed.

    Yields:
        A path in the same directory (same filesystem, so the rename is atomic).

    Raises:
        OutputNotWritten: the directory or the file cannot be written (disk full, file-size limit,
            read-only, not permitted), naming `target`; the temporary file is removed.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise _not_written(target, e) from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; a writer may also have replaced the temp file: set the mode last
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, target)
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        raise _not_written(target, e) from e
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask, read without changing it (Linux /proc) where possible.

    `os.umask` can only be read by setting it, which races with other threads creating files; it is
    the fallback where /proc/self/status has no `Umask:` line (not Linux, or a kernel before 4.7).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def finite(obj: Any) -> Any:
    """Return `obj` with every non-finite float replaced by None, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return finite(obj.item())
    return obj


def dumps_json(obj: Any) -> str:
    """Serialise to strict JSON (no NaN/Infinity), sorted keys, stable across runs."""
    return json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as strict JSON to `target` atomically."""
    write_bytes(target, dumps_json(obj).encode())


def write_parquet(target: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame to Parquet atomically (no index, deterministic bytes)."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow")


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Return the hex digest of a file's content (`sha256` or `md5`, the one DVC uses)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """Return the sha256 of the canonical JSON form of `obj` (used for params hashes)."""
    canonical = json.dumps(finite(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
