"""When the ClickHouse reader may read ``replies`` without FINAL (pure: parts and SQL)."""

from __future__ import annotations

from sqlalchemy import column, func, select, table

from sms_replies.stores.dialects import DIALECTS, ClickHouseDialect
from sms_replies.stores.readers import collapsed


def test_one_merged_part_per_partition_has_nothing_to_collapse() -> None:
    assert collapsed([])
    assert collapsed([("202610", "202610_1_4_1", 1), ("202611", "202611_5_21_2", 2)])


def test_a_part_as_inserted_or_two_parts_of_a_partition_may_hold_duplicates() -> None:
    assert not collapsed([("202611", "202611_5_5_0", 0)])  # an insert keeps its duplicates
    assert not collapsed([("202611", "202611_1_4_1", 1), ("202611", "202611_5_5_0", 0)])
    assert not collapsed([("202611", "202611_1_4_1", 1), ("202611", "202611_5_9_1", 1)])


def test_without_final_only_for_the_tables_named() -> None:
    dialect = DIALECTS["clickhouse"]
    assert isinstance(dialect, ClickHouseDialect)
    r = table("replies", column("sender"), schema="db").alias("r")
    c = table("campaigns", column("name"), schema="db")
    stmt = select(r.c.sender, c.c.name).select_from(r.join(c, r.c.sender == c.c.name))
    assert str(stmt.compile(dialect=dialect)).count("FINAL") == 2
    fast = dialect.reading_without_final(frozenset({"replies"}))
    sql = str(stmt.compile(dialect=fast))
    assert "campaigns FINAL" in sql
    assert sql.count("FINAL") == 1


def test_count_of_a_column_never_null_reads_no_column() -> None:
    r = table("replies", column("reply_id"), column("campaign"), schema="db").alias("r")
    stmt = select(func.count(r.c.reply_id), func.count(r.c.campaign), func.count())
    sql = str(stmt.compile(dialect=DIALECTS["clickhouse"]))
    assert sql.startswith("SELECT count() AS count_1, count(campaign) AS count_2, count(*)")
    assert "count(r.reply_id)" in str(stmt.compile(dialect=DIALECTS["duckdb"]))
