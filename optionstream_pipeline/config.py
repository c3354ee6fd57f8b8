"""Typed, validated settings loaded from ``config/config.yaml`` with environment overrides.

Why a hand-written loader: a bad file must fail at start with a message that names the key, the
value and what is allowed, and every problem in the file should be reported at once rather than
one per restart. The settings are frozen dataclasses; the loader walks their type hints.

Environment overrides: ``OPTIONSTREAM_<SECTION>__<KEY>`` (double underscore between levels) replaces
one value; the value is read as a YAML scalar or flow sequence, so ``OPTIONSTREAM_KAFKA__BATCH_SIZE=500``
is an integer and ``OPTIONSTREAM_KAFKA__BROKERS='[a:9092, b:9092]'`` a list. Extra librdkafka
properties pass through under ``kafka.librdkafka``; from the environment their dots are written
as underscores (``OPTIONSTREAM_KAFKA__LIBRDKAFKA__SECURITY_PROTOCOL=SASL_SSL``).

Secrets (Deribit API keys, the Kafka SASL password) never come from the file: the file names the
environment variables that hold them, and :class:`Secret` keeps their values out of every repr.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from optionstream_pipeline.deribit.instruments import InstrumentNameError, parse_option_name
from optionstream_pipeline.deribit.protocol import (
    MAX_CHANNELS_PER_SUBSCRIBE,
    MIN_HEARTBEAT_INTERVAL_S,
    TESTNET_URL,
)

ENV_PREFIX = "OPTIONSTREAM_"
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
    }
)


def is_secret_property(name: str) -> bool:
    return name in SECRET_LIBRDKAFKA_KEYS or "password" in name or "secret" in name


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists each one, naming key, value and what is allowed."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid {source}:\n{lines}")


class Secret:
    """A value read from the environment that must never be printed, logged or published."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _check(*, minimum: float | None = None, maximum: float | None = None, doc: str = "") -> dict[str, Any]:
    return {"minimum": minimum, "maximum": maximum, "doc": doc}


@dataclass(frozen=True)
class ReconnectSettings:
    """Exponential backoff with jitter between reconnect attempts."""

    initial_backoff_ms: int = field(default=500, metadata=_check(minimum=10, maximum=600_000))
    max_backoff_ms: int = field(default=30_000, metadata=_check(minimum=10, maximum=3_600_000))
    multiplier: float = field(default=2.0, metadata=_check(minimum=1.0, maximum=10.0))
    jitter: float = field(default=0.2, metadata=_check(minimum=0.0, maximum=1.0, doc="fraction of the delay"))


@dataclass(frozen=True)
class DeribitSettings:
    websocket_url: str = TESTNET_URL
    testnet: bool = True
    currency: Literal["BTC"] = "BTC"
    # An explicit list of option names, or "auto" for the discovery asset's universe.
    instruments: list[str] | Literal["auto"] = field(default="auto")
    # "auto": raw books when API credentials are in the environment, else the public 100ms books.
    book_interval: Literal["auto", "100ms", "agg2", "raw"] = "auto"
    # The WebSocket library: "websockets" (pure Python) or "picows" (optional extra, far cheaper per frame).
    transport: Literal["websockets", "picows"] = "websockets"
    channels_per_connection: int = field(
        default=250, metadata=_check(minimum=1, maximum=5_000, doc="book channels per WebSocket connection")
    )
    max_connections: int = field(default=16, metadata=_check(minimum=1, maximum=30, doc="Deribit allows 32 per IP"))
    subscribe_batch_size: int = field(default=MAX_CHANNELS_PER_SUBSCRIBE, metadata=_check(minimum=1, maximum=250))
    heartbeat_interval_s: int = field(default=30, metadata=_check(minimum=MIN_HEARTBEAT_INTERVAL_S, maximum=3600))
    stale_after_s: float = field(
        default=15.0,
        metadata=_check(minimum=0.5, maximum=3600, doc="reconnect when no frame arrives this long"),
    )
    request_timeout_s: float = field(default=10.0, metadata=_check(minimum=0.1, maximum=300))
    reconnect: ReconnectSettings = field(default_factory=ReconnectSettings)
    # Names of the environment variables holding API credentials (needed only for "raw" books).
    client_id_env: str = "DERIBIT_CLIENT_ID"
    client_secret_env: str = "DERIBIT_CLIENT_SECRET"


@dataclass(frozen=True)
class KafkaSettings:
    brokers: list[str] = field(default_factory=lambda: ["127.0.0.1:9092"])
    topic: str = "orderbook.deribit.options"
    partitions: int = field(default=12, metadata=_check(minimum=1, maximum=10_000))
    replication_factor: int = field(default=1, metadata=_check(minimum=1, maximum=16))
    batch_size: int = field(default=100, metadata=_check(minimum=1, maximum=1_000_000))
    batch_timeout_ms: int = field(default=100, metadata=_check(minimum=0, maximum=900_000))
    max_retries: int = field(default=3, metadata=_check(minimum=0, maximum=2_147_483_647))
    retry_backoff_ms: int = field(default=100, metadata=_check(minimum=1, maximum=300_000))
    required_acks: int = field(default=-1, metadata=_check(minimum=-1, maximum=1000, doc="-1 means all"))
    enable_idempotency: bool = True
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "snappy"
    queue_max_messages: int = field(
        default=1_000_000, metadata=_check(minimum=1_000, maximum=10_000_000, doc="local producer queue")
    )
    flush_timeout_s: float = field(default=15.0, metadata=_check(minimum=0.1, maximum=600))
    admin_timeout_s: float = field(
        default=10.0, metadata=_check(minimum=0.5, maximum=300, doc="bound on reaching the brokers at start")
    )
    sasl_password_env: str = "KAFKA_SASL_PASSWORD"
    # Other secret librdkafka properties, each read from the environment variable named here,
    # e.g. {"ssl.key.password": "KAFKA_SSL_KEY_PASSWORD"}.
    secret_envs: dict[str, str] = field(default_factory=dict)
    librdkafka: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=9464, metadata=_check(minimum=0, maximum=65_535, doc="0 picks a free port"))


@dataclass(frozen=True)
class CaptureSettings:
    status_interval_s: float = field(default=10.0, metadata=_check(minimum=0.1, maximum=3600))
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


@dataclass(frozen=True)
class DiscoveryFilters:
    """Which listed BTC options make the capture universe; applied in this order: exclude, include,
    expiry window, strike band, then the cap (nearest expiries and nearest-the-money strikes first)."""

    min_days_to_expiry: float = field(default=0.0, metadata=_check(minimum=0, maximum=3650))
    max_days_to_expiry: float = field(default=400.0, metadata=_check(minimum=0, maximum=3650))
    # Keep strikes within this fraction of the underlying (0.5: 50% below to 50% above); null: all.
    strike_band: float | None = field(
        default=0.5, metadata=_check(minimum=0.01, maximum=100, doc="fraction of the underlying price")
    )
    max_instruments: int = field(
        default=1_200, metadata=_check(minimum=1, maximum=10_000, doc="cap on the universe size")
    )
    # Always followed while listed (even outside the filters), and never followed; null: none.
    include: list[str] | None = None
    exclude: list[str] | None = None


@dataclass(frozen=True)
class DiscoverySettings:
    """The instrument discovery asset: how often it runs, what it keeps, where the universe lives."""

    schedule_cron: str = "*/10 * * * *"
    universe_path: str = "data/universe"
    fetch_timeout_s: float = field(default=10.0, metadata=_check(minimum=0.5, maximum=300))
    filters: DiscoveryFilters = field(default_factory=DiscoveryFilters)


@dataclass(frozen=True)
class HealthCheckSettings:
    """Thresholds of the asset checks on the Kafka topic asset, computed from capture observations."""

    cron: str = "*/5 * * * *"
    max_update_age_s: float = field(
        default=60.0, metadata=_check(minimum=1, maximum=86_400, doc="freshness: age of the newest book update")
    )
    max_gap_rate: float = field(
        default=0.001, metadata=_check(minimum=0, maximum=1, doc="gaps per book message over the window")
    )
    min_coverage: float = field(
        default=1.0, metadata=_check(minimum=0, maximum=1, doc="share of the universe with book data")
    )
    window_s: float = field(default=300.0, metadata=_check(minimum=10, maximum=86_400))


@dataclass(frozen=True)
class OrchestrationSettings:
    """How Dagster keeps exactly one capture run alive and reports its health."""

    observation_interval_s: float = field(
        default=5.0, metadata=_check(minimum=0.5, maximum=300, doc="capture counters -> Dagster, also the heartbeat")
    )
    # A capture run ends (SUCCESS) after this long and the supervisor starts a fresh one; null: never.
    recycle_after_s: float | None = field(default=86_400.0, metadata=_check(minimum=10, maximum=30 * 86_400))
    heartbeat_stale_s: float = field(
        default=120.0, metadata=_check(minimum=5, maximum=86_400, doc="a STARTED run silent this long is dead")
    )
    supervisor_interval_s: int = field(default=15, metadata=_check(minimum=1, maximum=3600))
    failure_backoff_s: float = field(default=30.0, metadata=_check(minimum=1, maximum=86_400))
    max_backoff_s: float = field(default=900.0, metadata=_check(minimum=1, maximum=86_400))
    backoff_after_failures: int = field(
        default=2, metadata=_check(minimum=1, maximum=100, doc="consecutive failures before waiting")
    )
    engine_start_timeout_s: float = field(default=60.0, metadata=_check(minimum=1, maximum=600))
    checks: HealthCheckSettings = field(default_factory=HealthCheckSettings)


@dataclass(frozen=True)
class Settings:
    deribit: DeribitSettings = field(default_factory=DeribitSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    orchestration: OrchestrationSettings = field(default_factory=OrchestrationSettings)

    def replace(self, **sections: Any) -> Settings:
        """A copy with whole sections or dotted keys replaced, e.g. ``replace(**{"kafka.topic": "t"})``."""
        data = to_dict(self)
        for dotted, value in sections.items():
            _set_dotted(data, dotted.split("."), value)
        return settings_from_mapping(data, source="settings override")

    def deribit_credentials(self) -> tuple[str, Secret] | None:
        """The Deribit API key from the environment, or ``None`` when it is not set."""
        client_id = os.environ.get(self.deribit.client_id_env)
        client_secret = os.environ.get(self.deribit.client_secret_env)
        if client_id and client_secret:
            return client_id, Secret(client_secret)
        return None

    def kafka_secrets(self) -> dict[str, Secret]:
        """Secret librdkafka properties from the environment: the SASL password and ``kafka.secret_envs``."""
        names = {"sasl.password": self.kafka.sasl_password_env, **self.kafka.secret_envs}
        return {prop: Secret(os.environ[env]) for prop, env in names.items() if os.environ.get(env)}


# ---------------------------------------------------------------------------------------------------
# Loading


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file (``$OPTIONSTREAM_CONFIG`` or ``config/config.yaml``) and apply env overrides."""
    environ = os.environ if environ is None else environ
    config_path = Path(path or environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the configuration file {str(config_path)!r}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{config_path} is not valid YAML: {exc}"], source=str(config_path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{config_path} must hold a mapping of sections, got {type(data).__name__}"])
    problems: list[str] = []
    apply_env_overrides(data, environ, problems)
    return settings_from_mapping(data, source=str(config_path), problems=problems)


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if len(path) >= 3 and path[:2] == ["kafka", "librdkafka"]:
            path = [*path[:2], ".".join(path[2:]).replace("_", ".")]
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if not isinstance(data, dict):
            problems.append(f"environment variable {name} cannot apply: the file is not a mapping")
            continue
        _set_dotted(data, path, value)


def _set_dotted(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def settings_from_mapping(
    data: Mapping[str, Any], source: str = "configuration", problems: list[str] | None = None
) -> Settings:
    """Build :class:`Settings` from plain data, raising one :class:`ConfigError` with every problem."""
    problems = [] if problems is None else problems
    settings = _build_dataclass(Settings, data, "", problems)
    if settings is not None:
        _check_cross_field_rules(settings, problems)
    if problems:
        raise ConfigError(problems, source=source)
    return settings


def _build_dataclass(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"{path or 'the file'}: expected a mapping of keys, got {_show(data)}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            known = ", ".join(fields)
            problems.append(f"{_join(path, str(key))}: unknown key; allowed keys here: {known}")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in data:
            continue
        key_path = _join(path, name)
        value = _convert(hints[name], data[name], key_path, problems)
        if value is not _INVALID:
            _check_bounds(spec, value, key_path, problems)
            values[name] = value
    return cls(**values)


_INVALID = object()


def _convert(hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        built = _build_dataclass(hint, value, path, problems)
        return _INVALID if built is None else built
    if origin in (types.UnionType, typing.Union):
        return _convert_union(typing.get_args(hint), value, path, problems)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value in allowed:
            return value
        problems.append(f"{path}: {_show(value)} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return _INVALID
    if origin is list:
        return _convert_list(typing.get_args(hint)[0], value, path, problems)
    if origin is dict:
        return _convert_dict(typing.get_args(hint)[1], value, path, problems)
    if _scalar_matches(hint, value):
        return float(value) if hint is float else value
    problems.append(f"{path}: expected {_type_name(hint)}, got {_show(value)}")
    return _INVALID


def _convert_union(options: tuple[Any, ...], value: Any, path: str, problems: list[str]) -> Any:
    attempts: list[list[str]] = []
    for option in options:
        trial: list[str] = []
        converted = _convert(option, value, path, trial)
        if not trial:
            return converted
        attempts.append(trial)
    # Report the attempt that got furthest (a list with one bad element beats "not a Literal").
    problems.extend(min(attempts, key=lambda trial: (len(trial), "allowed:" in trial[0])))
    return _INVALID


def _convert_list(item_hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(value, list):
        problems.append(f"{path}: expected a list of {_type_name(item_hint)}, got {_show(value)}")
        return _INVALID
    if not value:
        problems.append(f"{path}: must not be empty")
        return _INVALID
    items = [_convert(item_hint, item, f"{path}[{index}]", problems) for index, item in enumerate(value)]
    return _INVALID if any(item is _INVALID for item in items) else items


def _convert_dict(value_hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a mapping, got {_show(value)}")
        return _INVALID
    result = {}
    for key, item in value.items():
        converted = _convert(value_hint, item, _join(path, str(key)), problems)
        if converted is not _INVALID:
            result[str(key)] = converted
    return result


def _scalar_matches(hint: Any, value: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return isinstance(value, hint)


def _check_bounds(spec: dataclasses.Field, value: Any, path: str, problems: list[str]) -> None:
    meta = spec.metadata
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)):
        doc = f" ({meta['doc']})" if meta.get("doc") else ""
        problems.append(f"{path}: {_show(value)} is out of range; allowed: {minimum} to {maximum}{doc}")


def _check_cross_field_rules(settings: Settings, problems: list[str]) -> None:
    deribit, kafka = settings.deribit, settings.kafka
    if isinstance(deribit.instruments, list):
        for index, name in enumerate(deribit.instruments):
            try:
                parsed = parse_option_name(name)
            except InstrumentNameError as exc:
                problems.append(f"deribit.instruments[{index}]: {exc}")
                continue
            if parsed.currency != deribit.currency:
                problems.append(
                    f"deribit.instruments[{index}]: {name!r} is a {parsed.currency} option; "
                    f"allowed: {deribit.currency} options only (deribit.currency)"
                )
        duplicates = sorted({name for name in deribit.instruments if deribit.instruments.count(name) > 1})
        if duplicates:
            problems.append(f"deribit.instruments: listed more than once: {', '.join(duplicates)}")
    if not deribit.websocket_url.startswith(("ws://", "wss://")):
        problems.append(
            f"deribit.websocket_url: {deribit.websocket_url!r} is not allowed; allowed: ws:// or wss:// URL"
        )
    if deribit.reconnect.max_backoff_ms < deribit.reconnect.initial_backoff_ms:
        problems.append(
            f"deribit.reconnect.max_backoff_ms: {deribit.reconnect.max_backoff_ms} is below initial_backoff_ms "
            f"({deribit.reconnect.initial_backoff_ms}); allowed: at least initial_backoff_ms"
        )
    for index, broker in enumerate(kafka.brokers):
        host, _, port = broker.rpartition(":")
        if not host or not port.isdigit():
            problems.append(f"kafka.brokers[{index}]: {broker!r} is not allowed; allowed: HOST:PORT")
    for key in kafka.librdkafka:
        if key in kafka.secret_envs:
            problems.append(f"kafka.librdkafka.{key}: also in kafka.secret_envs; allowed: one of the two")
        elif is_secret_property(key):
            problems.append(
                f"kafka.librdkafka.{key}: secrets are not accepted in configuration; put the value in an "
                f"environment variable and name it in kafka.secret_envs (the SASL password: "
                f"kafka.sasl_password_env, {kafka.sasl_password_env})"
            )
        elif key in MAPPED_LIBRDKAFKA_KEYS:
            problems.append(f"kafka.librdkafka.{key}: set through the typed kafka settings, not the passthrough")
    _check_discovery_rules(settings, problems)
    _check_orchestration_rules(settings.orchestration, problems)


def _check_discovery_rules(settings: Settings, problems: list[str]) -> None:
    discovery, deribit = settings.discovery, settings.deribit
    filters = discovery.filters
    _check_cron("discovery.schedule_cron", discovery.schedule_cron, problems)
    if filters.max_days_to_expiry < filters.min_days_to_expiry:
        problems.append(
            f"discovery.filters.max_days_to_expiry: {filters.max_days_to_expiry} is below min_days_to_expiry "
            f"({filters.min_days_to_expiry}); allowed: at least min_days_to_expiry"
        )
    for key in ("include", "exclude"):
        for index, name in enumerate(getattr(filters, key) or ()):
            try:
                parse_option_name(name)
            except InstrumentNameError as exc:
                problems.append(f"discovery.filters.{key}[{index}]: {exc}")
    both = sorted(set(filters.include or ()) & set(filters.exclude or ()))
    if both:
        problems.append(f"discovery.filters: both included and excluded: {', '.join(both)}; allowed: one or the other")
    capacity = deribit.channels_per_connection * deribit.max_connections
    if filters.max_instruments > capacity:
        problems.append(
            f"discovery.filters.max_instruments: {filters.max_instruments} is more than the capture can follow "
            f"({capacity} = deribit.channels_per_connection x deribit.max_connections); allowed: up to {capacity}"
        )


def _check_orchestration_rules(orchestration: OrchestrationSettings, problems: list[str]) -> None:
    _check_cron("orchestration.checks.cron", orchestration.checks.cron, problems)
    if orchestration.heartbeat_stale_s < 3 * orchestration.observation_interval_s:
        problems.append(
            f"orchestration.heartbeat_stale_s: {orchestration.heartbeat_stale_s} is below 3 observation intervals "
            f"({3 * orchestration.observation_interval_s:g}); allowed: at least 3 x observation_interval_s, "
            "or live runs would be declared dead"
        )
    if orchestration.heartbeat_stale_s < orchestration.engine_start_timeout_s:
        problems.append(
            f"orchestration.heartbeat_stale_s: {orchestration.heartbeat_stale_s} is below engine_start_timeout_s "
            f"({orchestration.engine_start_timeout_s}); allowed: at least engine_start_timeout_s, or a run still "
            "starting its engine would be declared dead"
        )
    if orchestration.max_backoff_s < orchestration.failure_backoff_s:
        problems.append(
            f"orchestration.max_backoff_s: {orchestration.max_backoff_s} is below failure_backoff_s "
            f"({orchestration.failure_backoff_s}); allowed: at least failure_backoff_s"
        )


def _check_cron(path: str, value: str, problems: list[str]) -> None:
    """Five space-separated fields (minute hour day month weekday); Dagster checks the rest at load."""
    if len(value.split()) != 5:
        problems.append(f"{path}: {value!r} is not allowed; allowed: a 5-field cron string like '*/10 * * * *'")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "nothing (null)"


def _type_name(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def to_dict(settings: Settings) -> dict[str, Any]:
    """Plain data for display or re-validation; holds no secrets (they live only in the environment)."""
    return dataclasses.asdict(settings)


# ---------------------------------------------------------------------------------------------------
# `optionstream config`


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="validate the configuration and print the effective settings")
    parser.add_argument("--config", help=f"YAML file (default ${CONFIG_PATH_ENV} or {DEFAULT_CONFIG_PATH})")
    parser.set_defaults(func=_run_config_command)


def _run_config_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc)
        return 2
    print(yaml.safe_dump(to_dict(settings), sort_keys=False), end="")
    return 0
