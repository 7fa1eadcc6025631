"""Configuration: one YAML file, every key overridable by environment variable.

Precedence, lowest first: built-in defaults, the YAML file, ``MODELMON_<SECTION>__<KEY>``
environment variables (values parsed as YAML, so ``MODELMON_UPSTREAM__URL=null`` means
"no upstream"), then command-line flags. Every error names the offending key.

The types are msgspec structs (frozen, unknown keys refused): msgspec checks types, ranges,
patterns and enumerations while converting the merged mapping, each struct's ``__post_init__``
the checks across keys, and :func:`config_schema` is the JSON Schema of the same types (the
Helm chart's ``values.schema.json`` embeds it), so ``modelmon check-config`` and the schema
agree on everything a schema can say.
"""

from __future__ import annotations

import functools
import math
import re
import typing
from collections.abc import Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

ENV_PREFIX = "MODELMON_"
# A "$" at the end of a pattern is written "(?!\n)$": Python's "$" also matches before a
# trailing newline, JSON Schema's (ECMA 262) does not.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}(?!\n)$"
MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_HOST_PORT_RE = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}(?!\n)$")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


# --- value types: constraints msgspec checks and the JSON Schema carries ------------------------

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535, description="a TCP port (0: any free port)")]
SubWindows = Annotated[int, msgspec.Meta(ge=1, le=3600)]
ModelName = Annotated[str, msgspec.Meta(pattern=MODEL_NAME_PATTERN, description=(
    "a valid model name (letters, digits and _.:- , at most 63 characters, starting with a "
    "letter or digit)"))]
HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s]+(/.*)?(?!\n)$",
                                      description="an http:// or https:// URL")]
# Every enumeration of the configuration, defined once; the code reads the tuples.
LogLevel = Literal["debug", "info", "warning", "error"]
ProxyEngine = Literal["fast", "aiohttp"]
AuthGroup = Literal["writes", "metrics", "health"]
ProtocolName = Literal["auto", "kserve_v1", "oip_v2", "mlflow", "seldon", "generic"]
Task = Literal["auto", "classification", "regression"]
NumericDriftMethod = Literal["auto", "chi2", "ks", "psi", "jensen_shannon", "hellinger", "wasserstein"]
CategoricalDriftMethod = Literal["auto", "chi2", "psi", "jensen_shannon", "hellinger"]
LOG_LEVELS: tuple[str, ...] = typing.get_args(LogLevel)
PROXY_ENGINES: tuple[str, ...] = typing.get_args(ProxyEngine)
AUTH_GROUPS: tuple[str, ...] = typing.get_args(AuthGroup)
PROTOCOLS: tuple[str, ...] = typing.get_args(ProtocolName)
TASKS: tuple[str, ...] = typing.get_args(Task)
DRIFT_METHODS: tuple[str, ...] = typing.get_args(NumericDriftMethod)
TEST_METHODS = ("auto", "chi2", "ks")  # thresholds of these are significance levels
DISTANCE_METHODS = tuple(m for m in DRIFT_METHODS if m not in TEST_METHODS)


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A configuration section: immutable, and a key it does not know is an error."""


def _problem(key: str, message: str) -> ValueError:
    """A failed check across keys, raised in ``__post_init__``: ``key`` (relative to the struct;
    empty for the struct itself) is prefixed to the message's path by :func:`load_config`."""
    return ValueError(f"{key}: {message}" if key else f": {message}")


class ServerConfig(_Section, frozen=True, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    traffic_port: Port = 8000
    admin_port: Port = 9400
    shutdown_grace_seconds: NonNegative = 20.0
    log_level: LogLevel = "info"
    # Scrapes of /metrics arriving within this many seconds of a rendering get that rendering
    # (concurrent scrapes always share one); 0: every scrape renders afresh.
    metrics_share_seconds: NonNegative = 1.0

    def __post_init__(self) -> None:
        if self.traffic_port == self.admin_port and self.traffic_port != 0:
            raise _problem("admin_port", "must differ from server.traffic_port")


class UpstreamConfig(_Section, frozen=True, forbid_unknown_fields=True):
    # None runs the sidecar in receive-only mode: no proxy listener, no upstream probe.
    url: HttpUrl | None = "http://127.0.0.1:8080"
    connect_timeout_seconds: Positive = 5.0
    # Longest silence between two reads of the upstream's response (not a total deadline, so
    # long server-sent-event streams survive).
    read_timeout_seconds: Positive = 60.0
    max_connections: PositiveInt = 256
    health_path: Annotated[str, msgspec.Meta(pattern="^/", description="a path, starting with /")] = (
        "/v2/health/ready")
    probe_interval_seconds: Positive = 10.0
    probe_timeout_seconds: Positive = 2.0
    preserve_host: bool = True


class RouteConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """An extra route: ``path`` is a regular expression matched against the whole path; a named
    group ``model`` takes the model name from the path, else ``model`` names it."""

    path: str
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    model: ModelName | None = None
    inference: bool = True

    def __post_init__(self) -> None:
        try:
            re.compile(self.path)
        except (re.error, OverflowError, RecursionError) as exc:
            raise _problem("path", f"invalid regular expression: {exc}") from None


class ProxyConfig(_Section, frozen=True, forbid_unknown_fields=True):
    routes: tuple[RouteConfig, ...] = ()
    # "fast": the built-in asyncio/llhttp proxy; "aiohttp": the proxy on aiohttp's server and
    # client (same behaviour, several times the CPU per request).
    engine: ProxyEngine = "fast"
    # Client connections held at once (fast engine; lowered at start to fit the file descriptor
    # limit beside the upstream pool and the admin port). At the limit, a new connection closes
    # the longest-idle or slowest connection that has no request in progress.
    max_connections: PositiveInt = 4096
    # A client has this long to send a complete request head (from connecting, or from the first
    # byte of a later request on a kept-alive connection): 408 and close otherwise (fast engine).
    request_head_timeout_seconds: Positive = 15.0
    # Longest silence between two reads of a request body (nginx's client_body_timeout): 408,
    # and the call is dropped, so that a stalled body cannot hold an upstream connection.
    request_body_timeout_seconds: Positive = 60.0
    # Hold a request body (up to 256 KiB) until it is complete before taking an upstream
    # connection (nginx's proxy_request_buffering), so that clients trickling bodies cannot pin
    # the upstream pool. Off: the body streams to the model as it arrives (for models that
    # answer while a request is still being uploaded). Fast engine.
    request_buffering: bool = True


class AnalysisConfig(_Section, frozen=True, forbid_unknown_fields=True):
    queue_size: PositiveInt = 1024
    # Bodies larger than this are proxied untouched but not analysed (counted as body_too_large).
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    # /healthz fails (503) when records have waited this long without the analysis hand-off
    # draining any: the loop runs but analysis is stuck, which a restart cures.
    stall_seconds: Positive = 60.0


class IngestConfig(_Section, frozen=True, forbid_unknown_fields=True):
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    max_records: PositiveInt = 10_000


class AuthConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """Bearer-token authentication on the admin port (RFC 6750). The token is one line in
    ``token_file`` (a mounted Secret), re-read when the file changes; null = no authentication."""

    token_file: Annotated[str, msgspec.Meta(pattern=r"\S", description="a file path")] | None = None
    # What needs the token: writes (POST /v1/records, /v1/labels), metrics (/metrics and the
    # landing page /), health (/healthz, /readyz).
    protect: tuple[AuthGroup, ...] = ("writes",)

    def __post_init__(self) -> None:
        if "writes" not in self.protect:
            raise _problem("protect", "must include writes (the push API is what the token is for)")
        if self.token_file is None and set(self.protect) != {"writes"}:
            raise _problem("protect", f"protecting {', '.join(self.protect)} needs auth.token_file")


class GenericProtocolConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """JSON paths for the generic adapter: ``$.a.b``, ``$.a[0]``, ``$.rows[*].x``."""

    features: str
    predictions: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        from .protocols.generic import JsonPath

        for key in ("features", "predictions", "request_id"):
            value = getattr(self, key)
            if value is not None:
                try:
                    JsonPath(value)
                except ValueError as exc:
                    raise _problem(key, str(exc)) from None


class ModelConfig(_Section, frozen=True, forbid_unknown_fields=True):
    name: ModelName
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
    protocol: ProtocolName = "auto"
    generic: GenericProtocolConfig | None = None
    # Names of positional inputs (rows as lists, 2-D tensors) when there is no profile.
    feature_names: tuple[str, ...] = ()
    # The output performance is measured on (default: the profile's first output, else the first).
    prediction_output: str | None = None
    task: Task = "auto"
    classes: tuple[str, ...] = ()  # class names, in the order of probability vectors
    positive_class: str | None = None  # for positive-prediction rates per segment
    # input features to break predictions and performance down by
    segments: Annotated[tuple[str, ...], msgspec.Meta(max_length=10)] = ()

    def __post_init__(self) -> None:
        if self.trained_at is not None:
            try:
                self.trained_timestamp()
            except ValueError as exc:
                raise _problem("trained_at", str(exc)) from None
        if self.protocol == "generic" and self.generic is None:
            raise _problem("generic", "required when protocol is generic")

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


class DependencyConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """A dependency to probe: ``url`` (HTTP GET, 2xx/3xx is up) or ``tcp`` (``host:port`` connect)."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}(?!\n)$",
                                      description="a dependency name: letters, digits, _.-")]
    url: HttpUrl | None = None
    tcp: Annotated[str, msgspec.Meta(pattern=_HOST_PORT_RE.pattern, description="host:port")] | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.tcp is None):
            raise _problem("", "exactly one of url or tcp must be set")


class HealthConfig(_Section, frozen=True, forbid_unknown_fields=True):
    dependencies: tuple[DependencyConfig, ...] = ()
    dependency_timeout_seconds: Positive = 2.0
    interval_seconds: Positive = 10.0

    def __post_init__(self) -> None:
        names = [d.name for d in self.dependencies]
        if len(names) != len(set(names)):
            raise _problem("dependencies", "dependency names must be unique")


class ResourcesConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """How to find the model server's process: a pid file, or a process name / command-line
    substring (needs ``shareProcessNamespace: true`` in Kubernetes)."""

    pid_file: str | None = None
    process_name: str | None = None
    proc_root: str = "/proc"
    cgroup_root: str = "/sys/fs/cgroup"
    interval_seconds: Positive = 5.0


class DriftConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """Windowed drift scoring. For test methods (auto, chi2, ks) the threshold is the
    significance level alpha (for auto on numeric features, shared by its location, scale and
    chi-square tests); for distances (psi, jensen_shannon, hellinger, wasserstein) it is the
    score above which drift is reported. effect_threshold (off by default): the auto verdict
    also reports drift when the lower bound of the 95% confidence interval of the normalised
    Wasserstein distance (in reference standard deviations) is above it."""

    window_seconds: Positive = 3600.0
    sub_windows: SubWindows = 12
    interval_seconds: Positive = 15.0
    min_samples: PositiveInt = 100
    numeric_method: NumericDriftMethod = "auto"
    numeric_threshold: Positive = 0.008
    categorical_method: CategoricalDriftMethod = "auto"
    categorical_threshold: Positive = 0.005
    effect_threshold: Positive | None = None

    def __post_init__(self) -> None:
        for kind in ("numeric", "categorical"):
            if getattr(self, f"{kind}_method") in TEST_METHODS and getattr(self, f"{kind}_threshold") >= 1:
                raise _problem(f"{kind}_threshold", "is a significance level for test methods: must be < 1")
        if self.effect_threshold is not None and self.numeric_method != "auto":
            raise _problem("effect_threshold", "is a rule of the auto verdict: set numeric_method: auto, "
                           "or remove effect_threshold")


class LabelsConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """Joining delayed ground truth to predictions."""

    # Request header carrying the join key; when a client sends none on an inference call the
    # sidecar generates one and returns it in this header on the response.
    header: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{1,64}(?!\n)$",
                                        description="an HTTP header name")] = "X-Request-ID"
    generate_ids: bool = True
    ttl_seconds: Positive = 86400.0  # how long a prediction waits for its label (and vice versa)
    # Predictions held and, separately, early labels held; whatever clients send, at most 450
    # bytes an entry (long values are held as digests): README, "Ground truth and performance", has the sizes.
    max_entries: PositiveInt = 20_000
    window_seconds: Positive = 3600.0  # sliding window of the performance gauges
    sub_windows: SubWindows = 12
    max_classes: PositiveInt = 20
    max_segment_values: PositiveInt = 10


class LimitsConfig(_Section, frozen=True, forbid_unknown_fields=True):
    # Distinct model label values; configured models always count, further names seen in
    # routes are admitted until the cap, then fold into "__other__".
    max_models: PositiveInt = 20
    # Features monitored per model (the rest of a profile is ignored, with a warning) and
    # categories per categorical feature (rarer ones fold into the "__other__" bucket).
    max_features: PositiveInt = 200
    max_categories: PositiveInt = 50


class Config(_Section, frozen=True, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    proxy: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    analysis: AnalysisConfig = msgspec.field(default_factory=AnalysisConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    models: tuple[ModelConfig, ...] = ()
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    resources: ResourcesConfig = msgspec.field(default_factory=ResourcesConfig)
    drift: DriftConfig = msgspec.field(default_factory=DriftConfig)
    labels: LabelsConfig = msgspec.field(default_factory=LabelsConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if len(names) != len(set(names)):
            raise _problem("models", "model names must be unique")
        if len(names) > self.limits.max_models:
            raise _problem("models", f"{len(names)} models exceed limits.max_models={self.limits.max_models}")

    @property
    def default_model(self) -> str:
        """The model name for routes that do not name one."""
        return self.models[0].name if self.models else "default"


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the whole configuration, from the types above: unknown
    keys refused, types, ranges, patterns and enumerations. Checks across keys (a port given
    twice, one of url or tcp, ...) are only in :func:`load_config`."""
    schema: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(msgspec.json.schema(Config)))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    _as_the_loader_reads(schema)
    for definition in schema["$defs"].values():
        for name, prop in definition.get("properties", {}).items():
            if set(prop) == {"$ref"}:  # a section: null (left empty) is its defaults
                definition["properties"][name] = {"anyOf": [prop, {"type": "null"}]}
    return schema


def _as_the_loader_reads(node: Any) -> None:
    """What :func:`_normalise` takes beyond the types, said in the schema as well: a plain string
    (no pattern, length or enumeration) also takes a number, and an enumeration of strings also
    takes its values in capitals."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "minLength", "maxLength", "enum"} & node.keys():
            node["type"] = ["string", "number"]
        enum = node.get("enum")
        if isinstance(enum, list) and all(isinstance(v, str) for v in enum):
            node["enum"] = enum + [v.upper() for v in enum if v.upper() != v]
        for value in node.values():
            _as_the_loader_reads(value)
    elif isinstance(node, list):
        for value in node:
            _as_the_loader_reads(value)


# --- loading ----------------------------------------------------------------------------------

_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "array": "a list", "object": "a mapping", "null": "null"}
_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.S)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _steps(path: str) -> list[str | int]:
    """``models[0].name`` -> ["models", 0, "name"]."""
    return [int(part[1:-1]) if part.startswith("[") else part
            for part in re.findall(r"\[\d+\]|[^.\[\]]+", path)]


def _unwrap(tp: Any) -> tuple[Any, msgspec.Meta | None]:
    """A type without Annotated (its Meta kept) and without None in a union."""
    meta = None
    if typing.get_origin(tp) is Annotated:
        tp, *extra = typing.get_args(tp)
        meta = next((m for m in extra if isinstance(m, msgspec.Meta)), None)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
        inner, inner_meta = _unwrap(args[0])
        return inner, meta or inner_meta
    return tp, meta


@functools.cache
def _field_types(struct: type) -> dict[str, Any]:
    """A struct's fields by the key they are written as (``rename``d ones included), with their
    declared types (Annotated constraints kept)."""
    hints = typing.get_type_hints(struct, include_extras=True)
    return {f.encode_name: hints[f.name] for f in msgspec.structs.fields(struct)}


def _type_at(path: str, root: type = Config) -> tuple[Any, msgspec.Meta | None]:
    """The declared type (and constraints) of the key at ``path``."""
    tp: Any = root
    meta = None
    for step in _steps(path):
        tp, meta = _unwrap(tp)
        tp = typing.get_args(tp)[0] if isinstance(step, int) else _field_types(tp)[step]
    return _unwrap(tp) if path else (tp, meta)


def _value_at(data: Any, path: str) -> Any:
    for step in _steps(path):
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _error(exc: msgspec.ValidationError, data: Any, root: type = Config) -> ConfigError:
    """msgspec's message, rewritten to name the key the way the rest of modelmon does."""
    keys = re.fullmatch(r"Expected `str` - at `key` in `\$(?P<path>[^`]*)`", str(exc))
    if keys:
        return ConfigError(f"{keys['path'].lstrip('.') or '<root>'}: keys must be strings")
    found = _AT.match(str(exc))
    message, path = (found["message"], found["path"].lstrip(".")) if found else (str(exc), "")
    tp, meta = _type_at(path, root)
    value = _value_at(data, path)
    about = f" ({meta.description})" if meta is not None and meta.description else ""
    if m := re.fullmatch(r"Object contains unknown field `(.+)`", message):
        known = ", ".join(sorted(f.encode_name for f in msgspec.structs.fields(tp)))
        return ConfigError(f"{_join(path, m[1])}: unknown key (known: {known})")
    if m := re.fullmatch(r"Object missing required field `(.+)`", message):
        return ConfigError(f"{_join(path, m[1])}: required key is missing")
    if m := re.fullmatch(r"Expected `(.+)`, got `(\w+)`", message):
        wanted = " or ".join(_EXPECTED.get(t, t) for t in m[1].split(" | "))
        return ConfigError(f"{path or '<root>'}: must be {wanted}, got {value!r}")
    if m := re.fullmatch(r"Expected `\w+` (>=|<=|>|<) (\S+)", message):
        return ConfigError(f"{path}: must be {m[1]} {m[2]}{about}, got {value!r}")
    if m := re.fullmatch(r"Expected `array` of length <= (\d+)", message):
        return ConfigError(f"{path}: at most {m[1]} items, got {len(value) if value else 0}")
    if re.fullmatch(r"Expected `str` of length [<>]= \d+", message):
        return ConfigError(f"{path}: {message.replace('Expected `str`', 'must be a string')}")
    if re.fullmatch(r"Expected `str` matching regex .+", message):
        wanted = meta.description if meta is not None and meta.description else f"matching {message[25:]}"
        return ConfigError(f"{path}: must be {wanted}, got {value!r}")
    if message.startswith("Invalid enum value"):
        return ConfigError(f"{path}: must be one of {', '.join(typing.get_args(tp))}, got {value!r}")
    if m := re.fullmatch(r"(\w*): (.*)", message, re.S):  # raised by a __post_init__
        return ConfigError(f"{_join(path, m[1]) if m[1] else path}: {m[2]}")
    return ConfigError(f"{path or '<root>'}: {message}")


def _normalise(tp: Any, value: Any, path: str = "") -> Any:
    """What YAML (or Helm) gives, turned into what the types take, as a user means it:

    - a number where a plain string is expected is taken as its text (``version: 2``,
      ``classes: [0, 1]``); YAML reads ``1.10`` as 1.1 and ``010`` as 8, so quote such values;
    - a whole-number float where an integer is expected is that integer (``9400.0``);
    - a date or time where ``trained_at`` takes ISO 8601 text is that text;
    - a section left empty (YAML null) is a section of defaults;
    - an enumeration's value may be written in capitals (``INFO``);
    - NaN and infinity are refused (no setting means them).
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path or '<root>'}: must be a finite number, got {value!r}")
    base, meta = _unwrap(tp)
    args = typing.get_args(base)
    if base is str and meta is None:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if str in args and isinstance(value, datetime | date):
        return value.isoformat()
    if typing.get_origin(base) is Literal and isinstance(value, str) and value not in args \
            and value == value.upper() and value.lower() in args:
        return value.lower()
    if typing.get_origin(base) is tuple and isinstance(value, list):
        return [_normalise(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(base, type) and issubclass(base, msgspec.Struct):
        if value is None and type(None) not in typing.get_args(tp):
            return {}
        if isinstance(value, Mapping):
            hints = _field_types(base)
            return {k: _normalise(hints[k], v, _join(path, k)) if isinstance(k, str) and k in hints
                    else v for k, v in value.items()}
    return value


S = typing.TypeVar("S", bound=msgspec.Struct)


def build(data: Mapping[str, Any], root: type[S] = Config) -> S:  # type: ignore[assignment]
    """A configuration (the sidecar's by default, or another struct such as the mixin's) from a
    mapping (the merged file, environment and flags); ConfigError naming the bad key."""
    try:
        return msgspec.convert(_normalise(root, data), root)
    except msgspec.ValidationError as exc:
        raise _error(exc, data, root) from None
    except RecursionError:
        raise ConfigError("<root>: nested too deeply") from None


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``MODELMON_UPSTREAM__URL=...`` -> ``{"upstream": {"url": ...}}``; values parsed as YAML."""
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        try:
            value = load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not valid YAML: {exc}") from None
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another override")
        node[keys[-1]] = value
    return tree


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base``, mapping by mapping (a list or value in ``over`` replaces)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML 1.2 section 3.2.1.1:
    keys are unique; PyYAML keeps the last one silently, so a setting would be lost unseen), and
    reading YAML 1.2's floats with an exponent but no point or no exponent sign (``1e-05``,
    ``1.5e3``) as numbers: PyYAML implements YAML 1.1, where they are strings, and Go's YAML
    writers (Helm, kubectl, kustomize) write small and large floats that way."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # merge keys (<<) first, as the safe loader does
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a scalar, got {key!r}", key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
# YAML 1.2's core schema float (section 10.3.2), tried after YAML 1.1's resolvers (integers,
# 1.1 floats, timestamps match first), so it adds only what 1.1 reads as a string.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"), list("-+.0123456789"))


def load_yaml(text: str) -> Any:
    """YAML as the configuration files are read: safe, and a key given twice is an error."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A configuration file's mapping (the sidecar's and the mixin's): ConfigError with a
    one-line reason for whatever it holds instead (unreadable, not UTF-8, not YAML, nested too
    deeply, a key given twice, not a mapping)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        loaded = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return loaded or {}


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load, merge and validate the configuration; raises ConfigError naming the bad key."""
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    if env is not None:
        data = merge(data, _env_overrides(env))
    if overrides:
        data = merge(data, overrides)
    return build(data)
