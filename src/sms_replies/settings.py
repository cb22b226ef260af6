"""One frozen settings object per process, from ``SMS_REPLIES_*`` variables and CLI flags.

Every field is also a flag of the ``sms-replies`` command (``http_port`` ->
``--http-port``); a flag wins over the variable. Nothing is read at import
time: call :meth:`Settings.load`.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sms_replies.optout import DEFAULT_RESUBSCRIBE_KEYWORDS, resubscribe_keywords
from sms_replies.records import Topics

DUCKDB_FILE: Final = "replies.duckdb"  # the default store, in the data dir
DEFAULT_ZONE: Final = "Europe/Paris"  # analytics buckets and shown times: the provider is French

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

#: Listen addresses that mean "every interface".
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def local_address(host: str) -> str:
    """Where a process on this machine reaches a server listening on ``host``."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_", frozen=True, extra="forbid")

    # HTTP ingress
    http_host: str = Field(
        "127.0.0.1",
        description="Address the ingress listens on (0.0.0.0: every interface); "
        "moves the ingress only.",
    )
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the ingress (0: any).")
    callback_token: SecretStr | None = Field(
        None,
        description="Callbacks must carry ?token=<value> (else 401). Unset: `run` makes "
        "one at first start and keeps it in <data dir>/callback-token; "
        "`ingest` alone accepts callbacks without a token.",
    )
    publish_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for the broker's ack before answering 503."
    )
    publish_group_wait: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Seconds the ingress waits to group callbacks into one raw record per "
        "partition (0: those accepted in the same turn of its event loop). A wait makes "
        "records larger and the worker cheaper per callback, and each answer that much later.",
    )
    max_body_bytes: int = Field(65536, gt=0, description="Largest callback body accepted.")
    max_query_bytes: int = Field(
        8192, gt=0, description="Longest query string of a callback accepted (else 414)."
    )
    max_params: int = Field(
        50, gt=0, description="Most parameters (query + body) in one callback (else 400)."
    )
    max_part_text: int = Field(
        320,
        ge=1,
        description="Longest text of one part of a long SMS, in characters (else 400). "
        "A part carries at most 153 GSM-7 or 67 UCS-2 characters: the rest is margin "
        "for text the provider decodes or escapes.",
    )
    max_single_text: int = Field(
        2000,
        ge=1,
        description="Longest text of a single (not concatenated) message, in characters "
        "(else 400); some providers send a long SMS whole.",
    )
    max_parts: int = Field(
        64,
        ge=1,
        le=255,
        description="Most parts of one long SMS (concat-total, else 400).",
    )
    max_record_bytes: int = Field(
        1_000_000,
        ge=65536,
        description="Largest record the worker writes (state, reply, dead letter): "
        "at most the broker's limit (Kafka message.max.bytes, 1 MB by default).",
    )
    body_timeout: float = Field(
        10.0, gt=0, description="Seconds to receive a callback's whole body (else 408)."
    )
    signature_secret: SecretStr | None = Field(
        None,
        description="When set, callbacks must carry a valid Vonage-style `sig` and a "
        "recent `timestamp` (else 401).",
    )
    signature_method: Literal["md5hash", "md5", "sha1", "sha256", "sha512"] = Field(
        "sha256",
        description="How `sig` is computed: md5hash = MD5(params + secret); "
        "md5, sha1, sha256 or sha512 = HMAC of the params with the secret.",
    )
    signature_max_skew: float = Field(
        300.0, gt=0, description="Largest age (either way, seconds) of a signed `timestamp`."
    )
    audit_max_bytes: int = Field(
        4096,
        ge=256,
        description="Most bytes (as JSON) of a refused request's body, and of its query, "
        "kept in its audit record in the rejects topic.",
    )
    audit_unknown_path_rate: float = Field(
        1.0,
        ge=0,
        description="Audit records per second (per ingress process) for requests to "
        "unknown paths or with a wrong method (404, 405); beyond, they are only counted.",
    )
    audit_unknown_path_burst: int = Field(
        20, ge=0, description="Audit records of 404/405 refusals allowed at once."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or networks of the reverse proxies in front "
        "of the ingress: their X-Forwarded-For (last entry) is the client address kept in "
        "audit records. Empty: the header is never believed.",
    )
    ingest_workers: int = Field(
        1,
        ge=1,
        description="Processes serving the ingress on one port (SO_REUSEPORT); "
        "one process uses at most one core.",
    )

    # Kafka
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset: `run` starts the embedded broker."
    )
    kafka_embedded: bool = Field(
        False,
        description="The broker is the embedded Tansu: apply its workarounds "
        "(set by `run`; set it yourself when pointing at `sms-replies broker`).",
    )
    broker_host: str = Field(
        "127.0.0.1",
        description="Address the embedded broker started by `run` listens on "
        "(any Kafka client reaching it reads and writes every topic).",
    )
    topic_prefix: str = Field("sms-replies", description="Prefix of every topic name.")
    topic_partitions: int = Field(8, ge=1, description="Partitions of the raw topic.")
    replication_factor: int = Field(1, ge=1, description="Replication of created topics.")

    # Worker (reassembly)
    worker_id: str = Field("sms-replies-reassembly", description="Faust app id / group id.")
    worker_web_host: str = Field(
        "127.0.0.1", description="Address of the worker's health/metrics web server."
    )
    worker_web_port: int = Field(
        6066, ge=0, le=65535, description="Worker health/metrics (process N: this port + N)."
    )
    worker_processes: int = Field(
        1,
        ge=1,
        description="Worker processes `run` starts in one consumer group; they share the "
        "raw partitions (one process uses at most one core).",
    )
    worker_index: int = Field(
        0, ge=0, description="This worker process's number among them (set by `run`)."
    )
    worker_standby_replicas: int = Field(
        1,
        ge=0,
        description="Standby copies of each table partition kept by the other worker "
        "processes (faster take-over, more CPU); 0 = rebuild from the changelog.",
    )
    worker_rocksdb_write_buffer_mib: int = Field(
        8,
        ge=1,
        description="Per table partition: one RocksDB memtable (MiB) at most, two held; "
        "all partitions' memtables together stay under half of the RocksDB cache.",
    )
    worker_rocksdb_cache_mib: int = Field(
        64,
        ge=2,
        description="RocksDB memory of one worker process (MiB): one block cache shared "
        "by its table partitions, holding index and filter blocks and charged for the "
        "memtables. Faust's default: 2 GiB of cache per partition, index and filters outside.",
    )
    reassembly_timeout: float = Field(
        1800.0, gt=0, description="Seconds without a new part before a long reply expires."
    )
    dedup_horizon: float = Field(
        86400.0,
        gt=0,
        description="Seconds a closed long reply's parts are recognised as duplicates "
        "(the provider retries for up to 24 h).",
    )
    expiry_tick_interval: float = Field(
        5.0, gt=0, description="Seconds between expiry checks of pending long replies."
    )

    # Sinks
    sinks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["duckdb"], description="Comma-separated active sinks."
    )
    sink_batch_size: int = Field(1000, ge=1, description="Most replies per sink write.")
    sink_batch_timeout: float = Field(1.0, gt=0, description="Seconds to fill a batch.")
    sinks_web_host: str = Field(
        "127.0.0.1", description="Address of the sinks' health/metrics web server."
    )
    sinks_web_port: int = Field(6065, ge=0, le=65535, description="Sinks health/metrics.")
    data_dir: Path = Field(Path("data"), description="Local state: DuckDB file, worker state.")
    postgres_dsn: SecretStr | None = Field(None, description="PostgreSQL DSN for the sink.")
    resubscribe_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RESUBSCRIBE_KEYWORDS),
        description="Comma-separated first words that take a sender off the opt-out list "
        "(folded: uppercase, no accents). Not OUI/YES: they answer campaign questions.",
    )

    # Analytics and privacy
    api_host: str = Field(
        "127.0.0.1", description="Address the analytics API/dashboard listens on."
    )
    api_port: int = Field(8081, ge=0, le=65535, description="Port of the analytics API/dashboard.")
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token of the analytics API, needed by every request but the "
        "dashboard's files; required when api_host is beyond loopback. Unset: writes refused.",
    )
    api_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the API answers to besides IP addresses and localhost "
        "(DNS-rebinding guard), comma-separated.",
    )
    analytics_tz: str = Field(
        DEFAULT_ZONE, description="IANA zone for analytics buckets and displayed times."
    )
    analytics_store: SecretStr | None = Field(
        None,
        description="Store the analytics read (stats, campaign, retention, erase, api): a "
        "DuckDB path or duckdb:///path, postgresql://user@host:port/db?schema=NAME or "
        "clickhouse://host:port/db. Unset: <data dir>/replies.duckdb.",
    )
    store_read_timeout: float = Field(
        2.0, gt=0, description="Seconds an analytics reader waits for the sink's write lock."
    )
    pseudonymize_key: SecretStr | None = Field(
        None,
        description="When set, the ingress replaces each sender by 'h:' + HMAC-SHA256 of "
        "the number under this key before publishing anything (topics, state, stores, logs). "
        "Keep it secret and never change it.",
    )

    log_level: LogLevel = Field("INFO", description="Log level of every process.")

    @field_validator("analytics_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        for item in value:
            ip_network(item, strict=False)  # raises ValueError naming the bad entry
        return value

    @field_validator("sinks", "api_allowed_hosts", "resubscribe_keywords", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("resubscribe_keywords")
    @classmethod
    def _one_word_each(cls, value: list[str]) -> list[str]:
        return sorted(resubscribe_keywords(value))  # ValueError: not a word, or a STOP word

    @model_validator(mode="after")
    def _bounds_fit_a_record(self) -> Settings:
        from sms_replies.bounds import Bounds, worst_state_bytes

        bounds = Bounds.of(self)
        worst = worst_state_bytes(bounds)
        if worst > bounds.max_value_bytes:
            raise ValueError(
                f"max_parts={self.max_parts}, max_part_text={self.max_part_text} and "
                f"max_single_text={self.max_single_text} allow a worker state of up to "
                f"{worst} bytes, beyond max_record_bytes={self.max_record_bytes}: "
                "lower them or raise max_record_bytes (and the broker's limit)"
            )
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        # Worker N listens on worker_web_port + N: that range must not meet another port.
        if self.worker_web_port:
            workers = range(self.worker_web_port, self.worker_web_port + self.worker_processes)
            others = {
                "http_port": self.http_port,
                "sinks_web_port": self.sinks_web_port,
                "api_port": self.api_port,
            }
            clashes = [name for name, port in others.items() if port and port in workers]
            if clashes:
                raise ValueError(
                    f"worker ports {workers.start}-{workers.stop - 1} "
                    f"(worker_web_port + each of {self.worker_processes} processes) "
                    f"overlap {', '.join(clashes)}"
                )
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment; ``overrides`` (CLI flags) win. None means 'not given'."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / DUCKDB_FILE

    @property
    def worker_port(self) -> int:
        """Web port of this worker process."""
        return self.worker_web_port + self.worker_index if self.worker_web_port else 0

    @property
    def worker_state_dir(self) -> Path:
        """Local table state (RocksDB) of this worker process: one per process."""
        return self.data_dir / "worker" / str(self.worker_index)

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            from sms_replies.errors import ConfigError

            raise ConfigError(
                "SMS_REPLIES_KAFKA_BOOTSTRAP is not set: point it at a broker, "
                "or use `sms-replies run`, which starts the embedded one"
            )
        return self.kafka_bootstrap

    def secret_values(self) -> list[str]:
        """The values of every secret setting (to mask them in logs)."""
        return [
            value.get_secret_value()
            for value in (getattr(self, name) for name in type(self).model_fields)
            if isinstance(value, SecretStr) and value.get_secret_value()
        ]

    def as_env(self) -> dict[str, str]:
        """The settings as SMS_REPLIES_* variables, to hand to child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"SMS_REPLIES_{name.upper()}"] = str(value)
        return env


def settings_problems(exc: ValidationError) -> str:
    """One line naming each setting at fault: ``SMS_REPLIES_HTTP_PORT: Input should be ...``."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"SMS_REPLIES_{field.upper()}" if field else "settings"
        problems.append(f"{name}: {error['msg']}")
    return "; ".join(problems)
