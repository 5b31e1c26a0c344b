"""paths: the default paths of the command-line options, which are the paths dvc.yaml declares (one place)."""

from __future__ import annotations

import argparse
from pathlib import Path

PATHS = {
    "--data": "data/raw/data.parquet",
    "--validation": "reports/validation.json",
    "--data-dir": "data/processed",
    "--test": "data/processed/test.parquet",
    "--model-dir": "models",
    "--metrics": "reports/metrics.json",
    "--plots-dir": "reports/plots",
    "--gate": "reports/gate.json",
}
"""Option -> its default path."""


def add_paths(parser: argparse.ArgumentParser, *options: str) -> None:
    """Add path options with their dvc.yaml defaults from PATHS."""
    for option in options:
        parser.add_argument(option, type=Path, default=Path(PATHS[option]), help="(default %(default)s)")
