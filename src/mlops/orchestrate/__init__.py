"""orchestrate: the DVC pipeline (dvc.yaml) run by a cluster orchestrator.

`dag` reads dvc.yaml into stages and their dependency graph (pure Python, no DVC import); `kfp_spec` turns
that graph into a Kubeflow Pipelines definition (one container step per stage); `step` is what each
step runs in its pod (dvc pull of the stage's data deps, the stage's cmd, dvc push of its outs). The KFP
SDK itself is not a dependency of the package: `kfp_compile.py` (the only module that imports `kfp`) runs in a
separate virtualenv. `airflow_dag` renders the same graph as a self-contained Airflow DAG file (a task per
stage: `dvc repro` in a checkout, or `airflow_pod`'s pod running the KFP step); Airflow is not imported.
"""
