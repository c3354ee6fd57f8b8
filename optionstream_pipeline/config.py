"""Typed, validated settings: ``config/config.yaml``, then ``OPTIONSTREAM_*`` environment overrides.

Built on pydantic-settings. Every section is a frozen, strict pydantic model: each field carries its
type, its bounds (``Field(ge=..., le=...)``) and what it means; the rules that tie fields together
are model validators; secrets are ``SecretStr`` values read from environment variables that the
file only names. Two things are this project's own:

- **Errors a person can act on.** A bad file fails at start with every problem listed at once, each
  naming the key, the value and what is allowed (``kafka.batch_size: 0 (int) is out of range;
  allowed: 1 to 1000000``), and naming the environment variable when the value came from one.
  :func:`describe_errors` turns pydantic's errors into those lines.
- **Environment values are YAML**, as documented since the first release:
  ``OPTIONSTREAM_KAFKA__BROKERS='[a:9092, b:9092]'`` is a list and ``...=null`` is null; and
  librdkafka property names, which contain dots, are written with underscores
  (``OPTIONSTREAM_KAFKA__LIBRDKAFKA__SECURITY_PROTOCOL=SASL_SSL``). :class:`EnvironmentSource` is
  pydantic-settings' own environment source with those two rules added.

The naming is ``OPTIONSTREAM_<SECTION>__<KEY>`` (double underscore between levels).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from optionstream_pipeline.deribit.instruments import InstrumentNameError, parse_option_name
from optionstream_pipeline.deribit.protocol import (
    MAX_CHANNELS_PER_SUBSCRIBE,
    MIN_HEARTBEAT_INTERVAL_S,
    TESTNET_URL,
)
from optionstream_pipeline.deribit.tls import verifying_context

ENV_PREFIX = "OPTIONSTREAM_"
ENV_DELIMITER = "__"
CONFIG_PATH_ENV = "OPTIONSTREAM_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/config.yaml")

# librdkafka properties that carry secrets: they must come from environment variables
# (kafka.sasl_password_env, kafka.secret_envs), never from a file. Any property whose name
# contains "password" or "secret" counts too.
SECRET_LIBRDKAFKA_KEYS = frozenset({"ssl.key.pem", "sasl.oauthbearer.config", "ssl_key"})
# librdkafka properties (and their aliases) that the typed settings own: setting them twice would
# be ambiguous, and some (the partitioner) keep a documented promise.
MAPPED_LIBRDKAFKA_KEYS = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "batch.num.messages",
        "linger.ms",
        "queue.buffering.max.ms",
        "compression.type",
        "compression.codec",
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "retries",
        "message.send.max.retries",
        "retry.backoff.ms",
        "queue.buffering.max.messages",
        "partitioner",
        "statistics.interval.ms",
        "delivery.report.only.error",  # the producer's delivery accounting depends on it
    }
)
# The kafka settings whose keys are librdkafka property names (dots, written as underscores in
# environment variable names).
PROPERTY_MAPS = ("librdkafka", "secret_envs")


def is_secret_property(name: str) -> bool:
    return name in SECRET_LIBRDKAFKA_KEYS or "password" in name or "secret" in name


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists each one, naming key, value and what is allowed."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid {source}:\n{lines}")


# ---------------------------------------------------------------------------------------------------
# Value types with their own rules


def _option_name(name: str) -> str:
    try:
        parse_option_name(name)
    except InstrumentNameError as exc:
        raise ValueError(str(exc)) from None
    return name


def _cron(value: str) -> str:
    """Five space-separated fields (minute hour day month weekday); Dagster checks the rest at load."""
    if len(value.split()) != 5:
        raise ValueError(f"{value!r} is not allowed; allowed: a 5-field cron string like '*/10 * * * *'")
    return value


def _broker(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{value!r} is not allowed; allowed: HOST:PORT")
    return value


def _archive_location(value: str) -> str:
    scheme, separator, rest = value.partition("://")
    if not separator:
        return value
    if scheme != "s3":
        raise PydanticCustomError(
            "archive_location",
            f"{value!r} is not a supported location; allowed: a local directory or s3://bucket/prefix",
        )
    if not rest.split("/", 1)[0]:
        raise PydanticCustomError("archive_location", f"{value!r} names no bucket; allowed: s3://bucket/prefix")
    return value.rstrip("/")


def _websocket_url(value: str) -> str:
    if not value.startswith(("ws://", "wss://")):
        raise ValueError(f"{value!r} is not allowed; allowed: ws:// or wss:// URL")
    return value


def _ca_file(value: str) -> str:
    """A CA bundle that exists and loads: checked at start, not at the first connection attempt."""
    allowed = "allowed: a PEM file of CA certificates, or null for the system trust store"
    if not Path(value).is_file():
        raise ValueError(f"{value!r} does not exist or is not a file; {allowed}")
    try:
        verifying_context(value)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{value!r} cannot be loaded as CA certificates ({exc}); {allowed}") from None
    return value


def _property_value(value: Any) -> str | int | float | bool:
    if not isinstance(value, str | int | float | bool):
        raise ValueError(f"expected a string, a number or true/false, got {_show(value)}")
    return value


OptionName = Annotated[str, AfterValidator(_option_name)]
Cron = Annotated[str, AfterValidator(_cron)]
Broker = Annotated[str, AfterValidator(_broker)]
WebSocketUrl = Annotated[str, AfterValidator(_websocket_url)]
CaFile = Annotated[str, AfterValidator(_ca_file)]
PropertyValue = Annotated[Any, AfterValidator(_property_value)]
# An explicit, non-empty list of option names, or "auto". Tagged, so that an error names one of the
# two shapes instead of both.
Instruments = Annotated[
    Union[  # noqa: UP007 (Annotated members need the Union spelling)
        Annotated[list[OptionName], Field(min_length=1), Tag("list")],
        Annotated[Literal["auto"], Tag("auto")],
    ],
    Discriminator(lambda value: "list" if isinstance(value, list) else "auto"),
]


def raise_problems(problems: list[tuple[str, str]]) -> None:
    """Report every broken cross-field rule of one section at once: ``(key within it, what is wrong)``."""
    if problems:
        raise PydanticCustomError("rules", "{count} rules broken", {"count": len(problems), "problems": problems})


class Section(BaseModel):
    """A settings section: strict types (``1`` is not ``true``), unknown keys refused, frozen."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------
# The sections


class ReconnectSettings(Section):
    """Exponential backoff with jitter between reconnect attempts."""

    initial_backoff_ms: int = Field(500, ge=10, le=600_000)
    max_backoff_ms: int = Field(30_000, ge=10, le=3_600_000)
    multiplier: float = Field(2.0, ge=1.0, le=10.0)
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="fraction of the delay")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise_problems(
                [
                    (
                        "max_backoff_ms",
                        f"{self.max_backoff_ms} is below initial_backoff_ms ({self.initial_backoff_ms}); "
                        "allowed: at least initial_backoff_ms",
                    )
                ]
            )
        return self


class DeribitSettings(Section):
    websocket_url: WebSocketUrl = TESTNET_URL
    testnet: bool = True
    currency: Literal["BTC"] = "BTC"
    instruments: Instruments = Field("auto", description="an explicit list of option names, or auto")
    # "auto": raw books when API credentials are in the environment, else the public 100ms books.
    book_interval: Literal["auto", "100ms", "agg2", "raw"] = "auto"
    # Option tickers (IVs, mark, greeks, underlying) beside the books, on the same connections, into
    # kafka.ticker_topic. "raw" tickers need API credentials, as raw books do.
    tickers: bool = True
    ticker_interval: Literal["100ms", "agg2", "raw"] = "100ms"
    # The WebSocket library: "picows" (Cython, about a third less CPU per frame than websockets; docs/benchmarks.md)
    # or "websockets" (the pure-Python reference library; it also speaks HTTP and SOCKS proxies).
    transport: Literal["websockets", "picows"] = "picows"
    channels_per_connection: int = Field(250, ge=1, le=5_000, description="instruments per WebSocket connection")
    max_connections: int = Field(16, ge=1, le=30, description="Deribit allows 32 per IP")
    subscribe_batch_size: int = Field(MAX_CHANNELS_PER_SUBSCRIBE, ge=1, le=250)
    heartbeat_interval_s: int = Field(30, ge=MIN_HEARTBEAT_INTERVAL_S, le=3600)
    stale_after_s: float = Field(15.0, ge=0.5, le=3600, description="reconnect when no frame arrives this long")
    request_timeout_s: float = Field(10.0, ge=0.1, le=300)
    # wss:// is always verified, hostname included: against the system trust store, or against this PEM
    # bundle instead (a private CA, a TLS-inspecting proxy). No setting turns verification off.
    tls_ca_file: CaFile | None = Field(None, description="CA bundle trusted for Deribit instead of the system store")
    reconnect: ReconnectSettings = ReconnectSettings()
    # Names of the environment variables holding API credentials (needed only for "raw" books).
    client_id_env: str = "DERIBIT_CLIENT_ID"
    client_secret_env: str = "DERIBIT_CLIENT_SECRET"

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.instruments == "auto":
            return self
        problems = []
        for index, name in enumerate(self.instruments):
            currency = parse_option_name(name).currency
            if currency != self.currency:
                problems.append(
                    (
                        f"instruments[{index}]",
                        f"{name!r} is a {currency} option; allowed: {self.currency} options only (deribit.currency)",
                    )
                )
        duplicates = sorted({name for name in self.instruments if self.instruments.count(name) > 1})
        if duplicates:
            problems.append(("instruments", f"listed more than once: {', '.join(duplicates)}"))
        raise_problems(problems)
        return self


class KafkaSettings(Section):
    brokers: list[Broker] = Field(["127.0.0.1:9092"], min_length=1)
    topic: str = "orderbook.deribit.options"
    ticker_topic: str = "ticker.deribit.options"  # same partitions and keys as the book topic
    partitions: int = Field(12, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=16)
    batch_size: int = Field(100, ge=1, le=1_000_000)
    batch_timeout_ms: int = Field(100, ge=0, le=900_000)
    max_retries: int = Field(3, ge=0, le=2_147_483_647)
    retry_backoff_ms: int = Field(100, ge=1, le=300_000)
    required_acks: int = Field(-1, ge=-1, le=1000, description="-1 means all")
    enable_idempotency: bool = True
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "snappy"
    queue_max_messages: int = Field(1_000_000, ge=1_000, le=10_000_000, description="local producer queue")
    flush_timeout_s: float = Field(15.0, ge=0.1, le=600)
    admin_timeout_s: float = Field(10.0, ge=0.5, le=300, description="bound on reaching the brokers at start")
    sasl_password_env: str = "KAFKA_SASL_PASSWORD"
    # Other secret librdkafka properties, each read from the environment variable named here,
    # e.g. {"ssl.key.password": "KAFKA_SSL_KEY_PASSWORD"}.
    secret_envs: dict[str, str] = {}
    librdkafka: dict[str, PropertyValue] = {}

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problems = []
        for key in self.librdkafka:
            where = f"librdkafka.{key}"
            if key in self.secret_envs:
                problems.append((where, "also in kafka.secret_envs; allowed: one of the two"))
            elif is_secret_property(key):
                problems.append(
                    (
                        where,
                        "secrets are not accepted in configuration; put the value in an environment variable "
                        "and name it in kafka.secret_envs (the SASL password: kafka.sasl_password_env, "
                        f"{self.sasl_password_env})",
                    )
                )
            elif key in MAPPED_LIBRDKAFKA_KEYS:
                problems.append((where, "set through the typed kafka settings, not the passthrough"))
        raise_problems(problems)
        return self


class MetricsSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65_535, description="0 picks a free port")


class CaptureSettings(Section):
    status_interval_s: float = Field(10.0, ge=0.1, le=3600)
    metrics: MetricsSettings = MetricsSettings()


class ArchiveSettings(Section):
    """The Parquet archive of the book topic: where it lives and how its files are cut."""

    # A local directory, or s3://bucket/prefix on an S3-compatible store (credentials and endpoint
    # from the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...).
    path: Annotated[str, AfterValidator(_archive_location)] = "data/archive"
    max_records_per_file: int = Field(
        500_000, ge=100, le=50_000_000, description="a file holds at most this many Kafka records"
    )
    compacted_records_per_file: int = Field(
        2_000_000,
        ge=100,
        le=100_000_000,
        description="a closed hour's files merge into files of at most this many records",
    )
    row_group_rows: int = Field(
        131_072, ge=1_024, le=10_000_000, description="Parquet row group size: what DuckDB's statistics prune"
    )
    group_id: str = "optionstream-archive"  # its committed offsets show the archive's lag in Kafka UI
    read_timeout_s: float = Field(600.0, ge=1, le=86_400, description="bound on one pass to the end of a partition")
    follow_interval_s: float = Field(5.0, ge=0.1, le=3600, description="optionstream archive --follow: pause")
    lease_s: float = Field(
        60.0, ge=1, le=3600, description="object storage: the term of a partition's writer lease (renewed at 1/3)"
    )


class DiscoveryFilters(Section):
    """Which listed BTC options make the capture universe; applied in this order: exclude, include,
    expiry window, strike band, then the cap (nearest expiries and nearest-the-money strikes first)."""

    min_days_to_expiry: float = Field(0.0, ge=0, le=3650)
    max_days_to_expiry: float = Field(400.0, ge=0, le=3650)
    # Keep strikes within this fraction of the underlying (0.5: 50% below to 50% above); null: all.
    strike_band: float | None = Field(0.5, ge=0.01, le=100, description="fraction of the underlying price")
    max_instruments: int = Field(1_200, ge=1, le=10_000, description="cap on the universe size")
    # Always followed while listed (even outside the filters), and never followed; null: none.
    include: list[OptionName] | None = None
    exclude: list[OptionName] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problems = []
        if self.max_days_to_expiry < self.min_days_to_expiry:
            problems.append(
                (
                    "max_days_to_expiry",
                    f"{self.max_days_to_expiry} is below min_days_to_expiry ({self.min_days_to_expiry}); "
                    "allowed: at least min_days_to_expiry",
                )
            )
        both = sorted(set(self.include or ()) & set(self.exclude or ()))
        if both:
            problems.append(("", f"both included and excluded: {', '.join(both)}; allowed: one or the other"))
        raise_problems(problems)
        return self


class DiscoverySettings(Section):
    """The instrument discovery asset: how often it runs, what it keeps, where the universe lives."""

    schedule_cron: Cron = "*/10 * * * *"
    universe_path: str = "data/universe"
    fetch_timeout_s: float = Field(10.0, ge=0.5, le=300)
    filters: DiscoveryFilters = DiscoveryFilters()


class HealthCheckSettings(Section):
    """Thresholds of the asset checks on the Kafka topic asset, computed from capture observations."""

    cron: Cron = "*/5 * * * *"
    max_update_age_s: float = Field(60.0, ge=1, le=86_400, description="freshness: age of the newest book update")
    max_gap_rate: float = Field(0.001, ge=0, le=1, description="gaps per book message over the window")
    min_coverage: float = Field(1.0, ge=0, le=1, description="share of the universe with book data")
    window_s: float = Field(300.0, ge=10, le=86_400)


class OrchestrationSettings(Section):
    """How Dagster keeps exactly one capture run alive and reports its health."""

    observation_interval_s: float = Field(
        5.0, ge=0.5, le=300, description="capture counters -> Dagster, also the heartbeat"
    )
    # A capture run ends (SUCCESS) after this long and the supervisor starts a fresh one; null: never.
    recycle_after_s: float | None = Field(86_400.0, ge=10, le=30 * 86_400)
    heartbeat_stale_s: float = Field(120.0, ge=5, le=86_400, description="a STARTED run silent this long is dead")
    supervisor_interval_s: int = Field(15, ge=1, le=3600)
    failure_backoff_s: float = Field(30.0, ge=1, le=86_400)
    max_backoff_s: float = Field(900.0, ge=1, le=86_400)
    backoff_after_failures: int = Field(2, ge=1, le=100, description="consecutive failures before waiting")
    engine_start_timeout_s: float = Field(60.0, ge=1, le=600)
    archive_cron: Cron = "*/5 * * * *"  # every partition of the topic archived
    checks: HealthCheckSettings = HealthCheckSettings()

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problems = []
        if self.heartbeat_stale_s < 3 * self.observation_interval_s:
            problems.append(
                (
                    "heartbeat_stale_s",
                    f"{self.heartbeat_stale_s} is below 3 observation intervals "
                    f"({3 * self.observation_interval_s:g}); allowed: at least 3 x observation_interval_s, "
                    "or live runs would be declared dead",
                )
            )
        if self.heartbeat_stale_s < self.engine_start_timeout_s:
            problems.append(
                (
                    "heartbeat_stale_s",
                    f"{self.heartbeat_stale_s} is below engine_start_timeout_s ({self.engine_start_timeout_s}); "
                    "allowed: at least engine_start_timeout_s, or a run still starting its engine would be "
                    "declared dead",
                )
            )
        if self.max_backoff_s < self.failure_backoff_s:
            problems.append(
                (
                    "max_backoff_s",
                    f"{self.max_backoff_s} is below failure_backoff_s ({self.failure_backoff_s}); "
                    "allowed: at least failure_backoff_s",
                )
            )
        raise_problems(problems)
        return self


class Settings(BaseSettings):
    """Every setting of OptionStream. ``Settings()`` is the defaults; :func:`load_settings` reads the
    file and the environment; :func:`settings_from_mapping` validates plain data."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        env_parse_none_str="null",
        strict=True,
        extra="forbid",
        frozen=True,
    )

    deribit: DeribitSettings = DeribitSettings()
    kafka: KafkaSettings = KafkaSettings()
    capture: CaptureSettings = CaptureSettings()
    archive: ArchiveSettings = ArchiveSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what is passed in: the file and the environment are read by :func:`load_settings`, so
        that ``Settings()`` means the defaults wherever it is built."""
        return (init_settings,)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        capacity = self.deribit.channels_per_connection * self.deribit.max_connections
        if self.discovery.filters.max_instruments > capacity:
            raise_problems(
                [
                    (
                        "discovery.filters.max_instruments",
                        f"{self.discovery.filters.max_instruments} is more than the capture can follow "
                        f"({capacity} = deribit.channels_per_connection x deribit.max_connections); "
                        f"allowed: up to {capacity}",
                    )
                ]
            )
        return self

    def replace(self, **dotted: Any) -> Settings:
        """A copy with whole sections or dotted keys replaced, e.g. ``replace(**{"kafka.topic": "t"})``."""
        data = to_dict(self)
        for key, value in dotted.items():
            _set_dotted(data, key.split("."), value)
        return settings_from_mapping(data, source="settings override")

    def deribit_credentials(self) -> tuple[str, SecretStr] | None:
        """The Deribit API key from the environment, or ``None`` when it is not set."""
        client_id = os.environ.get(self.deribit.client_id_env)
        client_secret = os.environ.get(self.deribit.client_secret_env)
        if client_id and client_secret:
            return client_id, SecretStr(client_secret)
        return None

    def kafka_secrets(self) -> dict[str, SecretStr]:
        """Secret librdkafka properties from the environment: the SASL password and ``kafka.secret_envs``."""
        names = {"sasl.password": self.kafka.sasl_password_env, **self.kafka.secret_envs}
        return {prop: SecretStr(os.environ[env]) for prop, env in names.items() if os.environ.get(env)}


# ---------------------------------------------------------------------------------------------------
# Loading


class EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source (prefix, ``__`` between levels) reading a given mapping,
    with values read as YAML and librdkafka property names written with underscores.

    It overrides three of the source's methods; pydantic-settings is pinned in ``pyproject.toml`` and
    ``test_config.py`` exercises each override, so an upgrade that changes them fails there first.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        return yaml.safe_load(value)

    def explode_env_vars(self, field_name: str, field: FieldInfo, env_vars: Mapping[str, str | None]) -> dict[str, Any]:
        exploded = super().explode_env_vars(field_name, field, env_vars)
        if field_name == "kafka":
            for key in PROPERTY_MAPS:
                if isinstance(exploded.get(key), dict):
                    exploded[key] = {name.replace("_", "."): value for name, value in exploded[key].items()}
        return exploded


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file (``$OPTIONSTREAM_CONFIG`` or ``config/config.yaml``) and apply env overrides."""
    environ = os.environ if environ is None else environ
    config_path = Path(path or environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)
    data = _read_file(config_path)
    problems = _unknown_sections(environ)
    merged = _merge(data, EnvironmentSource(environ)())
    return settings_from_mapping(merged, source=str(config_path), problems=problems, environ=environ)


def settings_from_mapping(
    data: Mapping[str, Any],
    source: str = "configuration",
    problems: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from plain data, raising one :class:`ConfigError` with every problem.

    ``environ`` is where overrides came from: a problem with a value set there names its variable.
    """
    problems = list(problems or ())
    settings = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems.extend(describe_errors(exc, environ or {}))
    if problems:
        raise ConfigError(problems, source=source)
    return settings


def to_dict(settings: Settings) -> dict[str, Any]:
    """Plain data for display or re-validation; holds no secrets (they live only in the environment)."""
    return settings.model_dump()


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the configuration file {str(path)!r}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path} is not valid YAML: {exc}"], source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path} must hold a mapping of sections, got {type(data).__name__}"])
    return data


def _unknown_sections(environ: Mapping[str, str]) -> list[str]:
    """``OPTIONSTREAM_<SECTION>__...`` naming no section: a typo the environment source would skip."""
    sections = list(Settings.model_fields)
    problems = []
    for name in sorted(environ):
        if name.upper().startswith(ENV_PREFIX) and ENV_DELIMITER in name and name != CONFIG_PATH_ENV:
            section = name[len(ENV_PREFIX) :].split(ENV_DELIMITER)[0].lower()
            if section not in sections:
                problems.append(
                    f"environment variable {name}: {section!r} is not a section; allowed: {', '.join(sections)}"
                )
    return problems


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


# ---------------------------------------------------------------------------------------------------
# pydantic's errors, in words


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping of keys",
    "model": "a mapping of keys",
    "model_attributes": "a mapping of keys",
}
_BOUND_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


def describe_errors(error: ValidationError, environ: Mapping[str, str]) -> list[str]:
    """One line per problem: ``key: what is wrong; allowed: ...``, plus the variable it came from."""
    lines = []
    for detail in error.errors(include_url=False):
        place = _Place.of(detail["loc"])
        for key, text in _describe(detail, place):
            lines.append(f"{key}: {text}{_from_environment(key, environ)}")
    return lines


def _describe(detail: Mapping[str, Any], place: _Place) -> Iterator[tuple[str, str]]:
    kind, value, key = detail["type"], detail["input"], place.key or "the file"
    type_name = _TYPE_NAMES.get(kind.removesuffix("_type").removesuffix("_parsing"))
    if kind == "rules":
        for inner, text in detail["ctx"]["problems"]:
            yield _join(place.key, inner) or "the file", text
    elif kind == "extra_forbidden":
        yield key, f"unknown key; allowed keys here: {', '.join(place.parent_fields)}"
    elif kind in _BOUND_ERRORS:
        low, high = place.bounds()
        doc = f" ({place.field.description})" if place.field is not None and place.field.description else ""
        yield key, f"{_show(place.as_declared(value))} is out of range; allowed: {low} to {high}{doc}"
    elif kind == "literal_error":
        yield key, f"{_show(value)} is not allowed; allowed: {', '.join(map(repr, place.allowed_values()))}"
    elif kind == "too_short":
        yield key, "must not be empty"
    elif kind == "value_error":
        yield key, str(detail["ctx"]["error"])
    elif type_name is not None:
        yield key, f"expected {type_name}, got {_show(value)}"
    else:
        yield key, f"{detail['msg']} (got {_show(value)})"


class _Place:
    """Where an error points: the dotted key people write, and the declared type and field there.

    Walks pydantic's error location through the models, following list indices, dict keys and the
    tags of tagged unions (which are part of the location but not of the key).
    """

    def __init__(self) -> None:
        self.key = ""
        self.hint: Any = Settings
        self.field: FieldInfo | None = None
        self.parent_fields: list[str] = list(Settings.model_fields)

    @classmethod
    def of(cls, loc: tuple[str | int, ...]) -> _Place:
        place = cls()
        for part in loc:
            place._step(part)
        return place

    def _step(self, part: str | int) -> None:
        hint, metadata = _unwrap(self.hint, self.field.metadata if self.field is not None else [])
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            self.parent_fields = list(hint.model_fields)
            self.field = hint.model_fields.get(str(part))
            self.hint = self.field.annotation if self.field is not None else None
            self.key = _join(self.key, str(part))
        elif get_origin(hint) is Union and any(isinstance(item, Discriminator) for item in metadata):
            tag = Tag(str(part))
            self.hint = next(member for member in get_args(hint) if tag in getattr(member, "__metadata__", ()))
        elif get_origin(hint) is list:
            self.hint, self.field = get_args(hint)[0], None
            self.key = f"{self.key}[{part}]"
        else:  # a dict key, or a place without a declared type
            self.hint = get_args(hint)[1] if get_origin(hint) is dict else None
            self.field = None
            self.key = _join(self.key, str(part))

    def bounds(self) -> tuple[Any, Any]:
        metadata = self.field.metadata if self.field is not None else []
        low = next((item.ge for item in metadata if isinstance(item, annotated_types.Ge)), None)
        high = next((item.le for item in metadata if isinstance(item, annotated_types.Le)), None)
        return low, high

    def allowed_values(self) -> tuple[Any, ...]:
        hint, _ = _unwrap(self.hint, [])
        return get_args(hint) if get_origin(hint) is Literal else ()

    def as_declared(self, value: Any) -> Any:
        """An integer given for a float field is shown as the float it became (``0.0 (float)``)."""
        hint, _ = _unwrap(self.hint, [])
        return float(value) if hint is float and isinstance(value, int) and not isinstance(value, bool) else value


def _unwrap(hint: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` (keeping its metadata) and ``X | None`` down to the declared type."""
    metadata = list(metadata)
    while True:
        if get_origin(hint) is Annotated:
            metadata.extend(hint.__metadata__)
            hint = get_args(hint)[0]
            continue
        members = [member for member in get_args(hint) if member is not type(None)]
        if get_origin(hint) in (Union, type(int | None)) and len(members) == 1:
            hint = members[0]
            continue
        return hint, metadata


def _from_environment(key: str, environ: Mapping[str, str]) -> str:
    """`` (from OPTIONSTREAM_...)`` when the value at ``key`` (or its list or section) came from there."""
    if not environ:
        return ""
    names = {name.upper(): name for name in environ}
    parts = key.split("[")[0].split(".")
    if parts[:2] == ["kafka", "librdkafka"] or parts[:2] == ["kafka", "secret_envs"]:
        parts = [*parts[:2], "_".join(parts[2:])] if len(parts) > 2 else parts
    for end in range(len(parts), 0, -1):
        candidate = ENV_PREFIX + ENV_DELIMITER.join(parts[:end]).upper()
        if candidate in names:
            return f" (from the environment variable {names[candidate]})"
    return ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "nothing (null)"


# ---------------------------------------------------------------------------------------------------
# `optionstream config`


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config``, as every sub-command takes it."""
    parser.add_argument("--config", help=f"YAML configuration (default ${CONFIG_PATH_ENV} or {DEFAULT_CONFIG_PATH})")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="validate the configuration and print the effective settings")
    add_config_argument(parser)
    parser.set_defaults(func=_run_config_command)


def _run_config_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(yaml.safe_dump(to_dict(settings), sort_keys=False), end="")
    return 0
