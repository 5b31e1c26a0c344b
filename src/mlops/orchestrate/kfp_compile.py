"""kfp_compile: pipeline spec JSON (mlops.orchestrate.kfp_spec.pipeline_spec) → KFP IR YAML, with the KFP SDK.

Run by a Python that has `kfp` (the tool virtualenv; it imports nothing from `mlops`):
    python kfp_compile.py spec.json pipeline.yaml
Each step's component is loaded from its component YAML; its inputs are the pipeline parameters and the
upstream steps' `lock` outputs, so KFP's task dependencies are the DVC DAG. KFP's own caching is off:
a step must run whenever the pipeline runs (DVC's lock decides what changed, not KFP's input keys).
"""

# no `from __future__ import annotations`: KFP reads the pipeline function's annotations as types
import json
import sys


def build(spec: dict):
    """The @dsl.pipeline function for the spec."""
    from kfp import components, dsl

    loaded = [
        (step, components.load_component_from_text(json.dumps(step["component"]))) for step in spec["steps"]
    ]

    @dsl.pipeline(name=spec["name"], description=spec["description"])
    def pipeline(dvc_remote_url: str = "", mlflow_tracking_uri: str = ""):
        tasks = {}
        for step, op in loaded:
            inputs = {"dvc_remote_url": dvc_remote_url, "mlflow_tracking_uri": mlflow_tracking_uri}
            inputs.update({f"lock_{up}": tasks[up].outputs["lock"] for up in step["upstream"]})
            task = op(**inputs)
            task.set_display_name(step["stage"])
            task.set_caching_options(False)
            tasks[step["stage"]] = task

    return pipeline


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: kfp_compile.py SPEC.json PIPELINE.yaml", file=sys.stderr)
        return 2
    from kfp import compiler

    with open(argv[0]) as f:
        spec = json.load(f)
    compiler.Compiler().compile(build(spec), argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
