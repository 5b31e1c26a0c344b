"""No pickle on the serving path: loading a model never unpickles, and a planted pickle is refused, not run.

The serving path is `mlops.model.load` (the OIP server's start-up and the registered pyfunc's
`load_context` call it) and `mlflow.pyfunc.load_model` of a registered version (tests/registry/
test_registry.py audits that one). Each load runs in a fresh process under `pickle_audit.py`, which
records every unpickling attempt (the `pickle.find_class` audit event, pickle's load functions, and
`torch.load` with its `weights_only`). A planted payload shows what the audit would catch: weights
replaced by a `torch.save` file whose unpickling creates a file, with model.json's sha256 updated to
match (an attacker who controls both files), must be refused without the file appearing.
"""

from __future__ import annotations

import builtins
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops import files
from mlops import model as model_lib

from .conftest import split_rows

AUDIT = Path(__file__).with_name("pickle_audit.py")


def audit(mode: str, path: Path, rows: pd.DataFrame, tmp_path: Path) -> dict:
    """Load `path` in a fresh process under the pickle audit and predict `rows`; return what it saw."""
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    out = subprocess.run(
        [
            sys.executable,
            str(AUDIT),
            mode,
            str(path),
            str(tmp_path / "rows.parquet"),
            str(tmp_path / "seen.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((tmp_path / "seen.json").read_text())


def assert_nothing_unpickled(seen: dict) -> None:
    assert seen["find_class"] == [], f"a pickle naming globals was loaded: {seen['find_class']}"
    assert seen["pickle_calls"] == [], f"pickle was called: {seen['pickle_calls']}"
    assert all(call["weights_only"] is True for call in seen["torch_load"]), seen["torch_load"]


# slow: a fresh interpreter loads MLflow and torch under the audit hook (~3.5 s)
@pytest.mark.slow
def test_model_load_and_predict_unpickle_nothing(pipeline, tmp_path):
    rows = split_rows(pipeline)
    seen = audit("model", pipeline.models, rows, tmp_path)
    assert "error" not in seen, seen["error"]
    assert len(seen["probability"]) == len(rows)
    assert_nothing_unpickled(seen)


class Payload:
    """Unpickling this creates `path` (what a malicious pickle would do, harmlessly)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


# slow: two fresh interpreters load torch (~6 s)
@pytest.mark.slow
def test_planted_pickle_is_refused_not_executed(pipeline, tmp_path):
    import torch

    model_dir = tmp_path / "model"
    shutil.copytree(pipeline.models, model_dir)
    marker = tmp_path / "payload-ran"
    weights = model_dir / model_lib.WEIGHTS
    torch.save({"net.0.weight": Payload(marker)}, weights)
    meta = json.loads((model_dir / model_lib.METADATA).read_text())
    meta["weights"]["sha256"] = files.file_digest(weights)  # the checksum does not stop this attacker
    (model_dir / model_lib.METADATA).write_text(json.dumps(meta))

    # the plant is live: a loader that unpickles would run it (torch 2.13's torch.load reads a
    # `.safetensors` name with safetensors, so the same bytes are tried under another name)
    copy = shutil.copy(weights, tmp_path / "same-bytes.pt")
    live = subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(copy)!r}, weights_only=False)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert live.returncode == 0, live.stderr[-2000:]
    assert marker.exists()
    marker.unlink()

    seen = audit("model", model_dir, split_rows(pipeline), tmp_path)
    assert not marker.exists(), "loading the model executed the planted pickle"
    assert "probability" not in seen and "error" in seen, "a pickle was accepted as weights"
    assert_nothing_unpickled(seen)
