"""Config contract: params.yaml typos, missing and mistyped keys exit 2 naming the key path."""

from __future__ import annotations

import copy

import pytest
import yaml

from mlops import cli
from mlops.config import load_params, parse_params
from mlops.errors import ConfigError
from mlops.params_io import read_yaml

from conftest import FIXTURE_PARAMS

SHIPPED = read_yaml(FIXTURE_PARAMS)


def edited(change) -> dict:
    data = copy.deepcopy(SHIPPED)
    change(data)
    return data


def test_shipped_params_load(params):
    assert params.train.epochs > 0
    assert params.schema_.label.positive in params.schema_.label.classes
    assert params.schema_.features[: len(params.schema_.numeric)] == list(params.schema_.numeric)


def test_unknown_key_names_key_path():
    data = edited(lambda d: d["train"].__setitem__("epoch", 3))
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        parse_params(data)


def test_missing_key_names_key_path():
    data = edited(lambda d: d["train"].pop("batch_size"))
    with pytest.raises(ConfigError, match=r"train\.batch_size: missing required key"):
        parse_params(data)


def test_mistyped_key_names_expected_type():
    data = edited(lambda d: d["train"].__setitem__("lr", "1e-3"))  # a quoted number is a string
    with pytest.raises(ConfigError, match=r"train\.lr: expected to be a valid number \(got str '1e-3'\)"):
        parse_params(data)


def test_nested_key_path_and_bool_not_int():
    data = edited(lambda d: d["train"]["early_stopping"].__setitem__("patience", True))
    with pytest.raises(ConfigError, match=r"train\.early_stopping\.patience: expected to be a valid integer"):
        parse_params(data)


def test_selected_source_must_be_configured():
    data = edited(lambda d: (d["ingest"].__setitem__("source", "sql"), d["ingest"].pop("sql")))
    with pytest.raises(ConfigError, match=r"ingest\.sql: required when ingest\.source is 'sql'"):
        parse_params(data)


def test_slice_must_name_a_schema_column():
    data = edited(lambda d: d["evaluate"]["slices"].append({"column": "nope"}))
    with pytest.raises(ConfigError, match=r"evaluate\.slices\.\d+\.column: 'nope' is not a schema column"):
        parse_params(data)


def test_unknown_section_rejected():
    data = edited(lambda d: d.__setitem__("trian", {}))
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        parse_params(data)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read params file"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_cli_params_typo_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(edited(lambda d: d["featurize"].__setitem__("sead", 1))))
    code = cli.main(["--params", str(path), "featurize"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("mlops featurize: error: ")
    assert "featurize.sead: unknown key" in err[-1] and str(path) in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_cli_usage_error_exits_2(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_params_are_read_as_yaml_1_2_like_dvc(tmp_path):
    """`dvc exp run -S` rewrites params.yaml in YAML 1.2 (`classes: [No, Yes]` unquoted): still valid."""
    text = FIXTURE_PARAMS.read_text()
    text = text.replace('classes: ["No", "Yes"]', "classes: [No, Yes]").replace(
        'positive: "Yes"', "positive: Yes"
    )
    text = text.replace("lr: 0.001", "lr: 1e-3")
    assert "classes: [No, Yes]" in text and "positive: Yes" in text and "lr: 1e-3" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    p = load_params(path)
    assert p.schema_.label.classes == ["No", "Yes"] and p.schema_.label.positive == "Yes"
    assert p.train.lr == 0.001
    # PyYAML (YAML 1.1) would have read booleans here: the project must not
    assert yaml.safe_load("c: [No, Yes]")["c"] == [False, True]


def test_duplicate_params_key_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(FIXTURE_PARAMS.read_text() + "\ntrain:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML: .*duplicate key"):
        load_params(path)


def test_categories_are_distinct_and_leave_the_null_slot_free():
    data = edited(lambda d: d["schema"]["categorical"]["contract"]["categories"].append("One year"))
    with pytest.raises(ConfigError, match=r"schema\.categorical\.contract\.categories: duplicated values"):
        parse_params(data)

    def nullable_with_missing(d):
        d["schema"]["categorical"]["contract"].update(nullable=True, categories=["a", "<missing>"])

    with pytest.raises(ConfigError, match=r"schema\.categorical\.contract\.categories: '<missing>' names"):
        parse_params(edited(nullable_with_missing))


# ---------------------------------------------------------------- serve (msgspec, mlops.params.serve)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.__setitem__("workers", 0), r"serve\.workers: expected int >= 1 \(got int 0\)"),
        (
            lambda s: s.__setitem__("workers", True),
            r"serve\.workers: expected int, got bool \(got bool True\)",
        ),
        (lambda s: s.__setitem__("backend", "tensorrt"), r"serve\.backend: expected one of .*'onnx'"),
        (lambda s: s.__setitem__("wrkers", 2), r"serve\.wrkers: unknown key"),
        (lambda s: s["prediction_log"].pop("dir"), r"serve\.prediction_log\.dir: missing required key"),
        (
            lambda s: s["prediction_log"].__setitem__("rate", 1.5),
            r"serve\.prediction_log\.rate: expected float <= 1\.0",
        ),
    ],
)
def test_serve_section_errors_name_the_key_in_both_loaders(tmp_path, change, message):
    """`mlops serve` validates only `serve` (mlops.params.serve, no pydantic); the stages validate the whole
    file through mlops.config, which embeds the same classes: the same rule, the same message."""
    from mlops.params import serve as serve_params

    data = edited(lambda d: change(d["serve"]))
    with pytest.raises(ConfigError, match=message):
        parse_params(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"{path}: {message}"):
        serve_params.load(path)


def test_serve_loads_only_its_section_and_equals_the_full_load(tmp_path):
    from mlops.params import serve as serve_params

    shipped = serve_params.load(FIXTURE_PARAMS)
    assert shipped == load_params(FIXTURE_PARAMS).serve
    assert load_params(FIXTURE_PARAMS).section("serve") == SHIPPED["serve"]
    # a mistake in another section is the pipeline's concern: the server does not read it
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(edited(lambda d: d["train"].__setitem__("epochs", "ten"))))
    assert serve_params.load(path) == shipped
    path.write_text(yaml.safe_dump(edited(lambda d: d.pop("serve"))))
    with pytest.raises(ConfigError, match=r"serve: missing required key"):
        serve_params.load(path)


def test_serve_overrides_are_validated(tmp_path, capsys):
    """--prediction-log-dir/--prediction-log-rate replace keys of `serve.prediction_log`, validated again."""
    from mlops.params import serve as serve_params

    shipped = serve_params.load(FIXTURE_PARAMS)
    changed = serve_params.replace(shipped, prediction_log={"dir": "s3://bucket/logs", "rate": 0.25})
    assert (changed.prediction_log.dir, changed.prediction_log.rate) == ("s3://bucket/logs", 0.25)
    assert changed.workers == shipped.workers and shipped.prediction_log.dir != "s3://bucket/logs"
    with pytest.raises(ValueError, match=r"serve\.prediction_log\.rate: expected float <= 1\.0"):
        serve_params.replace(shipped, prediction_log={"rate": 2.0})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(edited(lambda d: d["serve"].__setitem__("workers", -1))))
    assert cli.main(["--params", str(path), "serve", "--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mlops serve: error: {path}: serve.workers: expected int >= 1 (got int -1)"
