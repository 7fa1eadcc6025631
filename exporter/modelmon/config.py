"""Configuration: one YAML file, every key overridable by environment variable.

Precedence, lowest first: built-in defaults, the YAML file, ``MODELMON_<SECTION>__<KEY>``
environment variables (values parsed as YAML, so ``MODELMON_UPSTREAM__URL=null`` means
"no upstream"), then command-line flags. Every error names the offending key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

ENV_PREFIX = "MODELMON_"
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
_HOST_PORT_RE = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


def _positive(path: str, value: float) -> None:
    if value <= 0:
        _fail(path, f"must be > 0, got {value}")


def _port(path: str, value: int) -> None:
    if not 0 <= value <= 65535:
        _fail(path, f"must be a TCP port (0-65535), got {value}")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    traffic_port: int = 8000
    admin_port: int = 9400
    shutdown_grace_seconds: float = 20.0
    log_level: str = "info"
    # Scrapes of /metrics arriving within this many seconds of a rendering get that rendering
    # (concurrent scrapes always share one); 0: every scrape renders afresh.
    metrics_share_seconds: float = 1.0

    def validate(self, path: str) -> None:
        _port(f"{path}.traffic_port", self.traffic_port)
        if self.metrics_share_seconds < 0:
            _fail(f"{path}.metrics_share_seconds", "must be >= 0")
        _port(f"{path}.admin_port", self.admin_port)
        if self.traffic_port == self.admin_port and self.traffic_port != 0:
            _fail(f"{path}.admin_port", "must differ from server.traffic_port")
        if self.shutdown_grace_seconds < 0:
            _fail(f"{path}.shutdown_grace_seconds", "must be >= 0")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            _fail(f"{path}.log_level", "must be one of debug, info, warning, error")


@dataclass(frozen=True)
class UpstreamConfig:
    # None runs the sidecar in receive-only mode: no proxy listener, no upstream probe.
    url: str | None = "http://127.0.0.1:8080"
    connect_timeout_seconds: float = 5.0
    # Longest silence between two reads of the upstream's response (not a total deadline, so
    # long server-sent-event streams survive).
    read_timeout_seconds: float = 60.0
    max_connections: int = 256
    health_path: str = "/v2/health/ready"
    probe_interval_seconds: float = 10.0
    probe_timeout_seconds: float = 2.0
    preserve_host: bool = True

    def validate(self, path: str) -> None:
        if self.url is not None and not re.match(r"^https?://[^/\s]+(/.*)?$", self.url):
            _fail(f"{path}.url", f"must be an http:// or https:// URL, got {self.url!r}")
        for name in ("connect_timeout_seconds", "read_timeout_seconds",
                     "probe_interval_seconds", "probe_timeout_seconds"):
            _positive(f"{path}.{name}", getattr(self, name))
        _positive(f"{path}.max_connections", self.max_connections)
        if not self.health_path.startswith("/"):
            _fail(f"{path}.health_path", "must start with '/'")


@dataclass(frozen=True)
class RouteConfig:
    """An extra route: ``path`` is a regular expression matched against the whole path; a named
    group ``model`` takes the model name from the path, else ``model`` names it."""

    path: str
    name: str
    model: str | None = None
    inference: bool = True

    def validate(self, path: str) -> None:
        try:
            re.compile(self.path)
        except re.error as exc:
            _fail(f"{path}.path", f"invalid regular expression: {exc}")
        if not self.name or len(self.name) > 64:
            _fail(f"{path}.name", "must be 1-64 characters")
        if self.model is not None and not MODEL_NAME_RE.match(self.model):
            _fail(f"{path}.model", f"invalid model name {self.model!r}")


PROXY_ENGINES = ("fast", "aiohttp")


@dataclass(frozen=True)
class ProxyConfig:
    routes: tuple[RouteConfig, ...] = ()
    # "fast": the built-in asyncio/llhttp proxy; "aiohttp": the proxy on aiohttp's server and
    # client (same behaviour, several times the CPU per request).
    engine: str = "fast"
    # Client connections held at once (fast engine; lowered at start to fit the file descriptor
    # limit beside the upstream pool and the admin port). At the limit, a new connection closes
    # the longest-idle or slowest connection that has no request in progress.
    max_connections: int = 4096
    # A client has this long to send a complete request head (from connecting, or from the first
    # byte of a later request on a kept-alive connection): 408 and close otherwise (fast engine).
    request_head_timeout_seconds: float = 15.0
    # Longest silence between two reads of a request body (nginx's client_body_timeout): 408,
    # and the call is dropped, so that a stalled body cannot hold an upstream connection.
    request_body_timeout_seconds: float = 60.0
    # Hold a request body (up to 256 KiB) until it is complete before taking an upstream
    # connection (nginx's proxy_request_buffering), so that clients trickling bodies cannot pin
    # the upstream pool. Off: the body streams to the model as it arrives (for models that
    # answer while a request is still being uploaded). Fast engine.
    request_buffering: bool = True

    def validate(self, path: str) -> None:
        _positive(f"{path}.max_connections", self.max_connections)
        _positive(f"{path}.request_head_timeout_seconds", self.request_head_timeout_seconds)
        _positive(f"{path}.request_body_timeout_seconds", self.request_body_timeout_seconds)
        if self.engine not in PROXY_ENGINES:
            _fail(f"{path}.engine", f"must be one of {', '.join(PROXY_ENGINES)}, got {self.engine!r}")
        for i, route in enumerate(self.routes):
            route.validate(f"{path}.routes[{i}]")


@dataclass(frozen=True)
class AnalysisConfig:
    queue_size: int = 1024
    # Bodies larger than this are proxied untouched but not analysed (counted as body_too_large).
    max_body_bytes: int = 4 * 1024 * 1024

    def validate(self, path: str) -> None:
        _positive(f"{path}.queue_size", self.queue_size)
        _positive(f"{path}.max_body_bytes", self.max_body_bytes)


@dataclass(frozen=True)
class IngestConfig:
    max_body_bytes: int = 16 * 1024 * 1024
    max_records: int = 10_000

    def validate(self, path: str) -> None:
        _positive(f"{path}.max_body_bytes", self.max_body_bytes)
        _positive(f"{path}.max_records", self.max_records)


AUTH_GROUPS = ("writes", "metrics", "health")


@dataclass(frozen=True)
class AuthConfig:
    """Bearer-token authentication on the admin port (RFC 6750). The token is one line in
    ``token_file`` (a mounted Secret), re-read when the file changes; null = no authentication."""

    token_file: str | None = None
    # What needs the token: writes (POST /v1/records, /v1/labels), metrics (/metrics and the
    # landing page /), health (/healthz, /readyz).
    protect: tuple[str, ...] = ("writes",)

    def validate(self, path: str) -> None:
        if self.token_file is not None and not self.token_file.strip():
            _fail(f"{path}.token_file", "must be a file path, or null for no authentication")
        for i, group in enumerate(self.protect):
            if group not in AUTH_GROUPS:
                _fail(f"{path}.protect[{i}]", f"must be one of {', '.join(AUTH_GROUPS)}, got {group!r}")
        if "writes" not in self.protect:
            _fail(f"{path}.protect", "must include writes (the push API is what the token is for)")
        if self.token_file is None and set(self.protect) != {"writes"}:
            _fail(f"{path}.protect", f"protecting {', '.join(self.protect)} needs {path}.token_file")


PROTOCOLS = ("auto", "kserve_v1", "oip_v2", "mlflow", "seldon", "generic")
TASKS = ("auto", "classification", "regression")


@dataclass(frozen=True)
class GenericProtocolConfig:
    """JSON paths for the generic adapter: ``$.a.b``, ``$.a[0]``, ``$.rows[*].x``."""

    features: str
    predictions: str | None = None
    request_id: str | None = None

    def validate(self, path: str) -> None:
        from .protocols.generic import JsonPath

        for key in ("features", "predictions", "request_id"):
            value = getattr(self, key)
            if value is not None:
                try:
                    JsonPath(value)
                except ValueError as exc:
                    _fail(f"{path}.{key}", str(exc))


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str = ""
    # ISO 8601 time or Unix seconds; if absent, the artefact's modification time is used.
    trained_at: str | float | None = None
    artifact_path: str | None = None
    # Reference profile (from `modelmon profile`): enables drift and data-quality metrics.
    profile: str | None = None
    # Export the live per-bin counts (modelmon_feature_value, modelmon_feature_category: the
    # PromQL/fleet view of drift).
    export_histograms: bool = True
    # Export the reference profile's bins (modelmon_reference_value, _mean, _category_ratio):
    # static series, built once. The fleet rules read them from any replica that exports them.
    export_reference: bool = True
    # Wire format of the model's payloads; auto = by route, else by the payload's keys.
    protocol: str = "auto"
    generic: GenericProtocolConfig | None = None
    # Names of positional inputs (rows as lists, 2-D tensors) when there is no profile.
    feature_names: tuple[str, ...] = ()
    # The output performance is measured on (default: the profile's first output, else the first).
    prediction_output: str | None = None
    task: str = "auto"
    classes: tuple[str, ...] = ()  # class names, in the order of probability vectors
    positive_class: str | None = None  # for positive-prediction rates per segment
    segments: tuple[str, ...] = ()  # input features to break predictions and performance down by

    def validate(self, path: str) -> None:
        if not MODEL_NAME_RE.match(self.name):
            _fail(f"{path}.name", f"invalid model name {self.name!r} (letters, digits, _.:- ; max 63)")
        if self.trained_at is not None:
            try:
                self.trained_timestamp()
            except ValueError as exc:
                _fail(f"{path}.trained_at", str(exc))
        if self.protocol not in PROTOCOLS:
            _fail(f"{path}.protocol", f"must be one of {', '.join(PROTOCOLS)}")
        if self.protocol == "generic" and self.generic is None:
            _fail(f"{path}.generic", "required when protocol is generic")
        if self.generic is not None:
            self.generic.validate(f"{path}.generic")
        if self.task not in TASKS:
            _fail(f"{path}.task", f"must be one of {', '.join(TASKS)}")
        if len(self.segments) > 10:
            _fail(f"{path}.segments", "at most 10 segment features")

    def trained_timestamp(self) -> float | None:
        """The configured training time as Unix seconds, or None if not configured."""
        if self.trained_at is None:
            return None
        if isinstance(self.trained_at, (int, float)):
            return float(self.trained_at)
        text = self.trained_at.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time or Unix seconds: {self.trained_at!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()


@dataclass(frozen=True)
class DependencyConfig:
    """A dependency to probe: ``url`` (HTTP GET, 2xx/3xx is up) or ``tcp`` (``host:port`` connect)."""

    name: str
    url: str | None = None
    tcp: str | None = None

    def validate(self, path: str) -> None:
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", self.name):
            _fail(f"{path}.name", f"invalid dependency name {self.name!r}")
        if (self.url is None) == (self.tcp is None):
            _fail(path, "exactly one of url or tcp must be set")
        if self.url is not None and not re.match(r"^https?://", self.url):
            _fail(f"{path}.url", "must be an http:// or https:// URL")
        if self.tcp is not None and not _HOST_PORT_RE.match(self.tcp):
            _fail(f"{path}.tcp", f"must be host:port, got {self.tcp!r}")


@dataclass(frozen=True)
class HealthConfig:
    dependencies: tuple[DependencyConfig, ...] = ()
    dependency_timeout_seconds: float = 2.0
    interval_seconds: float = 10.0

    def validate(self, path: str) -> None:
        _positive(f"{path}.dependency_timeout_seconds", self.dependency_timeout_seconds)
        _positive(f"{path}.interval_seconds", self.interval_seconds)
        names = [d.name for d in self.dependencies]
        if len(names) != len(set(names)):
            _fail(f"{path}.dependencies", "dependency names must be unique")
        for i, dep in enumerate(self.dependencies):
            dep.validate(f"{path}.dependencies[{i}]")


@dataclass(frozen=True)
class ResourcesConfig:
    """How to find the model server's process: a pid file, or a process name / command-line
    substring (needs ``shareProcessNamespace: true`` in Kubernetes)."""

    pid_file: str | None = None
    process_name: str | None = None
    proc_root: str = "/proc"
    cgroup_root: str = "/sys/fs/cgroup"
    interval_seconds: float = 5.0

    def validate(self, path: str) -> None:
        _positive(f"{path}.interval_seconds", self.interval_seconds)


DRIFT_METHODS = ("auto", "chi2", "ks", "psi", "jensen_shannon", "hellinger", "wasserstein")


@dataclass(frozen=True)
class DriftConfig:
    """Windowed drift scoring. For test methods (auto, chi2, ks) the threshold is the
    significance level alpha; for distances (psi, jensen_shannon, hellinger, wasserstein) it is
    the score above which drift is reported."""

    window_seconds: float = 3600.0
    sub_windows: int = 12
    interval_seconds: float = 15.0
    min_samples: int = 100
    numeric_method: str = "auto"
    numeric_threshold: float = 0.005
    categorical_method: str = "auto"
    categorical_threshold: float = 0.005

    def validate(self, path: str) -> None:
        _positive(f"{path}.window_seconds", self.window_seconds)
        _positive(f"{path}.interval_seconds", self.interval_seconds)
        _positive(f"{path}.min_samples", self.min_samples)
        if not 1 <= self.sub_windows <= 3600:
            _fail(f"{path}.sub_windows", "must be between 1 and 3600")
        for kind in ("numeric", "categorical"):
            method = getattr(self, f"{kind}_method")
            allowed = DRIFT_METHODS if kind == "numeric" else ("auto", "chi2", "psi", "jensen_shannon",
                                                               "hellinger")
            if method not in allowed:
                _fail(f"{path}.{kind}_method", f"must be one of {', '.join(allowed)}")
            _positive(f"{path}.{kind}_threshold", getattr(self, f"{kind}_threshold"))
            if method in ("auto", "chi2", "ks") and getattr(self, f"{kind}_threshold") >= 1:
                _fail(f"{path}.{kind}_threshold", "is a significance level for test methods: must be < 1")


@dataclass(frozen=True)
class LabelsConfig:
    """Joining delayed ground truth to predictions."""

    # Request header carrying the join key; when a client sends none on an inference call the
    # sidecar generates one and returns it in this header on the response.
    header: str = "X-Request-ID"
    generate_ids: bool = True
    ttl_seconds: float = 86400.0  # how long a prediction waits for its label (and vice versa)
    # Predictions held (~150 bytes each) and, separately, early labels held (~250 bytes each);
    # whatever clients send, at most 450 bytes an entry (long values are held as digests).
    max_entries: int = 20_000
    window_seconds: float = 3600.0  # sliding window of the performance gauges
    sub_windows: int = 12
    max_classes: int = 20
    max_segment_values: int = 10

    def validate(self, path: str) -> None:
        if not re.match(r"^[A-Za-z0-9-]{1,64}$", self.header):
            _fail(f"{path}.header", "must be an HTTP header name")
        for key in ("ttl_seconds", "max_entries", "window_seconds", "max_classes", "max_segment_values"):
            _positive(f"{path}.{key}", getattr(self, key))
        if not 1 <= self.sub_windows <= 3600:
            _fail(f"{path}.sub_windows", "must be between 1 and 3600")


@dataclass(frozen=True)
class LimitsConfig:
    # Distinct model label values; configured models always count, further names seen in
    # routes are admitted until the cap, then fold into "__other__".
    max_models: int = 20
    # Features monitored per model (the rest of a profile is ignored, with a warning) and
    # categories per categorical feature (rarer ones fold into the "__other__" bucket).
    max_features: int = 200
    max_categories: int = 50

    def validate(self, path: str) -> None:
        _positive(f"{path}.max_models", self.max_models)
        _positive(f"{path}.max_features", self.max_features)
        _positive(f"{path}.max_categories", self.max_categories)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    models: tuple[ModelConfig, ...] = ()
    health: HealthConfig = field(default_factory=HealthConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def validate(self, path: str = "") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "models":
                names = [m.name for m in value]
                if len(names) != len(set(names)):
                    _fail("models", "model names must be unique")
                if len(names) > self.limits.max_models:
                    _fail("models", f"{len(names)} models exceed limits.max_models={self.limits.max_models}")
                for i, model in enumerate(value):
                    model.validate(f"models[{i}]")
            else:
                value.validate(f.name)

    @property
    def default_model(self) -> str:
        """The model name for routes that do not name one."""
        return self.models[0].name if self.models else "default"


# --- loading ----------------------------------------------------------------------------------

T = TypeVar("T")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            _fail(path, "must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            _fail(path, f"must be a list, got {type(value).__name__}")
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, path)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(path, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            _fail(path, f"must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # pragma: no cover


def _build(cls: type[T], data: Any, path: str) -> T:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        _fail(path or "<root>", f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            _fail(_join(path, str(key)), f"unknown key (known: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail(key_path, "required key is missing")
    return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``MODELMON_UPSTREAM__URL=...`` -> ``{"upstream": {"url": ...}}``; values parsed as YAML."""
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not valid YAML: {exc}") from None
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another override")
        node[keys[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML 1.2 section 3.2.1.1:
    keys are unique; PyYAML keeps the last one silently, so a setting would be lost unseen)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    """YAML as the configuration files are read: safe, and a key given twice is an error."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load, merge and validate the configuration; raises ConfigError naming the bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            loaded = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = loaded or {}
    if env is not None:
        data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    config = _build(Config, data, "")
    config.validate()
    return config
