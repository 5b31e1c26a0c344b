"""Reading the prediction log's window: time filter, damaged files counted and skipped, fsspec URLs."""

from __future__ import annotations

import datetime as dt
import json

import fsspec
import pytest

from mlops.monitor.window import read_window

from .drift_helpers import log_records, synthetic_rows, write_log

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def rows(params):
    return synthetic_rows(params.schema_, 30, seed=1)


def test_window_keeps_rows_logged_within_the_window(tmp_path, params, rows):
    features = params.schema_.features
    write_log(
        tmp_path, log_records(rows.head(10), NOW - dt.timedelta(hours=30)), NOW - dt.timedelta(hours=30)
    )
    write_log(tmp_path, log_records(rows.head(20), NOW - dt.timedelta(hours=2)), NOW - dt.timedelta(hours=2))
    window = read_window(str(tmp_path), 24, NOW, features)
    assert len(window.frame) == 20 and window.files_read == 1 and window.skipped_count == 0
    assert list(window.frame["tenure"]) == list(rows.head(20)["tenure"])
    assert set(window.frame["model"]) == {"churn-mlp"}
    # no window: every file
    assert len(read_window(str(tmp_path), None, NOW, features).frame) == 30


def test_rows_of_a_file_written_just_after_the_window_start_are_filtered_by_ts(tmp_path, params, rows):
    # the file's name says 11:59 (inside the window) but its rows were logged before the window began
    records = log_records(rows.head(5), NOW - dt.timedelta(hours=25))
    write_log(tmp_path, records, NOW - dt.timedelta(minutes=1))
    window = read_window(str(tmp_path), 24, NOW, params.schema_.features)
    assert window.files_read == 1 and len(window.frame) == 0


def test_damaged_files_are_counted_and_skipped(tmp_path, params, rows):
    features = params.schema_.features
    good = write_log(tmp_path, log_records(rows.head(10), NOW), NOW, seq=1)[0]
    lines = good.read_text().splitlines(keepends=True)
    when = f"{NOW:%Y%m%dT%H%M%S}"
    # a truncated last line (the writer always ends a file with a newline)
    (tmp_path / f"predictions-{when}-4242-000002.jsonl").write_text("".join(lines[:3]) + lines[3][:40])
    # a garbage line in the middle
    (tmp_path / f"predictions-{when}-4242-000003.jsonl").write_text(lines[0] + "{not json\n" + lines[1])
    # a record missing a required key, and one whose ts is not a time
    (tmp_path / f"predictions-{when}-4242-000004.jsonl").write_text('{"ts": "2026-11-26T11:00:00Z"}\n')
    bad_ts = {**json.loads(lines[0]), "ts": "yesterday"}
    (tmp_path / f"predictions-{when}-4242-000005.jsonl").write_text(json.dumps(bad_ts) + "\n")
    # bytes that are not UTF-8, and an empty file (no line at all is a valid, empty file)
    (tmp_path / f"predictions-{when}-4242-000006.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    (tmp_path / f"predictions-{when}-4242-000007.jsonl").write_bytes(b"")
    # files that are not log files: an in-progress temp file, an unrelated file
    (tmp_path / f"predictions-{when}-4242-000008.jsonl.tmp").write_text("{half")
    (tmp_path / "README").write_text("not a log")
    window = read_window(str(tmp_path), 24, NOW, features)
    assert len(window.frame) == 10
    assert window.files_read == 2  # the good one and the empty one
    assert window.skipped_count == 5
    reasons = {s["file"].rsplit("-", 1)[-1]: s["reason"] for s in window.skipped}
    assert reasons["000002.jsonl"].startswith("truncated")
    assert reasons["000003.jsonl"].startswith("line 2:")
    assert "Invalid isoformat" in reasons["000005.jsonl"]
    assert set(reasons) == {f"00000{i}.jsonl" for i in (2, 3, 4, 5, 6)}


def test_missing_directory_is_an_empty_window(tmp_path, params):
    window = read_window(str(tmp_path / "never-written"), 24, NOW, params.schema_.features)
    assert len(window.frame) == 0 and window.files_read == 0 and window.skipped_count == 0


def test_window_reads_an_fsspec_url(params, rows):
    fs = fsspec.filesystem("memory")
    fs.mkdir("/predlog")
    body = "".join(json.dumps(r) + "\n" for r in log_records(rows, NOW))
    with fs.open(f"/predlog/predictions-{NOW:%Y%m%dT%H%M%S}-1-000001.jsonl", "w") as f:
        f.write(body)
    with fs.open(f"/predlog/predictions-{NOW:%Y%m%dT%H%M%S}-1-000002.jsonl", "w") as f:
        f.write(body[:-5])  # truncated
    try:
        window = read_window("memory://predlog", 1, NOW, params.schema_.features)
    finally:
        fs.rm("/predlog", recursive=True)
    assert len(window.frame) == len(rows) and window.skipped_count == 1


def test_absent_input_keys_are_missing_values(tmp_path, params, rows):
    records = log_records(rows.head(4), NOW)
    for r in records[:2]:
        del r["inputs"]["total_charges"]
    write_log(tmp_path, records, NOW)
    frame = read_window(str(tmp_path), 1, NOW, params.schema_.features).frame
    assert frame["total_charges"].isna().sum() == 2
