"""``sms-replies dead-letters list|show|replay``: look at what was dead-lettered, and replay it.

A synchronous command-line tool, so it uses kafka-python (a blocking client,
declared for this): no event loop for three calls. It reads the dead-letter
topic without a consumer group (nothing is committed, several people can look
at once), and ``replay`` re-publishes a record, with its key, to the topic it
came from; the stages' idempotence (sinks by ``reply_id``, the worker's
duplicate detection) makes a replay of something already stored harmless.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson

from sms_replies.cli import converting_errors
from sms_replies.dead_letters import DeadLetter, NotReplayable, parse
from sms_replies.errors import BrokerUnavailable
from sms_replies.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition


def _kafka() -> Any:
    """kafka-python, imported when a command runs (its import warns of a deprecation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka
        import kafka.errors

    return kafka


IDLE_SECONDS = 2.0  # no new record for this long: the end of the topic is reached
SEND_TIMEOUT = 15.0


def _consumer(settings: Settings) -> KafkaConsumer:
    kafka = _kafka()
    try:
        return kafka.KafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="sms-replies-dead-letters",
            request_timeout_ms=10_000,
        )
    except kafka.errors.KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach the broker {settings.bootstrap}: {exc}") from None


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise click.ClickException(f"no topic {topic} on the broker (wrong --topic-prefix?)")
    return [_kafka().TopicPartition(topic, p) for p in sorted(partitions)]


def read_dead_letters(
    settings: Settings, *, where: dict[int, int] | None = None
) -> list[DeadLetter]:
    """Every dead letter (or, with ``where`` {partition: offset}, those), oldest first.

    The end of each partition is the high watermark of the fetch responses
    (right on the embedded Tansu too, unlike its ListOffsets answer), with a
    pause of IDLE_SECONDS without records as a fallback.
    """
    topic = settings.topics.dead_letter
    kafka_error = _kafka().errors.KafkaError
    consumer = _consumer(settings)
    letters: list[DeadLetter] = []
    try:
        tps = _partitions(consumer, topic)
        if where is not None:
            tps = [tp for tp in tps if tp.partition in where]
        if not tps:
            return []
        consumer.assign(tps)
        for tp in tps:
            if where is not None:
                consumer.seek(tp, where[tp.partition])
            else:
                consumer.seek_to_beginning(tp)
        idle_until = time.monotonic() + IDLE_SECONDS
        while time.monotonic() < idle_until:
            for tp, records in consumer.poll(timeout_ms=200).items():
                idle_until = time.monotonic() + IDLE_SECONDS
                for r in records:
                    if where is None or r.offset == where.get(tp.partition):
                        letters.append(
                            parse(
                                r.value,
                                settings.topics,
                                partition=r.partition,
                                offset=r.offset,
                                timestamp_ms=r.timestamp,
                            )
                        )
            if _at_end(consumer, tps, where):
                break
    except kafka_error as exc:
        raise BrokerUnavailable(f"reading {topic} failed: {exc}") from None
    finally:
        consumer.close()
    return sorted(letters, key=lambda d: (d.timestamp_ms, d.partition, d.offset))


def _at_end(
    consumer: KafkaConsumer, tps: list[TopicPartition], where: dict[int, int] | None
) -> bool:
    for tp in tps:
        position = consumer.position(tp)
        if where is not None and position > where[tp.partition]:
            continue  # read past the one wanted
        highwater = consumer.highwater(tp)
        if highwater is None or position < highwater:
            return False
    return True


def replay(settings: Settings, letters: Iterable[DeadLetter]) -> list[tuple[DeadLetter, str]]:
    """Re-publish each letter to its topic; (letter, where it went) for each."""
    kafka = _kafka()
    try:
        producer = kafka.KafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", client_id="sms-replies-dead-letters"
        )
    except kafka.errors.KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach the broker {settings.bootstrap}: {exc}") from None
    done: list[tuple[DeadLetter, str]] = []
    try:
        for letter in letters:
            topic, key, value = letter.replay()
            try:
                sent = producer.send(topic, value=value, key=key).get(timeout=SEND_TIMEOUT)
            except kafka.errors.KafkaError as exc:
                raise BrokerUnavailable(f"replay of {letter.id} failed: {exc}") from None
            done.append((letter, f"{topic} {sent.partition}:{sent.offset}"))
    finally:
        producer.close(timeout=SEND_TIMEOUT)
    return done


# -- command ----------------------------------------------------------------------------


def _parse_id(text: str) -> tuple[int, int]:
    try:
        partition, offset = text.split(":")
        return int(partition), int(offset)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected PARTITION:OFFSET, as `list` shows") from None


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "time": datetime.fromtimestamp(letter.timestamp_ms / 1000, tz=UTC).isoformat(),
        "origin": letter.origin,
        "source_topic": letter.source_topic,
        "error": letter.error,
        "replayable": letter.source_topic is not None and letter.value is not None,
    }


def _settings(ctx: click.Context) -> Settings:
    from sms_replies.cli import load_settings

    overrides: dict[str, Any] = ctx.obj or {}
    settings = load_settings("dead-letters", overrides)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its connection chatter
    return settings


@click.group("dead-letters")
@click.option(
    "--kafka-bootstrap",
    default=None,
    help="Broker (default $SMS_REPLIES_KAFKA_BOOTSTRAP; `run` logs the embedded one's).",
)
@click.option(
    "--topic-prefix", default=None, help="Topic prefix (default $SMS_REPLIES_TOPIC_PREFIX)."
)
@click.pass_context
def dead_letters_group(
    ctx: click.Context, kafka_bootstrap: str | None, topic_prefix: str | None
) -> None:
    """What a stage could not handle: list it, show it, replay it once the cause is fixed."""
    ctx.obj = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix}


@dead_letters_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@converting_errors
def list_command(ctx: click.Context, fmt: str) -> None:
    """Every dead letter, oldest first: id (partition:offset), time, origin, source, error."""
    letters = read_dead_letters(_settings(ctx))
    if fmt == "json":
        click.echo(orjson.dumps([_summary(d) for d in letters]).decode())
        return
    if not letters:
        click.echo("no dead letters")
        return
    click.echo(f"{'id':<10} {'time (UTC)':<19}  {'origin':<20} {'source topic':<28} error")
    for d in letters:
        error = d.error.replace("\n", " ")
        error = error if len(error) <= 100 else error[:99] + "…"
        click.echo(
            f"{d.id:<10} {_time(d.timestamp_ms):<19}  {d.origin:<20} "
            f"{d.source_topic or '?':<28} {error}"
        )


@dead_letters_group.command("show")
@click.argument("letter_id")
@click.pass_context
@converting_errors
def show_command(ctx: click.Context, letter_id: str) -> None:
    """One dead letter in full (LETTER_ID as `list` shows it: partition:offset), as JSON."""
    partition, offset = _parse_id(letter_id)
    found = read_dead_letters(_settings(ctx), where={partition: offset})
    if not found:
        raise click.ClickException(f"no dead letter {letter_id}")
    letter = found[0]
    record: Any = letter.record
    with contextlib.suppress(orjson.JSONDecodeError):
        record = orjson.loads(letter.record)
    shown = {
        **_summary(letter),
        "source_key": None if letter.source_key is None else letter.source_key.decode(),
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "record": record,
        "envelope": letter.fields,
    }
    click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


@dead_letters_group.command("replay")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every replayable dead letter.")
@click.pass_context
@converting_errors
def replay_command(ctx: click.Context, letter_ids: tuple[str, ...], replay_all: bool) -> None:
    """Re-publish dead letters to the topic each came from (fix the cause first).

    Safe to repeat: the sinks store a reply once by reply_id, the worker drops
    duplicate parts. A letter replayed still fails again if its cause remains,
    and is then dead-lettered again.
    """
    if bool(letter_ids) == replay_all:
        raise click.UsageError("give LETTER_IDS or --all")
    settings = _settings(ctx)
    if replay_all:
        letters = read_dead_letters(settings)
    else:
        wanted = [_parse_id(i) for i in letter_ids]
        letters = []
        for partition, offset in wanted:
            found = read_dead_letters(settings, where={partition: offset})
            if not found:
                raise click.ClickException(f"no dead letter {partition}:{offset}")
            letters.extend(found)
    replayable: list[DeadLetter] = []
    for letter in letters:
        try:
            letter.replay()
            replayable.append(letter)
        except NotReplayable as exc:
            if not replay_all:
                raise click.ClickException(str(exc)) from None
            click.echo(f"skipped {exc}", err=True)
    for letter, where in replay(settings, replayable):
        click.echo(f"replayed {letter.id} -> {where}")
