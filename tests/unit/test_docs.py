"""The reference docs list every column and every setting, with the code's descriptions."""

from __future__ import annotations

from pathlib import Path

from sms_replies.schema import CAMPAIGN_COLUMNS, COLUMNS, OPTOUT_COLUMNS
from sms_replies.settings import Settings

DOCS = Path(__file__).parents[2] / "docs"


def test_schema_doc_lists_every_column_with_its_description() -> None:
    text = (DOCS / "schema.md").read_text()
    for column in (*COLUMNS, *CAMPAIGN_COLUMNS, *OPTOUT_COLUMNS):
        nullable = "yes" if column.nullable else "no"
        row = f"| `{column.name}` | {column.type} | {nullable} | {column.description} |"
        assert row in text, f"docs/schema.md: missing or stale row for {column.name}"


def test_configuration_doc_lists_every_setting() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        line = f"| `SMS_REPLIES_{name.upper()}` | `{flag}` |"
        assert line in text, f"docs/configuration.md: missing {name}"
        assert str(field.description) in text, f"docs/configuration.md: stale text for {name}"
