"""window: read a time window of the server's prediction log (local directory or fsspec URL).

The server (mlops.serve.predlog) writes complete JSONL files `predictions-<UTC time>-<pid>-<seq>.jsonl`,
one record per row: {ts, model, model_version, request_id, inputs{feature: value}, probability, label}.
A file is written whole (a local temp file renamed into place, one object PUT elsewhere), so a file with
a line that is not such a record was damaged after the fact: it is counted and skipped as a whole, never
fatal, and so is a file that cannot be read. Files still being written (`*.tmp`) are not read. With a
window, files whose name says they were written before it began are not opened at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pandas as pd

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"^predictions-(\d{8}T\d{6})-\d+-\d+\.jsonl$")
# a file's name carries its flush time truncated to the second, its records are older than the flush
NAME_SLACK = dt.timedelta(minutes=1)
MAX_LISTED = 20  # skipped files named in the summary (all are counted)


class Record(msgspec.Struct):
    """One logged row (extra keys are ignored; a missing or mistyped required key damages the file)."""

    ts: str
    inputs: dict[str, Any]
    probability: float
    model: str = ""
    model_version: str = ""
    label: str | None = None


_DECODER = msgspec.json.Decoder(Record)


@dataclass
class Window:
    """The rows of the window and what reading them found."""

    frame: pd.DataFrame  # one row per record: ts (UTC), model, model_version, probability, label, inputs
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


def _parse(data: bytes) -> list[Record]:
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
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise ValueError(f"line {i}: not a prediction record ({e})") from e
        records.append(record)
    return records


def read_window(
    location: str, window_hours: float | None, now: dt.datetime | None = None, features: list[str] = ()
) -> Window:
    """Read the logged rows with `ts` in (now - window_hours, now].

    Args:
        location: the log directory (a local path or an fsspec URL, as `serve.prediction_log.dir`).
        window_hours: the window's length; None reads every file.
        now: the window's end (default: the current time).
        features: the input columns to extract from `inputs` (absent keys become null).

    Returns:
        The window. A missing directory is an empty window (the server has not logged anything yet).
    """
    import fsspec

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
            found = _parse(data)
        except ValueError as e:
            window.skip(path, str(e))
            continue
        window.files_read += 1
        records.extend(found)
    window.frame = _frame(records, features, start, now)
    log.info(
        "drift: %d rows from %d files in %s (%d skipped)",
        len(window.frame),
        window.files_read,
        location,
        window.skipped_count,
    )
    return window


def _frame(
    records: list[Record], features: list[str], start: dt.datetime | None, end: dt.datetime
) -> pd.DataFrame:
    columns: dict[str, list[Any]] = {n: [r.inputs.get(n) for r in records] for n in features}
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime([r.ts for r in records], utc=True, format="ISO8601"),
            "model": [r.model for r in records],
            "model_version": [r.model_version for r in records],
            "probability": pd.Series([r.probability for r in records], dtype="float64"),
            "label": [r.label for r in records],
            **columns,
        }
    )
    keep = frame["ts"] <= pd.Timestamp(end)
    if start is not None:
        keep &= frame["ts"] > pd.Timestamp(start)
    return frame[keep].reset_index(drop=True)
