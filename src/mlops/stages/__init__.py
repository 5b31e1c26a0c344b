"""stages: the DVC stages, one module each, in pipeline order: fingerprint, ingest, validate, featurize,
train, evaluate, gate (dvc.yaml runs `mlops <stage>`).

A stage module is a leaf: it never imports another stage. It declares `SECTIONS` (the params.yaml sections
it reads, validated alone), `add_arguments(parser)` (its options, whose path defaults are dvc.yaml's) and
`main(args, params)` (the command), beside `run(...)`, its core. `mlops.cli` runs a stage without loading
any other command, so a stage's code dependencies in dvc.yaml are exactly what it runs
(tests/test_stage_deps.py recomputes them from the imports).
"""
