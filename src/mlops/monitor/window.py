"""window: read a time window of the server's prediction log (local directory or fsspec URL).

The server (mlops.serve.predlog) writes complete JSONL files `predictions-<UTC time>-<pid>-<seq>.jsonl`,
one record per row: {ts, model, model_version, request_id, inputs{feature: value}, <the task's outputs>}.
The outputs are those the task serves (mlops.task): binary `probability` + `label`, multiclass
`probabilities` (one per class, in class order) + `label`, regression `prediction`; `Task.logged_outputs`
reads them and `Task.prediction_columns` names them in the window's frame (`probability`,
`probability[<class>]` per class, `prediction`). A record may also carry `actual`: the true label (a class
name, or the target's value) once it is known; nothing in the template writes it, a job that joins the
ground truth to the log by `request_id` can, and `mlops drift` then tests target drift on those rows.

A file is written whole (a local temp file renamed into place, one object PUT elsewhere), so a file with
a line that is not such a record (the task's output missing or of the wrong shape included) was damaged
after the fact: it is counted and skipped as a whole, never fatal, and so is a file that cannot be read.
Files still being written (`*.tmp`) are not read. With a window, files whose name says they were written
before it began are not opened at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from mlops.task import BINARY, Task

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"^predictions-(\d{8}T\d{6})-\d+-\d+\.jsonl$")
# a file's name carries its flush time truncated to the second, its records are older than the flush
NAME_SLACK = dt.timedelta(minutes=1)
MAX_LISTED = 20  # skipped files named in the summary (all are counted)
ACTUAL = "actual"
"""The record key (and the window's column) of the true label, when a label join has added it."""


class Record(msgspec.Struct):
    """One logged row (extra keys are ignored; a missing or mistyped required key damages the file).

    Which output is required depends on the task (`_check`): `probability`, `probabilities` or
    `prediction`."""

    ts: str
    inputs: dict[str, Any]
    model: str = ""
    model_version: str = ""
    label: str | None = None
    probability: float | None = None
    probabilities: list[float] | None = None
    prediction: float | None = None
    actual: str | int | float | None = None


_DECODER = msgspec.json.Decoder(Record)


@dataclass
class Window:
    """The rows of the window and what reading them found."""

    # one row per record: ts (UTC), model, model_version, label (predicted class), the task's prediction
    # columns (mlops.task), actual (true label or None), and the feature columns from `inputs`
    frame: pd.DataFrame
    files_read: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # {file, reason}, at most MAX_LISTED
    skipped_count: int = 0
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def skip(self, path: str, reason: str) -> None:
        """Count a damaged or unreadable file (and name it, up to MAX_LISTED)."""
        self.skipped_count += 1
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append({"file": path, "reason": reason})
        log.warning("drift: skipped %s (%s)", path, reason)


def parse_ts(value: str) -> dt.datetime:
    """An ISO-8601 UTC time as the server writes it (`...Z`); raises ValueError otherwise."""
    stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _file_time(name: str) -> dt.datetime | None:
    match = FILE_PATTERN.match(name)
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)


def _check(record: Record, task: Task) -> None:
    """The record holds the task's output, of the task's shape; raises ValueError otherwise."""
    name = task.output_name
    value = task.logged_outputs({name: getattr(record, name)})
    if value is None:
        raise ValueError(f"no `{name}` (the {task.kind} model's output)")
    expected = (len(task.classes),) if task.kind == "multiclass" else ()
    if value.shape != expected:
        raise ValueError(f"`{name}` has shape {list(value.shape)}, expected {list(expected)}")


def _parse(data: bytes, task: Task) -> list[Record]:
    """Every line of a file as a Record; raises ValueError naming the first bad line."""
    records = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:  # no newline after the last line: the writer always ends with one
        raise ValueError(f"truncated: line {len(lines)} has no line end")
    for i, line in enumerate(lines, 1):
        try:
            record = _DECODER.decode(line)
            parse_ts(record.ts)
            _check(record, task)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise ValueError(f"line {i}: not a prediction record ({e})") from e
        records.append(record)
    return records


def read_window(
    location: str,
    window_hours: float | None,
    now: dt.datetime | None = None,
    features: list[str] = (),
    task: Task | None = None,
) -> Window:
    """Read the logged rows with `ts` in (now - window_hours, now].

    Args:
        location: the log directory (a local path or an fsspec URL, as `serve.prediction_log.dir`).
        window_hours: the window's length; None reads every file.
        now: the window's end (default: the current time).
        features: the input columns to extract from `inputs` (absent keys become null).
        task: the served model's task, which says what each record's output is (default: binary,
            `probability`).

    Returns:
        The window. A missing directory is an empty window (the server has not logged anything yet).
    """
    import fsspec

    task = task or Task(BINARY, "")
    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(hours=window_hours) if window_hours is not None else None
    fs, root = fsspec.core.url_to_fs(location)
    window = Window(frame=pd.DataFrame(), start=start, end=now)
    try:
        names = sorted(fs.find(root)) if fs.exists(root) else []
    except OSError as e:
        log.warning("drift: cannot list %s (%s): no rows", location, e)
        names = []
    records: list[Record] = []
    for path in names:
        name = path.rsplit("/", 1)[-1]
        written = _file_time(name)
        if written is None:
            continue  # not a log file (e.g. a `.tmp` being written)
        if start is not None and written < start - NAME_SLACK:
            continue
        try:
            data = fs.cat_file(path)
        except OSError as e:
            window.skip(path, f"unreadable: {e}")
            continue
        try:
            found = _parse(data, task)
        except ValueError as e:
            window.skip(path, str(e))
            continue
        window.files_read += 1
        records.extend(found)
    window.frame = _frame(records, features, start, now, task)
    log.info(
        "drift: %d rows from %d files in %s (%d skipped)",
        len(window.frame),
        window.files_read,
        location,
        window.skipped_count,
    )
    return window


def _outputs(records: list[Record], task: Task) -> dict[str, np.ndarray]:
    """The task's prediction columns (float64) of the records."""
    if not records:
        return {n: np.zeros(0, dtype=np.float64) for n in task.prediction_column_names()}
    name = task.output_name
    return task.prediction_columns(np.asarray([getattr(r, name) for r in records], dtype=np.float64))


def _frame(
    records: list[Record], features: list[str], start: dt.datetime | None, end: dt.datetime, task: Task
) -> pd.DataFrame:
    columns: dict[str, list[Any]] = {n: [r.inputs.get(n) for r in records] for n in features}
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime([r.ts for r in records], utc=True, format="ISO8601"),
            "model": [r.model for r in records],
            "model_version": [r.model_version for r in records],
            **{n: pd.Series(v, dtype="float64") for n, v in _outputs(records, task).items()},
            "label": [r.label for r in records],
            ACTUAL: pd.Series([r.actual for r in records], dtype=object),
            **columns,
        }
    )
    keep = frame["ts"] <= pd.Timestamp(end)
    if start is not None:
        keep &= frame["ts"] > pd.Timestamp(start)
    return frame[keep].reset_index(drop=True)
