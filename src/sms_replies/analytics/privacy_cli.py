"""Retention and erasure commands: ``sms-replies retention`` and ``sms-replies erase --phone N``.

The thin CLI over :mod:`sms_replies.stores.manage`, which deletes reply rows
from every configured store **so that their bytes are gone**, not only their
rows (how, per store: see there), and prints a count per store:

- DuckDB ``<data-dir>/replies.duckdb`` (when the file exists);
- PostgreSQL ``<schema>.replies`` (``$SMS_REPLIES_POSTGRES_DSN``);
- ClickHouse ``<database>.replies`` (when ``$SMS_REPLIES_SINKS`` names it, its
  ``SMS_REPLIES_CLICKHOUSE_*`` settings);
- Parquet ``<directory>/date=*/part-*.parquet`` (when the sinks name it,
  ``SMS_REPLIES_PARQUET_DIRECTORY``).

``erase`` first adds the number's keyed hash to the erasure list
(:mod:`sms_replies.erasures`), which the worker and the sinks consult, so that
nothing that comes later (a part the provider re-sends, a reply still in the
replies topic) brings it back; then it deletes the number in clear and, with
``$SMS_REPLIES_PSEUDONYMIZE_KEY``, its pseudonym. The number's opt-out
(``optouts`` row ``opted_out``) is kept, and said so, unless ``--forget-opt-out``:
it is what keeps the number off later campaigns (``docs/analytics.md``, privacy).

``retention`` deletes the replies received more than ``--days`` days ago, or
with ``--policy cnil`` every reply of the numbers whose last reply is more than
3 years old (the CNIL's rule for prospects: 3 years after the last contact).

The lead attaches :data:`retention_command` and :data:`erase_command` to the
``sms-replies`` group. The library calls (:func:`apply_retention`,
:func:`erase_sender`, ...) are re-exported from :mod:`sms_replies.stores.manage`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import click
from pydantic import SecretStr

from sms_replies.analytics.campaigns import normalise_number
from sms_replies.analytics.cli import command_settings
from sms_replies.analytics.params import InvalidQueryError
from sms_replies.erasures import add_erasure, unseen_by
from sms_replies.errors import SmsRepliesError
from sms_replies.settings import Settings
from sms_replies.stores.manage import (
    CNIL_YEARS,
    DEFAULT_TIMEOUT,
    POLICIES,
    PrivacyStoreError,
    Selection,
    Stores,
    apply_policy,
    apply_retention,
    delete_clickhouse,
    delete_duckdb,
    delete_everywhere,
    delete_parquet,
    delete_postgres,
    erase_sender,
    kept_optouts,
    retention_cutoff,
    years_before,
)
from sms_replies.stores.url import StoreURL, parse_store_url

__all__ = [
    "CNIL_YEARS",
    "DEFAULT_TIMEOUT",
    "POLICIES",
    "PrivacyStoreError",
    "Selection",
    "Stores",
    "apply_policy",
    "apply_retention",
    "delete_clickhouse",
    "delete_duckdb",
    "delete_everywhere",
    "delete_parquet",
    "delete_postgres",
    "erase_command",
    "erase_sender",
    "retention_command",
    "retention_cutoff",
    "years_before",
]

#: Seconds ``erase`` waits for running sinks to read the erasure list before deleting.
SINKS_WAIT: Final = 5.0


# -- click ----------------------------------------------------------------------------


def _store_options(func: Any) -> Any:
    options = [
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Directory holding replies.duckdb (skipped when the file is absent) "
            "and the erasure list [settings: env SMS_REPLIES_DATA_DIR, default ./data].",
        ),
        click.option(
            "--postgres-dsn",
            help="PostgreSQL store to delete from too "
            "[settings: env SMS_REPLIES_POSTGRES_DSN, unset: none].",
        ),
        click.option(
            "--postgres-schema",
            envvar="SMS_REPLIES_POSTGRES_SCHEMA_NAME",
            default="public",
            show_default=True,
            show_envvar=True,
            help="Schema of the PostgreSQL replies table.",
        ),
        click.option(
            "--store",
            metavar="URL",
            help="A store to delete from, in place of the configured one of its kind: a "
            "DuckDB path or duckdb:///path, postgresql://user@host:port/db?schema=NAME, "
            "clickhouse://host:port/db [settings: env SMS_REPLIES_ANALYTICS_STORE].",
        ),
        click.option(
            "--sinks",
            help="Active sinks: clickhouse and parquet stores are reached when named "
            "(their SMS_REPLIES_CLICKHOUSE_* / SMS_REPLIES_PARQUET_DIRECTORY settings) "
            "[settings: env SMS_REPLIES_SINKS, default duckdb].",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to wait for each store (DuckDB lock, PostgreSQL connect/command, "
            "ClickHouse mutation).",
        ),
        click.option("--dry-run", is_flag=True, help="Count the rows, delete nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _stores(settings: Settings, schema: str, timeout: float, store: str | None) -> Stores:
    """The configured stores (DuckDB file, DSN, sinks), the ``--store`` URL's in place of
    the one of its kind."""
    from sms_replies.stores.parquet import ParquetSettings

    names = set(settings.sinks)
    parquet_dir = None
    if "parquet" in names:
        parquet_dir = ParquetSettings().directory or settings.data_dir / "parquet"
    dsn = settings.postgres_dsn
    stores = Stores(
        duckdb_path=settings.duckdb_path,
        postgres_dsn=(dsn.get_secret_value() or None) if dsn is not None else None,
        postgres_schema=schema,
        clickhouse="clickhouse" in names,
        parquet_dir=parquet_dir,
        timeout=timeout,
    )
    if store is None and settings.analytics_store is not None:
        store = settings.analytics_store.get_secret_value() or None
    if store is None:
        return stores
    try:
        url = parse_store_url(store, default_duckdb=settings.duckdb_path, default_schema=schema)
    except SmsRepliesError as exc:
        raise click.ClickException(str(exc)) from None
    return _with_url(stores, url)


def _with_url(stores: Stores, url: StoreURL) -> Stores:
    if url.backend == "duckdb":
        return dataclasses.replace(stores, duckdb_path=url.path)
    if url.backend == "postgresql":
        return dataclasses.replace(
            stores, postgres_dsn=_postgres_dsn(url), postgres_schema=url.schema or "public"
        )
    from sms_replies.stores.clickhouse import ClickHouseSettings

    server = ClickHouseSettings(
        host=url.host or "127.0.0.1",
        port=url.port or 9000,
        database=url.database or "default",
        user=url.user or "default",
        password=url.password or SecretStr(""),
        secure=url.secure,
    )
    return dataclasses.replace(stores, clickhouse_settings=server)


def _postgres_dsn(url: StoreURL) -> str:
    """A libpq URL for asyncpg from the parsed one (the password included)."""
    auth = ""
    if url.user is not None:
        auth = quote(url.user, safe="")
        if url.password is not None:
            auth += ":" + quote(url.password.get_secret_value(), safe="")
        auth += "@"
    query = f"?{urlencode(url.options)}" if url.options else ""
    return f"postgresql://{auth}{url.host or '127.0.0.1'}:{url.port}/{url.database}{query}"


def _wait_for_sinks(data_dir: Path, names: list[str], wait: float) -> None:
    """Until every sink has read the list between two writes, so that none lands after
    the deletion; a sink that is not running has no write under way (and will read
    the list before its first)."""
    import time

    deadline = time.monotonic() + wait
    while (late := unseen_by(data_dir, names)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if late:
        click.echo(f"sinks {', '.join(late)}: not running, or busy for {wait:.0f}s", err=True)


def _report(counts: dict[str, int | None], dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for store, count in counts.items():
        if count is None:
            click.echo(f"{store}: no store file, nothing to delete")
        else:
            click.echo(f"{store}: {verb} {count}")


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except SmsRepliesError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("retention")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="Delete the replies received more than this many days ago.",
)
@click.option(
    "--policy",
    type=click.Choice(POLICIES),
    help="cnil: delete every reply of the numbers whose last reply is more than "
    "3 years old (the CNIL's rule: 3 years after the last contact).",
)
@_store_options
def retention_command(
    days: int | None,
    policy: str | None,
    data_dir: Path | None,
    postgres_dsn: str | None,
    postgres_schema: str,
    store: str | None,
    sinks: str | None,
    timeout: float,
    dry_run: bool,
) -> None:
    """Delete old replies (--days N or --policy cnil) from every configured store."""
    if (days is None) == (policy is None):
        raise click.UsageError("give either --days or --policy")
    settings = command_settings(data_dir=data_dir, postgres_dsn=postgres_dsn, sinks=sinks)
    stores = _stores(settings, postgres_schema, timeout, store)
    if policy is not None:
        counts = _run(apply_policy(stores, policy, dry_run=dry_run))
    else:
        assert days is not None
        counts = _run(apply_retention(stores, days, dry_run=dry_run))
    _report(counts, dry_run)


@click.command("erase")
@click.option("--phone", required=True, help="The number to erase (E.164 or national, e.g. 06...).")
@click.option(
    "--pseudonymize-key",
    envvar="SMS_REPLIES_PSEUDONYMIZE_KEY",
    show_envvar=True,
    help="Key of the pseudonymised senders (prefer the variable to the flag).",
)
@click.option(
    "--forget-opt-out",
    is_flag=True,
    help="Delete the number's opt-out too. Without it the opt-out stays (the stop-list: "
    "what keeps the number off later campaigns; see docs/analytics.md, privacy).",
)
@_store_options
def erase_command(
    phone: str,
    pseudonymize_key: str | None,
    forget_opt_out: bool,
    data_dir: Path | None,
    postgres_dsn: str | None,
    postgres_schema: str,
    store: str | None,
    sinks: str | None,
    timeout: float,
    dry_run: bool,
) -> None:
    """Erase --phone: list it for the worker and the sinks, delete its replies everywhere.

    The number's keyed hash goes to the erasure list first (so that no reply of
    it is stored again), then every configured store deletes its replies and
    rewrites its files; counts per store are printed. The number's opt-out stays
    on the opt-out list unless --forget-opt-out.
    """
    try:
        number = normalise_number(phone, param="phone")
    except InvalidQueryError as exc:
        raise click.BadParameter(exc.message, param_hint="--phone") from None
    settings = command_settings(data_dir=data_dir, postgres_dsn=postgres_dsn, sinks=sinks)
    key = pseudonymize_key.encode("utf-8") if pseudonymize_key else None
    if not dry_run:
        add_erasure(settings.data_dir, number, key)
        click.echo("erasure list: added (the worker and the sinks drop this number from now on)")
        _wait_for_sinks(settings.data_dir, settings.sinks, SINKS_WAIT)
    stores = _stores(settings, postgres_schema, timeout, store)
    counts = _run(
        erase_sender(stores, number, key=key, dry_run=dry_run, forget_optouts=forget_opt_out)
    )
    _report(counts, dry_run)
    if not forget_opt_out or dry_run:
        for store in _run(kept_optouts(stores, number, key=key)):
            click.echo(
                f"{store}: opt-out kept (the number stays on the stop-list; "
                "--forget-opt-out deletes it)"
            )
