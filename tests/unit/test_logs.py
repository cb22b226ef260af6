"""Logs off a terminal: one line per record, no escape codes."""

from __future__ import annotations

import io
import logging

from faust.utils import terminal

from sms_replies.logs import PlainFaustLines, flatten_table, on_terminal


def test_a_faust_table_becomes_one_line() -> None:
    table = terminal.logtable(
        [("t", 0, 5), ("\u3003", 1, 6)], title="Offsets", headers=["topic", "partition", "offset"]
    )
    assert flatten_table(f"active offsets:\n{table}") == (
        "active offsets: topic partition offset; t 0 5; t 1 6"
    )
    assert flatten_table("no table here") == "no table here"


def test_only_faust_records_are_rewritten() -> None:
    faust = logging.LogRecord("faust.tables", logging.INFO, "", 0, "a:\n%s", ("| x |",), None)
    ours = logging.LogRecord("sms_replies.x", logging.INFO, "", 0, "a:\n%s", ("| x |",), None)
    assert PlainFaustLines().filter(faust)
    assert PlainFaustLines().filter(ours)
    assert faust.getMessage() == "a: x"
    assert ours.getMessage() == "a:\n| x |"


def test_a_file_or_a_pipe_is_no_terminal() -> None:
    assert not on_terminal(io.StringIO())
    assert not on_terminal(None)
