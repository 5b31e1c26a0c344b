"""Run a model load path in a fresh process and report every unpickling it attempted (a test helper script).

Usage: python pickle_audit.py model|pyfunc <model dir or MLflow model path> <rows.parquet> <out.json>

Before anything else is imported it records, for the whole process:
- the `pickle.find_class` audit event (raised by both unpicklers whenever a pickle names a global: any
  pickle that could run code does);
- calls of `pickle.load`/`pickle.loads`/`pickle.Unpickler` (also pickles of plain data, which name no
  global);
- calls of `torch.load`, with their `weights_only` argument (torch's weights-only unpickler raises no
  audit event).
Then it loads the model the way the serving path does (`model`: `mlops.model.load`, which the OIP
server's start-up calls; `pyfunc`: `mlflow.pyfunc.load_model`, the registered model) and predicts the rows.
The JSON written holds what was seen and the predictions (or the error of a refused load).
"""

from __future__ import annotations

import json
import pickle
import sys

seen: dict[str, list] = {"find_class": [], "pickle_calls": [], "torch_load": []}


def _hook(event: str, args: tuple) -> None:
    if event == "pickle.find_class":
        seen["find_class"].append(f"{args[0]}.{args[1]}")


def _recording(name: str, original):
    def wrapper(*args, **kwargs):
        seen["pickle_calls"].append(name)
        return original(*args, **kwargs)

    return wrapper


class _RecordingUnpickler(pickle.Unpickler):
    """pickle.Unpickler that records its use (a subclass, so code that subclasses it keeps working)."""

    def __init__(self, *args, **kwargs):
        seen["pickle_calls"].append("Unpickler")
        super().__init__(*args, **kwargs)


def main(mode: str, path: str, rows_path: str, out_path: str) -> None:
    sys.addaudithook(_hook)
    for name in ("load", "loads"):
        setattr(pickle, name, _recording(name, getattr(pickle, name)))
    pickle.Unpickler = _RecordingUnpickler
    import pandas as pd
    import torch

    original_torch_load = torch.load

    def torch_load(*args, **kwargs):
        seen["torch_load"].append({"weights_only": kwargs.get("weights_only")})
        return original_torch_load(*args, **kwargs)

    torch.load = torch_load
    rows = pd.read_parquet(rows_path)
    result: dict = {}
    try:
        if mode == "model":
            from mlops import model as model_lib

            result["probability"] = model_lib.load(path).predict_proba(rows).tolist()
        else:
            import mlflow

            result["probability"] = mlflow.pyfunc.load_model(path).predict(rows)["probability"].tolist()
    except Exception as e:  # noqa: BLE001 - reported to the test, which asserts on it
        result["error"] = f"{type(e).__module__}.{type(e).__name__}: {e}"
    with open(out_path, "w") as f:
        json.dump({**seen, **result}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
