"""The two serving backends: `serve.backend: onnx` (model.onnx on ONNX Runtime, the default) and `torch`
(model.safetensors on torch, for networks ONNX cannot export).

Both serve the same model through the HTTP API with the same answers (within float32 rounding); the
ONNX server never loads torch: no process of its group maps torch's shared library, while ONNX
Runtime's is mapped (and the other way round for the torch backend). A served ONNX file that is not
the one model.json names is refused (exit 6) before anything listens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from mlops import model as model_mod
from mlops import runtime

from .serve_helpers import infer_body, start_server

pytestmark = pytest.mark.slow


def mapped_libraries(pid: int) -> set[str]:
    """File names of the shared objects mapped by a process and all its children (the worker processes)."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    names: set[str] = set()
    for p in procs:
        for line in Path(f"/proc/{p.pid}/maps").read_text().splitlines():
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if path.endswith(".so") or ".so." in path:
                names.add(os.path.basename(path))
    return names


@pytest.fixture(scope="module")
def servers(model_dir, tmp_path_factory):
    """One server per backend on the same model (1 worker each)."""
    started = {}
    try:
        for backend in ("onnx", "torch"):
            root = tmp_path_factory.mktemp(f"serve-{backend}")
            started[backend] = start_server(root, model_dir, workers=1, backend=backend)
        yield started
    finally:
        for srv in started.values():
            assert srv.stop() == 0, srv.log.read_text()[-3000:]


def test_both_backends_answer_the_same_over_http(servers, model_dir, spec, rows):
    chosen = rows[:40]
    answers = {}
    for backend, srv in servers.items():
        resp = httpx.post(srv.infer_url(), json=infer_body(spec, chosen))
        assert resp.status_code == 200, (backend, resp.text)
        out = {o["name"]: o["data"] for o in resp.json()["outputs"]}
        answers[backend] = (np.array(out["probability"]), out["label"])
    (p_onnx, l_onnx), (p_torch, l_torch) = answers["onnx"], answers["torch"]
    np.testing.assert_allclose(p_onnx, p_torch, rtol=0, atol=1e-6)
    assert l_onnx == l_torch
    columns = {k: [np.nan if r[k] is None else r[k] for r in chosen] for k in spec.names}
    # each backend serves exactly what its in-process model computes
    np.testing.assert_allclose(p_onnx, runtime.load_onnx(model_dir).predict_proba(columns), rtol=1e-6)
    np.testing.assert_allclose(p_torch, model_mod.load(model_dir).predict_proba(columns), rtol=1e-6)


def test_onnx_server_never_loads_torch(servers):
    onnx_libs = mapped_libraries(servers["onnx"].proc.pid)
    assert not [n for n in onnx_libs if n.startswith(("libtorch", "libc10"))], sorted(onnx_libs)
    assert any(n.startswith("onnxruntime_pybind11_state") for n in onnx_libs), sorted(onnx_libs)
    torch_libs = mapped_libraries(servers["torch"].proc.pid)
    assert any(n.startswith("libtorch_cpu") for n in torch_libs), sorted(torch_libs)
    assert not any(n.startswith("onnxruntime") for n in torch_libs), sorted(torch_libs)
    log = servers["onnx"].log.read_text()
    assert "on onnx in" in log and "on torch in" in servers["torch"].log.read_text()


def test_altered_onnx_file_is_refused_before_listening(model_dir, tmp_path):
    altered = tmp_path / "models"
    altered.mkdir()
    for f in model_dir.iterdir():
        (altered / f.name).write_bytes(f.read_bytes())
    onnx = altered / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    srv = start_server(tmp_path / "srv", altered, wait=False)
    assert srv.proc.wait(60) == 6
    assert "model.onnx: sha256" in srv.log.read_text() and "does not match model.json" in srv.log.read_text()
    # the torch backend serves the weights, which are intact
    torch_srv = start_server(tmp_path / "srv-torch", altered, backend="torch", workers=1)
    assert torch_srv.stop() == 0


def test_model_without_onnx_export_needs_the_torch_backend(model_dir, tmp_path):
    no_onnx = tmp_path / "models"
    no_onnx.mkdir()
    meta = json.loads((model_dir / "model.json").read_text())
    (no_onnx / "model.json").write_text(json.dumps({**meta, "onnx": None}))
    (no_onnx / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    srv = start_server(tmp_path / "srv", no_onnx, wait=False)
    assert srv.proc.wait(60) == 5
    assert "no ONNX export" in srv.log.read_text() and "serve.backend: torch" in srv.log.read_text()
