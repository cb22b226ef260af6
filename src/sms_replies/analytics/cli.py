"""``sms-replies stats`` and ``sms-replies campaign add|list|delete`` (click).

The lead attaches :data:`stats_command` and :data:`campaign_group` to the
``sms-replies`` group. Each reads the store of the one ``Settings`` object:
``--store URL`` or ``$SMS_REPLIES_ANALYTICS_STORE`` (DuckDB, PostgreSQL or
ClickHouse, :mod:`sms_replies.stores.url`), by default ``replies.duckdb`` under
``--data-dir`` or ``$SMS_REPLIES_DATA_DIR``; zone and store timeout likewise;
briefly, next to a running sink.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from sms_replies.analytics.campaigns import (
    Campaign,
    CampaignStats,
    campaign_stats,
    declare_campaign,
    delete_campaign,
)
from sms_replies.analytics.optouts import NoOptOutListError, check_optout, list_optouts
from sms_replies.analytics.params import (
    BUCKET_VALUES,
    GROUP_BY_VALUES,
    MAX_TOP,
    Bucket,
    GroupBy,
    InvalidQueryError,
    StatsQuery,
    parse_time,
    parse_zone,
    time_range,
)
from sms_replies.analytics.queries import Stats, Summary, Timeseries, summary, timeseries, to_plain
from sms_replies.errors import SmsRepliesError
from sms_replies.schema import TABLE
from sms_replies.settings import Settings, settings_problems
from sms_replies.stores.readers import Reader, open_store
from sms_replies.stores.url import StoreURL, parse_store_url

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "json", "csv")
_OPTION_NAMES = {"since": "--since", "until": "--until", "tz": "--tz", "start": "--start"}


def command_settings(**flags: Any) -> Settings:
    """The one Settings object for a command without a log: environment, then ``flags``.

    ``stats``, ``campaign``, ``retention`` and ``erase`` read their store path,
    zone and timeouts from it, like the processes of the pipeline.
    """
    try:
        return Settings.load(**flags)
    except ValidationError as exc:
        raise click.ClickException(settings_problems(exc)) from None


def data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Directory holding replies.duckdb [settings: env SMS_REPLIES_DATA_DIR, "
        "default ./data].",
    )(func)


def store_option(func: F) -> F:
    return click.option(
        "--store",
        metavar="URL",
        help="Store to read: a DuckDB path or duckdb:///path, "
        "postgresql://user@host:port/db?schema=NAME, clickhouse://host:port/db "
        "[settings: env SMS_REPLIES_ANALYTICS_STORE, default <data dir>/replies.duckdb].",
    )(func)


def store_url(settings: Settings, store: str | None = None) -> StoreURL:
    """The store of ``--store`` (or of the settings); ClickException naming the setting."""
    given = store
    if given is None and settings.analytics_store is not None:
        given = settings.analytics_store.get_secret_value()
    try:
        return parse_store_url(given, default_duckdb=settings.duckdb_path)
    except SmsRepliesError as exc:
        raise click.ClickException(str(exc)) from None


def console() -> Console:
    """Rich output; not cut at 80 columns when stdout is a file or a pipe."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=10_000, no_color=True)


def tz_option(func: F) -> F:
    return click.option(
        "--tz",
        help="IANA zone: buckets, dates given without offset, and times shown "
        "[settings: env SMS_REPLIES_ANALYTICS_TZ, default Europe/Paris].",
    )(func)


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)


@contextmanager
def _errors() -> Iterator[None]:
    """Library errors as click errors: bad input exits 2, other failures 1."""
    try:
        yield
    except InvalidQueryError as exc:
        hint = _OPTION_NAMES.get(exc.param, f"--{exc.param.replace('_', '-')}")
        raise click.BadParameter(exc.message, param_hint=hint) from None
    except SmsRepliesError as exc:
        raise click.ClickException(str(exc)) from None


def store_warning(url: StoreURL, what: str) -> NoReturn:
    """A command that cannot answer from this store: a warning naming it, exit status 1."""
    click.echo(
        f"Warning: the store {url} {what}: no reply stored there yet, or another "
        "store was meant (--store, --data-dir, SMS_REPLIES_ANALYTICS_STORE)",
        err=True,
    )
    raise SystemExit(1)


def require_replies(reader: Reader, url: StoreURL) -> None:
    """A store that does not exist (or holds no replies table) is an error, not zeros."""
    if not reader.exists:
        store_warning(url, "does not exist")
    if not reader.columns(TABLE):
        store_warning(url, "holds no replies table")


@contextmanager
def _optout_list(url: StoreURL) -> Iterator[None]:
    """A store without an opt-out list: the warning of :func:`require_replies`, exit 1."""
    try:
        yield
    except NoOptOutListError as exc:
        if exc.reason == "not_kept":
            click.echo(
                f"Warning: the store {url} keeps no opt-out list yet (its replies were written "
                "before the opt-out list existed): cannot tell who opted out from it. A sink of "
                "this version keeps the list for the replies it writes from now on",
                err=True,
            )
            raise SystemExit(1) from None
        store_warning(
            url, "does not exist" if exc.reason == "no_store" else "holds no replies table"
        )


def _json(value: Any) -> str:
    return orjson.dumps(
        to_plain(value), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    ).decode()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _when(value: datetime) -> str:
    """Compact wall-clock time for tables (the zone is in the title)."""
    return value.strftime("%Y-%m-%d %H:%M")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


_STAT_COLUMNS = [
    "replies",
    "senders",
    "stops",
    "stop_share",
    "multipart",
    "multipart_share",
    "incomplete",
    "incomplete_share",
    "median_assembly_seconds",
]


def _stat_values(stats: Stats) -> list[Any]:
    return [getattr(stats, name) for name in _STAT_COLUMNS]


def _group_label(key: str | None, group_by: str | None) -> str:
    if key is not None:
        return key
    return "(short number)" if group_by == "recipient" else "-"


def _print_summary_table(console: Console, result: Summary, ts: Timeseries | None) -> None:
    t = result.totals
    title = f"Replies {_when(result.start)} -> {_when(result.end)} ({result.tz})"
    if result.campaign:
        title += f", campaign {result.campaign}"
    table = Table(title=title)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    median = (
        _num(t.median_assembly_seconds)
        if result.median_assembly_available
        else "n/a (no last_part_at column)"
    )
    for label, value in (
        ("replies", str(t.replies)),
        ("distinct senders", str(t.senders)),
        ("STOPs", str(t.stops)),
        ("STOP share", _pct(t.stop_share)),
        ("multipart share", _pct(t.multipart_share)),
        ("incomplete share", _pct(t.incomplete_share)),
        ("median assembly (s), long replies with 2+ parts", median),
    ):
        table.add_row(label, value)
    console.print(table)
    if result.group_by is not None:
        groups = Table(title=f"By {result.group_by}")
        groups.add_column(result.group_by, overflow="fold", min_width=16)
        for name in ("replies", "senders", "STOPs", "STOP share"):
            groups.add_column(name, justify="right")
        groups.add_column("multipart", justify="right")
        groups.add_column("incomplete", justify="right")
        if result.group_by == "campaign":
            groups.add_column("delivered", justify="right")
            groups.add_column("reply rate", justify="right")
            groups.add_column("opt-out rate", justify="right")
        for g in result.groups:
            row = [
                _group_label(g.key, result.group_by),
                str(g.stats.replies),
                str(g.stats.senders),
                str(g.stats.stops),
                _pct(g.stats.stop_share),
                _pct(g.stats.multipart_share),
                _pct(g.stats.incomplete_share),
            ]
            if result.group_by == "campaign":
                row += [
                    "-" if g.delivered is None else str(g.delivered),
                    _pct(g.reply_rate),
                    _pct(g.opt_out_rate),
                ]
            groups.add_row(*row)
        console.print(groups)
    keywords = Table(title="Top keywords")
    keywords.add_column("keyword")
    keywords.add_column("replies", justify="right")
    keywords.add_column("share", justify="right")
    for k in result.keywords:
        keywords.add_row(k.keyword, str(k.replies), _pct(k.share))
    console.print(keywords)
    if ts is not None:
        series = Table(title=f"Per {ts.bucket} ({ts.tz})")
        series.add_column(ts.bucket)
        if ts.group_by:
            series.add_column(ts.group_by, overflow="fold", min_width=16)
        for name in ("replies", "STOPs", "multipart", "incomplete"):
            series.add_column(name, justify="right")
        for s in ts.series:
            for p in s.points:
                row = [_when(p.t)]
                if ts.group_by:
                    row.append(_group_label(s.key, ts.group_by))
                row += [str(p.replies), str(p.stops), str(p.multipart), str(p.incomplete)]
                series.add_row(*row)
        console.print(series)


@click.command("stats")
@data_dir_option
@store_option
@click.option(
    "--since",
    help="Start (inclusive): ISO date/date-time or relative (24h, 7d). Default: until - 7d.",
)
@click.option("--until", help="End (exclusive): ISO date/date-time or relative. Default: now.")
@tz_option
@click.option("--group-by", type=click.Choice(GROUP_BY_VALUES), help="Split the figures.")
@click.option("--bucket", type=click.Choice(BUCKET_VALUES), help="Also count per hour or day.")
@click.option("--campaign", help="Only the replies of this declared campaign.")
@click.option(
    "--top",
    type=click.IntRange(1, MAX_TOP),
    default=10,
    show_default=True,
    help="Keywords listed.",
)
@format_option
def stats_command(
    data_dir: Path | None,
    store: str | None,
    since: str | None,
    until: str | None,
    tz: str | None,
    group_by: GroupBy | None,
    bucket: Bucket | None,
    campaign: str | None,
    top: int,
    fmt: str,
) -> None:
    """Statistics of the stored replies: totals, STOPs, keywords, reassembly health.

    JSON prints the summary object of GET /api/summary (plus "timeseries", the
    object of GET /api/timeseries, with --bucket). CSV prints one row per
    group (or per bucket with --bucket). A store that does not exist (or holds no
    replies table) is an error: a warning and exit status 1, not zeros.
    """
    settings = command_settings(data_dir=data_dir)
    url = store_url(settings, store)
    tz = tz or settings.analytics_tz
    with _errors():
        start, end = time_range(since, until, tz=tz)
        q = StatsQuery(
            start=start,
            end=end,
            tz=tz,
            group_by=group_by,
            bucket=bucket,
            campaign=campaign,
            top=top,
        )
        with open_store(url, timeout=settings.store_read_timeout) as reader:
            require_replies(reader, url)
            result = summary(reader, q)
            ts = timeseries(reader, q) if bucket else None
    if fmt == "json":
        plain = to_plain(result)
        if ts is not None:
            plain["timeseries"] = to_plain(ts)
        click.echo(_json(plain))
    elif fmt == "csv":
        if ts is not None:
            header = ["bucket", "group", "replies", "senders", "stops", "stop_share"]
            header += ["multipart", "incomplete"]
            rows = [
                [
                    p.t.isoformat(),
                    s.key,
                    p.replies,
                    p.senders,
                    p.stops,
                    p.stop_share,
                    p.multipart,
                    p.incomplete,
                ]
                for s in ts.series
                for p in s.points
            ]
        else:
            header = ["group", *_STAT_COLUMNS, "delivered", "reply_rate", "opt_out_rate"]
            rows = [["(total)", *_stat_values(result.totals), None, None, None]]
            rows += [
                [g.key, *_stat_values(g.stats), g.delivered, g.reply_rate, g.opt_out_rate]
                for g in result.groups
            ]
        click.echo(_csv(header, rows), nl=False)
    else:
        _print_summary_table(console(), result, ts)


@click.group("campaign")
def campaign_group() -> None:
    """Declare, list and delete campaigns (windows of replies to one number)."""


@campaign_group.command("add")
@data_dir_option
@store_option
@click.argument("name")
@click.option("--recipient", help="Long number the campaign was sent from (E.164 or national).")
@click.option("--short-number", is_flag=True, help="A campaign on the short number instead.")
@click.option("--start", required=True, help="Start of the reply window (ISO, inclusive).")
@click.option("--end", required=True, help="End of the reply window (ISO, exclusive).")
@click.option("--delivered", type=click.IntRange(min=0), help="Messages delivered (for rates).")
@tz_option
@click.option("--replace", is_flag=True, help="Replace a campaign of the same name.")
def campaign_add(
    data_dir: Path | None,
    store: str | None,
    name: str,
    recipient: str | None,
    short_number: bool,
    start: str,
    end: str,
    delivered: int | None,
    tz: str | None,
    replace: bool,
) -> None:
    """Declare campaign NAME: its replies are those to its number within [start, end)."""
    settings = command_settings(data_dir=data_dir)
    url = store_url(settings, store)
    tz = tz or settings.analytics_tz
    with _errors():
        campaign = Campaign.create(
            name,
            start=parse_time(start, tz=tz, param="start"),
            end=parse_time(end, tz=tz, param="end"),
            recipient=recipient,
            short_number=short_number,
            delivered=delivered,
        )
        declare_campaign(url, campaign, replace=replace, timeout=settings.store_read_timeout)
    target = campaign.recipient or "the short number"
    click.echo(
        f"campaign {campaign.name!r} declared: replies to {target} "
        f"from {campaign.start.isoformat()} to {campaign.end.isoformat()}"
    )


@campaign_group.command("list")
@data_dir_option
@store_option
@tz_option
@format_option
def campaign_list(data_dir: Path | None, store: str | None, tz: str | None, fmt: str) -> None:
    """Declared campaigns with their figures over their whole window."""
    settings = command_settings(data_dir=data_dir)
    url = store_url(settings, store)
    tz = tz or settings.analytics_tz
    with _errors():
        zone = parse_zone(tz)
        with open_store(url, timeout=settings.store_read_timeout) as reader:
            items = campaign_stats(reader, tz=zone)
    if fmt == "json":
        click.echo(_json({"campaigns": items}))
    elif fmt == "csv":
        header = ["name", "channel", "recipient", "start", "end", "delivered"]
        header += ["replies", "senders", "stops", "stop_share", "reply_rate", "opt_out_rate"]
        click.echo(_csv(header, [_campaign_row(c) for c in items]), nl=False)
    else:
        table = Table(title=f"Campaigns ({tz})")
        table.add_column("name", overflow="fold")
        table.add_column("number", overflow="fold")
        table.add_column("window", min_width=16)
        for name in ("sent", "replies", "STOPs", "reply%", "opt-out%"):
            table.add_column(name, justify="right")
        for c in items:
            table.add_row(
                c.campaign.name,
                c.campaign.recipient or "(short number)",
                f"{_when(c.campaign.start)}\n{_when(c.campaign.end)}",
                "-" if c.campaign.delivered is None else str(c.campaign.delivered),
                str(c.stats.replies),
                str(c.stats.stops),
                _pct(c.reply_rate),
                _pct(c.opt_out_rate),
            )
        console().print(table)


def _campaign_row(c: CampaignStats) -> list[Any]:
    k = c.campaign
    return [
        k.name,
        k.channel,
        k.recipient,
        k.start.isoformat(),
        k.end.isoformat(),
        k.delivered,
        c.stats.replies,
        c.stats.senders,
        c.stats.stops,
        c.stats.stop_share,
        c.reply_rate,
        c.opt_out_rate,
    ]


@campaign_group.command("delete")
@data_dir_option
@store_option
@click.argument("name")
def campaign_delete(data_dir: Path | None, store: str | None, name: str) -> None:
    """Forget campaign NAME (its replies stay)."""
    settings = command_settings(data_dir=data_dir)
    url = store_url(settings, store)
    with _errors():
        delete_campaign(url, name, timeout=settings.store_read_timeout)
    click.echo(f"campaign {name!r} deleted")


# -- optouts ------------------------------------------------------------------------------


@click.group("optouts")
def optouts_group() -> None:
    """The opt-out list the sinks keep from the replies (STOP out, START in)."""


@optouts_group.command("list")
@data_dir_option
@store_option
@click.option("--since", help="Only decisions from this time: ISO date/date-time or relative (7d).")
@click.option("--all", "include_opted_in", is_flag=True, help="Also the senders opted back in.")
@tz_option
@format_option
def optouts_list(
    data_dir: Path | None,
    store: str | None,
    since: str | None,
    include_opted_in: bool,
    tz: str | None,
    fmt: str,
) -> None:
    """The senders opted out, most recent first (JSON: the object of GET /api/optouts).

    With a pseudonymisation key the senders are pseudonyms ('h:' + HMAC-SHA256 of
    the E.164 number under the key): hash your own list the same way to match it.
    A store that does not exist, holds no replies table or keeps no opt-out list
    yet is an error: a warning and exit status 1, never an empty list.
    """
    settings = command_settings(data_dir=data_dir)
    url = store_url(settings, store)
    tz = tz or settings.analytics_tz
    with _errors():
        parse_zone(tz)
        start = parse_time(since, tz=tz, param="since") if since else None
        with open_store(url, timeout=settings.store_read_timeout) as reader, _optout_list(url):
            result = list_optouts(reader, tz=tz, since=start, include_opted_in=include_opted_in)
    if fmt == "json":
        click.echo(_json(result))
    elif fmt == "csv":
        rows = [
            [o.sender, o.status, o.since.isoformat(), o.reply_id, o.source] for o in result.optouts
        ]
        click.echo(_csv(["sender", "status", "since", "reply_id", "source"], rows), nl=False)
    else:
        title = f"Opt-out list ({tz}): {result.count} sender(s)"
        table = Table(title=title)
        for name in ("sender", "status", "since", "reply_id", "source"):
            table.add_column(name, overflow="fold")
        for o in result.optouts:
            table.add_row(o.sender, o.status, _when(o.since), o.reply_id, o.source)
        console().print(table)


@optouts_group.command("check")
@data_dir_option
@store_option
@click.option("--phone", required=True, help="The number, in any format (E.164, 33…, 06…).")
@tz_option
@format_option
def optouts_check(
    data_dir: Path | None, store: str | None, phone: str, tz: str | None, fmt: str
) -> None:
    """Whether PHONE is opted out (with a pseudonymisation key, its pseudonym is looked up).

    \b
    Exit status:
      0  answered: opted out, opted back in, or never opted out (read the output,
         or "opted_out" with --format json)
      1  cannot tell: the store does not exist, holds no replies table, keeps no
         opt-out list yet, or could not be read (a warning on stderr)
      2  invalid input (--phone that is no number, --tz, options)
    """
    from sms_replies.privacy import key_bytes

    settings = command_settings(data_dir=data_dir)
    url = store_url(settings, store)
    tz = tz or settings.analytics_tz
    with _errors():
        parse_zone(tz)
        with open_store(url, timeout=settings.store_read_timeout) as reader, _optout_list(url):
            result = check_optout(reader, phone, tz=tz, key=key_bytes(settings.pseudonymize_key))
    if fmt == "json":
        click.echo(_json(result))
        return
    if fmt == "csv":
        d = result.decision
        row = [result.phone, result.opted_out, d and d.status, d and d.since.isoformat()]
        row += [d and d.reply_id, d and d.source]
        header = ["phone", "opted_out", "status", "since", "reply_id", "source"]
        click.echo(_csv(header, [row]), nl=False)
        return
    d = result.decision
    if d is None:
        click.echo(f"{result.phone}: not on the opt-out list (no STOP from it)")
    elif result.opted_out:
        click.echo(
            f"{result.phone}: OPTED OUT since {d.since.isoformat()} "
            f"(reply {d.reply_id}, {d.source})"
        )
    else:
        click.echo(
            f"{result.phone}: opted back in since {d.since.isoformat()} "
            f"(reply {d.reply_id}, {d.source})"
        )
