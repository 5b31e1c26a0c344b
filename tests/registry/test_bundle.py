"""bundle: the pyfunc's code and requirements follow its import graph (no hand-kept list to drift)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlops import pyfunc_bundle


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_graph_follows_lazy_relative_and_package_imports(tmp_path):
    _write(
        tmp_path,
        {
            "mlops/__init__.py": "",
            "mlops/entry.py": """
                import json
                import numpy as np
                from mlops.errors import Boom

                def load():
                    from mlops import model  # lazy: only when the model loads
                    return model
            """,
            "mlops/errors.py": "class Boom(Exception): ...\n",
            "mlops/model.py": "from .sub import helper\nimport pandas\n",
            "mlops/sub/__init__.py": "from . import helper\n",
            "mlops/sub/helper.py": "from ..errors import Boom\nimport yaml\n",
            "mlops/unused.py": "import torch\n",
        },
    )
    graph = pyfunc_bundle.import_graph(tmp_path / "mlops/entry.py", root=tmp_path)
    assert graph.modules == (
        "mlops",
        "mlops.errors",
        "mlops.model",
        "mlops.sub",
        "mlops.sub.helper",
    )
    assert graph.third_party == ("numpy", "pandas", "yaml")  # json is standard library; torch unreached

    code = pyfunc_bundle.stage_code(tmp_path / "staged", graph, root=tmp_path)
    staged = sorted(str(p.relative_to(code.parent)) for p in code.rglob("*.py"))
    assert staged == [
        "mlops/__init__.py",
        "mlops/errors.py",
        "mlops/model.py",
        "mlops/sub/__init__.py",
        "mlops/sub/helper.py",
    ]


def test_requirements_pin_the_installed_distributions():
    import importlib.metadata

    pins = pyfunc_bundle.requirements(["yaml", "numpy", "mlflow"])
    assert pins == sorted(
        [
            f"PyYAML=={importlib.metadata.version('PyYAML')}",
            f"numpy=={importlib.metadata.version('numpy')}",
            f"mlflow=={importlib.metadata.version('mlflow')}",
        ],
        key=str.lower,
    )
    with pytest.raises(RuntimeError, match="no_such_module_xyz"):
        pyfunc_bundle.requirements(["no_such_module_xyz"])


# slow: a fresh interpreter loads the MLflow pyfunc and predicts (~3.5 s)
@pytest.mark.slow
def test_pyfunc_graph_covers_what_loading_and_predicting_imports(pipeline, tmp_path):
    """Load pyfunc_model.py as MLflow does (a script) and predict: every mlops module imported then must be
    in the graph, and every third-party package imported by those modules among the requirements."""
    script = textwrap.dedent(
        """
        import json, runpy, sys
        from types import SimpleNamespace
        import pandas as pd
        ns = runpy.run_path(sys.argv[1])
        model = ns["MlopsModel"]()
        model.load_context(SimpleNamespace(artifacts={"model": sys.argv[2]}))
        meta = json.load(open(sys.argv[2] + "/model.json"))
        frame = pd.read_parquet(sys.argv[3], columns=[f["name"] for f in meta["features"]]).head(5)
        model.predict(None, frame)
        assert "torch" not in sys.modules, "the pyfunc imported torch"
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "mlops")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(pyfunc_bundle.ENTRY), str(pipeline.models), str(pipeline.raw)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    graph = pyfunc_bundle.import_graph()
    assert "mlops.scorer" in imported and "mlops.model" not in imported
    assert imported <= set(graph.modules), imported - set(graph.modules)
    # the pyfunc serves the ONNX export: ONNX Runtime, no torch or safetensors among its requirements
    assert {"mlflow", "onnxruntime", "pandas", "numpy"} <= set(graph.third_party)
    assert not {"torch", "safetensors"} & set(graph.third_party), graph.third_party
