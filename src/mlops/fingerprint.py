"""fingerprint: configured source -> data/raw/source.json, the dependency through which DVC sees new data.

DVC tracks files; a table behind a URL or a SQL query, or a local file outside the repository, is
invisible to it. This stage (`always_changed` in dvc.yaml, so it runs on every `dvc repro`) writes a
small deterministic description of the source (`mlops.sources.fingerprint`: file size and md5, HTTP
ETag/Last-Modified, SQL row count...). When the source is unchanged the file's bytes are too, DVC
skips `ingest` and everything after it; when it changed, `ingest` reruns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlops import files
from mlops.config import IngestParams
from mlops.sources import fingerprint

log = logging.getLogger(__name__)


def run(params: IngestParams, out: Path) -> dict[str, Any]:
    """Fingerprint the configured source and write it to `out` (rewritten only when it changed).

    Args:
        params: the `ingest` section.
        out: data/raw/source.json (a DVC output `ingest` depends on).

    Returns:
        The fingerprint.
    """
    result = fingerprint(params)
    text = files.dumps_json(result).encode()
    if out.is_file() and out.read_bytes() == text:
        log.info("fingerprint: %s source unchanged (%s)", params.source, out)
    else:
        files.write_bytes(out, text)
        log.info("fingerprint: %s source -> %s", params.source, out)
    return result
