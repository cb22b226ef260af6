"""Parquet: the layout of the parts the Parquet sink writes, its settings, and the reading view.

``<directory>/date=YYYY-MM-DD/part-<uuid>.parquet`` (:data:`PART_GLOB`,
:func:`day_directory`); settings ``SMS_REPLIES_PARQUET_*`` (:class:`ParquetSettings`);
:func:`view_sql`, the DuckDB view readers use (one row per reply_id, the first
stored). The sink (:mod:`sms_replies.sinks.parquet`) writes the parts; retention
and erasure (:mod:`sms_replies.stores.deletes`) rewrite them.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_replies.schema import COLUMN_NAMES, TABLE

PART_GLOB = "date=*/part-*.parquet"


class ParquetSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_PARQUET_", extra="ignore")

    directory: Path | None = Field(None, description="Root of the files (<data_dir>/parquet).")
    compression: str = Field("zstd", description="Parquet codec: zstd, snappy, gzip, none.")
    index_max_ids: int = Field(
        500_000, ge=1, description="Most reply_ids kept in memory between batches (whole days)."
    )


def view_sql(directory: Path, name: str = TABLE) -> str:
    """DuckDB view reading every part with one row per reply_id (the first stored).

    DuckDB refuses to create it while the directory holds no part yet. Columns are
    matched by name: parts written before a column was added read it as null.
    """
    pattern = str(directory / PART_GLOB).replace("'", "''")
    columns = ", ".join(COLUMN_NAMES)
    return (
        f"CREATE OR REPLACE VIEW {name} AS "
        f"SELECT DISTINCT ON (reply_id) {columns} "
        f"FROM read_parquet('{pattern}', hive_partitioning = false, union_by_name = true) "
        "ORDER BY reply_id, ingested_at"
    )


def day_directory(root: Path, day: date) -> Path:
    return root / f"date={day.isoformat()}"
