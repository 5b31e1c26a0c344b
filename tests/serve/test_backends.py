"""The two serving backends: `serve.backend: onnx` (model.onnx on ONNX Runtime, the default) and `torch`
(model.safetensors on torch, for networks ONNX cannot export).

Both serve the same model through the HTTP API with the same answers (within float32 rounding); the
ONNX server never loads torch: no process of its group maps torch's shared library, while ONNX
Runtime's is mapped (and the other way round for the torch backend). A served ONNX file that is not
the one model.json names is refused (exit 6) before anything listens.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from mlops import model as model_mod
from mlops import scorer

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
    np.testing.assert_allclose(p_onnx, scorer.load_onnx(model_dir).predict_proba(columns), rtol=1e-6)
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


def test_onnx_file_the_runtime_rejects_is_refused_before_listening(model_dir, tmp_path):
    """The supervisor loads the ONNX model once before forking the workers: an intact file (its sha256
    matches model.json) that ONNX Runtime cannot load is exit 5 with the file named, not a server that
    is never ready."""
    broken = tmp_path / "models"
    broken.mkdir()
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    garbage = b"not an onnx graph"
    (broken / "model.onnx").write_bytes(garbage)
    meta = json.loads((model_dir / "model.json").read_text())
    meta["onnx"] = {**meta["onnx"], "sha256": hashlib.sha256(garbage).hexdigest()}
    (broken / "model.json").write_text(json.dumps(meta))
    srv = start_server(tmp_path / "srv", broken, wait=False)
    assert srv.proc.wait(60) == 5
    log = srv.log.read_text()
    assert "model.onnx: ONNX Runtime cannot load it" in log, log


def test_serving_forward_answers_what_the_runtime_answers(model_dir):
    """The batcher's forward on ONNX Runtime calls the compiled session directly (no per-call Python
    checks, no float64 copy): the same probabilities as `OnnxModel.forward`, bit for bit once converted;
    on torch it is the model's own forward."""
    from mlops.serve.app import serving_forward

    loaded = scorer.load_onnx(model_dir)
    forward = serving_forward(loaded)
    assert forward is not loaded.forward
    rng = np.random.default_rng(0)
    for rows in (1, 7, 64):
        x = rng.normal(size=(rows, loaded.preprocessor.width)).astype(np.float32)
        got = forward(x)
        assert got.shape == (rows,)
        assert got.tolist() == loaded.forward(x).tolist()
    torch_model = model_mod.load(model_dir)
    assert serving_forward(torch_model) == torch_model.forward


def test_onnx_with_several_threads_loads_in_each_worker(model_dir, spec, rows, tmp_path):
    """A session with more than one intra-op thread owns a thread pool, which a fork does not copy: then
    each worker loads its own session (the supervisor loads the model only for `serve.threads: 1`)."""

    def loaded() -> set[int]:
        lines = srv.log.read_text().split("\n")[:-1]  # a line still being written is not read
        return {r["pid"] for r in map(json.loads, filter(None, lines)) if "loaded from" in r["msg"]}

    srv = start_server(tmp_path / "srv", model_dir, workers=2, threads=2, global_args=("--log-json",))
    try:
        for _ in range(8):  # both workers, whichever the kernel picks
            resp = httpx.post(srv.infer_url(), json=infer_body(spec, rows[:3]))
            assert resp.status_code == 200, resp.text
        deadline = time.monotonic() + 30
        while len(loaded()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        assert srv.stop() == 0
    assert len(loaded()) == 2 and srv.proc.pid not in loaded(), srv.log.read_text()
