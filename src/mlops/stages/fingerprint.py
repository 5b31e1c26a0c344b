"""fingerprint: configured source -> data/raw/source.json, the dependency through which DVC sees new data.

DVC tracks files; a table behind a URL or a SQL query, or a local file outside the repository, is
invisible to it. This stage (`always_changed` in dvc.yaml, so it runs on every `dvc repro`) writes a
small deterministic description of the source (`mlops.sources.fingerprint`: file size and md5, HTTP
ETag/Last-Modified, SQL row count...). When the source is unchanged the file's bytes are too, DVC
skips `ingest` and everything after it; when it changed, `ingest` reruns.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mlops import files
from mlops.params.ingest import IngestParams
from mlops.params.sections import Sections
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


# ---------------------------------------------------------------- the command: `mlops fingerprint`
HELP = "record a cheap fingerprint of the configured source (the file `ingest` depends on)"
"""One line for `mlops --help` (read without importing this module)."""

SECTIONS: dict[str, type] = {
    "ingest": IngestParams,
}
"""The params.yaml sections this stage reads (dvc.yaml declares the same), validated alone."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mlops fingerprint`; path defaults are the paths dvc.yaml declares."""
    p.add_argument("--out", type=Path, default=Path("data/raw/source.json"))


def main(args: argparse.Namespace, params: Sections) -> None:
    """Run `mlops fingerprint` with its validated sections."""
    run(params.ingest, args.out)
