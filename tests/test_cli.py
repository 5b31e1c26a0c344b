"""CLI contract: documented exit codes, one clear line per error, no partial outputs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import Workspace


def evaluate_on(pipeline: Workspace, workspace: Workspace, **overrides) -> list[str]:
    """`mlops evaluate` on the session pipeline's data, writing into `workspace`."""
    return workspace.stage_args(
        "evaluate", data=pipeline.raw, test=pipeline.processed / "test.parquet", **overrides
    )


def test_corrupted_raw_table_exits_3_and_nothing_downstream_is_written(
    pipeline, workspace: Workspace, capsys
):
    workspace.raw.parent.mkdir(parents=True)
    frame = pd.read_parquet(pipeline.raw)
    frame.loc[[10, 20], "contract"] = "Lifetime"
    frame.to_parquet(workspace.raw, index=False)

    code = workspace.mlops(*workspace.stage_args("validate"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3
    assert err.startswith("mlops validate: error: ") and "column 'contract' fails allowed_categories" in err
    assert "ids [11, 21]" in err

    code = workspace.mlops(*workspace.stage_args("featurize"))
    assert code == 3 and "failed validation" in capsys.readouterr().err
    assert not workspace.processed.exists()


def test_truncated_parquet_exits_3_without_traceback(pipeline, workspace: Workspace):
    workspace.raw.parent.mkdir(parents=True)
    workspace.raw.write_bytes(pipeline.raw.read_bytes()[:500])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops",
            "--params",
            str(workspace.params),
            "validate",
            "--data",
            str(workspace.raw),
            "--report",
            str(workspace.validation),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert "not a readable Parquet table" in proc.stderr and "Traceback" not in proc.stderr
    assert not workspace.validation.exists()


def test_model_missing_exits_5(pipeline, workspace: Workspace, capsys):
    code = workspace.mlops(*evaluate_on(pipeline, workspace, model_dir=workspace.root / "nomodel"))
    assert code == 5 and "model metadata not found" in capsys.readouterr().err
    assert not workspace.metrics.exists()


@pytest.mark.parametrize("tampered", ["model.safetensors", "model.onnx"])
def test_tampered_model_exits_6(pipeline, workspace: Workspace, tampered: str, capsys):
    """evaluate scores the served ONNX export but verifies both files model.json records."""
    shutil.copytree(pipeline.models, workspace.models)
    (workspace.models / tampered).write_bytes(b"\0" * 64)
    code = workspace.mlops(*evaluate_on(pipeline, workspace))
    assert code == 6 and not workspace.metrics.exists()
    assert tampered in capsys.readouterr().err


def test_debug_shows_the_traceback(workspace: Workspace, capsys):
    code = workspace.mlops(
        "--debug",
        "validate",
        "--data",
        str(workspace.root / "absent.parquet"),
        "--report",
        str(workspace.validation),
    )
    assert code == 3 and "Traceback" in capsys.readouterr().err


def test_fingerprint_command_writes_the_source_description(workspace: Workspace, tmp_path, capsys):
    """`mlops fingerprint` (dvc.yaml's first stage) records the source; a missing local file exits 3."""
    import json

    assert workspace.mlops(*workspace.stage_args("fingerprint")) == 0
    written = json.loads((workspace.root / "data/raw/source.json").read_text())
    assert written["source"] == "demo" and written["dataset"]
    params = workspace.params.read_text().replace("  source: demo ", "  source: file ", 1)
    params = params.replace("uri: data/external/churn.csv", f"uri: {tmp_path / 'absent.csv'}", 1)
    workspace.params.write_text(params)
    assert workspace.mlops(*workspace.stage_args("fingerprint")) == 3
    assert "ingest.file.uri:" in capsys.readouterr().err.strip().splitlines()[-1]
