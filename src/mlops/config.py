"""config: the whole params.yaml, every section composed and cross-checked (one class per section lives in
`mlops.params.<section>`).

`load_params(path)` returns a `Params` object or raises `ConfigError` (exit 2) whose message names the
file, the key path (e.g. `train.epochs`) and the expected type. The DVC stages do not use it: each loads
only the sections it reads (`mlops.params.base.load_sections`), so editing another section's class leaves
their run-cache valid. The commands that are not stages, and `mlops check-params`, validate the whole file
here, including the checks across sections (slice and expectation columns must be schema columns).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, model_validator

from mlops.errors import ConfigError
from mlops.params import ingest as ingest_params
from mlops.params import serve as serve_params
from mlops.params.base import Section, describe
from mlops.params.champion import ChampionParams
from mlops.params.drift import DriftParams
from mlops.params.evaluate import EvaluateParams
from mlops.params.expectations import ExpectationsParams, check_expectations
from mlops.params.featurize import FeaturizeParams
from mlops.params.gate import GateParams
from mlops.params.ingest import IngestParams
from mlops.params.model_card import ModelCardParams
from mlops.params.reproducibility import ReproducibilityParams
from mlops.params.retrain import RetrainParams
from mlops.params.schema import SchemaParams
from mlops.params.serve import ServeParams
from mlops.params.structs import to_builtins
from mlops.params.train import TrainParams
from mlops.params.validate import ValidateParams
from mlops.params_io import read_yaml, sections


class Params(Section):
    """The whole params.yaml."""

    # msgspec classes (mlops.params.ingest, .serve), so that `mlops fingerprint` and `mlops serve` validate
    # their section without pydantic
    ingest: Annotated[IngestParams, PlainValidator(ingest_params.convert), PlainSerializer(to_builtins)]
    schema_: SchemaParams = Field(alias="schema")
    validate_: ValidateParams = Field(alias="validate")
    featurize: FeaturizeParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    champion: ChampionParams
    serve: Annotated[
        ServeParams, PlainValidator(serve_params.convert), PlainSerializer(serve_params.to_builtins)
    ]
    expectations: ExpectationsParams
    model_card: ModelCardParams
    drift: DriftParams
    retrain: RetrainParams
    reproducibility: ReproducibilityParams

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        known = set(self.schema_.features)
        for i, s in enumerate(self.evaluate.slices):
            if s.column not in known:
                raise ValueError(f"evaluate.slices.{i}.column: '{s.column}' is not a schema column")
            if s.bins is not None and s.column not in self.schema_.numeric:
                raise ValueError(f"evaluate.slices.{i}.bins: only numeric columns take bins")
        return self

    @model_validator(mode="after")
    def _rules_fit_the_task(self) -> Params:
        from mlops.errors import ConfigError
        from mlops.metrics import TASK_METRICS
        from mlops.task import LOSSES

        task = self.schema_.task
        try:
            self.gate.check_task(task)
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("params.yaml: ")) from e
        for name in self.champion.max_regression:
            if name not in TASK_METRICS[task]:
                raise ValueError(
                    f"champion.max_regression.{name}: not a {task} metric (schema.task: {task} has "
                    f"{', '.join(TASK_METRICS[task])})"
                )
        if self.train.loss != "auto" and self.train.loss not in LOSSES[task]:
            raise ValueError(
                f"train.loss: {self.train.loss!r} does not fit schema.task: {task} "
                f"(expected auto or {' | '.join(LOSSES[task])})"
            )
        return self

    @model_validator(mode="after")
    def _expectations_match_the_schema(self) -> Params:
        check_expectations(self.schema_, self.expectations)
        return self

    def section(self, name: str) -> dict[str, Any]:
        """Return one section as plain data (for MLflow params and params hashes)."""
        attr = {"schema": "schema_", "validate": "validate_"}.get(name, name)
        return self.model_dump(mode="json", include={attr})[attr]  # each field's own serializer


def parse_params(data: Any, source: str = "params.yaml") -> Params:
    """Validate already-loaded params data.

    Args:
        data: the parsed YAML document.
        source: the file name used in error messages.

    Returns:
        The typed params.

    Raises:
        ConfigError: naming the file and every offending key path.
    """
    try:
        return Params.model_validate(sections(data, source))
    except ValidationError as e:
        problems = "; ".join(describe(err) for err in e.errors())
        raise ConfigError(f"{source}: {problems}") from e


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Args:
        path: the params file.

    Returns:
        The typed params.

    Raises:
        ConfigError: the file is missing, is not YAML, or has an unknown, missing or mistyped key.

    The file is read as YAML 1.2, as DVC reads and rewrites it (`dvc exp run -S`): see `mlops.params_io`.
    """
    return parse_params(read_yaml(path), str(path))
