"""Configuration loading, precedence, validation messages and `modelmon check-config`."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from modelmon.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "modelmon.yaml"
    path.write_text(text)
    return path


def test_defaults_just_work() -> None:
    config = load_config()
    assert config.upstream.url == "http://127.0.0.1:8080"
    assert config.upstream.health_path == "/v2/health/ready"
    assert (config.server.traffic_port, config.server.admin_port) == (8000, 9400)
    assert config.default_model == "default"


def test_file_env_and_overrides_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, """
server: {traffic_port: 7000, admin_port: 7001}
upstream: {url: "http://model:9000", probe_interval_seconds: 3}
models:
  - {name: churn, version: "2", trained_at: "2026-01-02T03:04:05Z"}
""")
    env = {"MODELMON_SERVER__ADMIN_PORT": "7100", "MODELMON_UPSTREAM__PROBE_INTERVAL_SECONDS": "4.5",
           "UNRELATED": "x"}
    config = load_config(path, env=env, overrides={"server": {"traffic_port": 7200}})
    assert config.server.traffic_port == 7200  # CLI beats all
    assert config.server.admin_port == 7100  # env beats file
    assert config.upstream.url == "http://model:9000"  # file beats default
    assert config.upstream.probe_interval_seconds == 4.5
    assert config.models[0].trained_timestamp() == 1767323045.0
    assert config.default_model == "churn"


def test_env_can_set_lists_and_null(tmp_path: Path) -> None:
    env = {"MODELMON_MODELS": '[{"name": "a"}, {"name": "b"}]', "MODELMON_UPSTREAM__URL": "null"}
    config = load_config(env=env)
    assert [m.name for m in config.models] == ["a", "b"]
    assert config.upstream.url is None


ERROR_CASES = [
    ("upstream: {urll: x}", "upstream.urll: unknown key"),
    ("upstreams: {}", "upstreams: unknown key"),
    ("server: {traffic_port: '80'}", "server.traffic_port: must be an integer"),
    ("server: {traffic_port: 70000}", "server.traffic_port: must be <= 65535 (a TCP port"),
    ("server: {admin_port: 8000}", "server.admin_port: must differ"),
    ("upstream: {url: 'ftp://x'}", "upstream.url: must be an http"),
    ("upstream: {read_timeout_seconds: 0}", "upstream.read_timeout_seconds: must be > 0"),
    ("upstream: {preserve_host: 'yes'}", "upstream.preserve_host: must be true or false"),
    ("models: [{version: '1'}]", "models[0].name: required key is missing"),
    ("models: [{name: 'has space'}]", "models[0].name: must be a valid model name"),
    ("models: [{name: a}, {name: a}]", "models: model names must be unique"),
    ("models: [{name: a, trained_at: 'last tuesday'}]", "models[0].trained_at"),
    ("health: {dependencies: [{name: db}]}", "health.dependencies[0]: exactly one of url or tcp"),
    ("health: {dependencies: [{name: db, tcp: 'nohost'}]}", "health.dependencies[0].tcp"),
    ("proxy: {routes: [{path: '(', name: x}]}", "proxy.routes[0].path: invalid regular expression"),
    ("limits: {max_models: 1}\nmodels: [{name: a}, {name: b}]", "exceed limits.max_models"),
    ("server: {log_level: loud}", "server.log_level"),
    ("- a list", "top level must be a mapping"),
    ("server: [1]", "server: must be a mapping"),
    ("auth: {token_file: ''}", "auth.token_file: must be a file path"),
    ("auth: {token_file: /t, protect: [writes, reads]}", "auth.protect[1]: must be one of writes, metrics, health"),
    ("auth: {token_file: /t, protect: [metrics]}", "auth.protect: must include writes"),
    ("auth: {protect: [writes, metrics]}", "auth.protect: protecting writes, metrics needs auth.token_file"),
    ("auth: {protect: writes}", "auth.protect: must be a list"),
    ("drift: {numeric_method: ks, effect_threshold: 0.25}", "drift.effect_threshold: is a rule of the auto verdict"),
]


@pytest.mark.parametrize(("text", "key"), ERROR_CASES)
def test_errors_name_the_bad_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert key in str(info.value)


def test_bad_env_override_is_named() -> None:
    with pytest.raises(ConfigError, match=r"server\.admin_port: must be an integer"):
        load_config(env={"MODELMON_SERVER__ADMIN_PORT": "nine"})


def test_auth_is_off_by_default_and_set_by_env_or_flag(tmp_path: Path) -> None:
    from modelmon.cli import _overrides, build_parser

    assert load_config().auth.token_file is None
    env = {"MODELMON_AUTH__TOKEN_FILE": "/var/run/secrets/modelmon/token",
           "MODELMON_AUTH__PROTECT": "[writes, metrics]"}
    config = load_config(env=env)
    assert (config.auth.token_file, config.auth.protect) == ("/var/run/secrets/modelmon/token",
                                                             ("writes", "metrics"))
    args = build_parser().parse_args(["serve", "--auth-token-file", "/etc/token"])
    assert load_config(env=env, overrides=_overrides(args)).auth.token_file == "/etc/token"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelmon", *args], capture_output=True, text=True,
                          timeout=60)


def test_check_config_command(tmp_path: Path) -> None:
    good = write(tmp_path, "upstream: {url: 'http://127.0.0.1:9000'}\n")
    result = run_cli("check-config", str(good))
    assert result.returncode == 0 and "ok" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: {timeout: 3}\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "upstream.timeout: unknown key" in result.stderr


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "examples" / "modelmon.yaml"
    config = load_config(example)
    assert config.models and config.health.dependencies


def _key_paths(cls: type, prefix: str = "") -> set[str]:
    import typing

    import msgspec

    paths = set()
    for f in msgspec.structs.fields(cls):
        path = f"{prefix}{f.name}"
        tp = f.type
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        if typing.get_origin(tp) is tuple:
            (tp, _) = typing.get_args(tp)
            path += "[]"
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp)  # X | None
        paths.add(path)
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            paths |= _key_paths(tp, path + ".")
    return paths


def _yaml_paths(node: object, prefix: str = "") -> set[str]:
    paths = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, list):
                path += "[]"
                paths.add(path)
                for item in value:
                    paths |= _yaml_paths(item, path + ".")
            else:
                paths.add(path)
                paths |= _yaml_paths(value, path + ".")
    return paths


def test_example_config_documents_every_key() -> None:
    """examples/modelmon.yaml is the configuration reference: it must name every key."""
    import yaml
    from modelmon.config import Config

    example = Path(__file__).parent.parent / "examples" / "modelmon.yaml"
    text = example.read_text()
    documented = _yaml_paths(yaml.safe_load(text))
    # keys shown commented out count as documented
    documented |= {p for p in _key_paths(Config) if f"# {p.rsplit('.', 1)[-1]}:" in text}
    missing = _key_paths(Config) - documented
    assert not missing, f"add to examples/modelmon.yaml: {sorted(missing)}"


def test_a_key_given_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently: a setting would be lost unseen."""
    path = tmp_path / "modelmon.yaml"
    path.write_text("server:\n  admin_port: 9400\n  admin_port: 9500\n")
    with pytest.raises(ConfigError, match="key 'admin_port' given twice"):
        load_config(path)


def test_the_example_config_has_each_key_once() -> None:
    from modelmon.config import load_yaml

    example = Path(__file__).parent.parent / "examples" / "modelmon.yaml"
    load_yaml(example.read_text())  # raises on a key given twice


# What a JSON Schema cannot say: checks across keys, and those of a __post_init__.
ACROSS_KEYS = {
    "server: {admin_port: 8000}", "models: [{name: a}, {name: a}]",
    "models: [{name: a, trained_at: 'last tuesday'}]", "health: {dependencies: [{name: db}]}",
    "proxy: {routes: [{path: '(', name: x}]}", "limits: {max_models: 1}\nmodels: [{name: a}, {name: b}]",
    "auth: {token_file: /t, protect: [metrics]}", "auth: {protect: [writes, metrics]}",
    "drift: {numeric_method: ks, effect_threshold: 0.25}",
}
SCHEMA_CASES = [
    "server: {traffic_port: 7000}",
    "models: [{name: churn, version: 2, classes: [0, 1], positive_class: 1, segments: [region]}]",
    "models: [{name: churn, trained_at: 1767323045}]",
    "models: [{name: churn, protocol: generic, generic: {features: $.x}}]",
    "drift: {numeric_method: wasserstein, numeric_threshold: 0.2}",
    "models: [{name: churn, version: true}]",
    "models: [{name: 12}]",
    "models: [{name: churn, segments: [a, b, c, d, e, f, g, h, i, j, k]}]",
    "drift: {categorical_method: wasserstein}",
    "labels: {sub_windows: 0}",
    "labels: {header: 'X Bad'}",
    "upstream: {url: null}",
    "upstream: {health_path: healthz}",
    "auth: {token_file: /t, protect: [writes, metrics, health]}",
    "proxy: {engine: nginx}",
    "resources: {interval_seconds: -1}",
    "server:\n  # every key commented out: the section is null",
    "server: {log_level: INFO}",
    "server: {log_level: Info}",
    "server: {admin_port: 9401.0}",
    "analysis: {queue_size: 1000.5}",
    'models: [{name: "m\\n"}]',
    'labels: {header: "X-Req\\n"}',
    "models: [{name: a, trained_at: 2024-01-01}]",
    "models: [{name: a, trained_at: 2024-01-01T10:00:00Z}]",
]


@pytest.mark.parametrize("text", SCHEMA_CASES + [
    text for text, _ in ERROR_CASES if text not in ACROSS_KEYS and not text.startswith("- ")])
def test_the_json_schema_and_check_config_agree(tmp_path: Path, text: str) -> None:
    """`modelmon check-config` and a validator of config_schema() (the Helm chart's
    values.schema.json) accept and refuse the same files."""
    import jsonschema
    import yaml
    from modelmon.config import config_schema

    validator = jsonschema.Draft202012Validator(config_schema())
    # as a JSON Schema validator sees YAML (Helm's does): dates and times as their text
    document = json.loads(json.dumps(yaml.safe_load(text), default=lambda v: v.isoformat()))
    by_schema = not list(validator.iter_errors(document))
    try:
        load_config(write(tmp_path, text))
        by_loader = True
    except ConfigError:
        by_loader = False
    assert by_schema == by_loader, text


def test_the_json_schema_is_valid_and_takes_the_example() -> None:
    import jsonschema
    import yaml
    from modelmon.config import config_schema

    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    example = Path(__file__).parent.parent / "examples" / "modelmon.yaml"
    jsonschema.validate(yaml.safe_load(example.read_text()), schema)
    assert schema["$defs"]["Config"]["additionalProperties"] is False
    result = run_cli("check-config", "--schema")
    assert result.returncode == 0 and json.loads(result.stdout) == schema



@pytest.mark.parametrize("text", [
    "drift: {window_seconds: .nan}", "server: {shutdown_grace_seconds: .inf}",
])
def test_non_finite_numbers_are_refused_by_name(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"^(drift\.window_seconds|server\.shutdown_grace_seconds): "
                                          r"must be a finite number"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(("content", "message"), [
    (b"proxy: {routes: [{path: 'a{4294967296}', name: x}]}", "proxy.routes[0].path: invalid regular"),
    (b"proxy: {routes: [{path: '" + b"(" * 2000 + b")" * 2000 + b"', name: x}]}", "proxy.routes[0].path"),
    (b"a: " + b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    (b"? [a, b]\n: 1\n", "a key must be a scalar"),
    (b"server: {host: \xff\xfe}\n", "not UTF-8"),
    (b"base: &b {admin_port: 9500}\nserver:\n  <<: *b\n", "base: unknown key"),
    (b"server: {1: 2}\n", "server: keys must be strings"),
])
def test_check_config_answers_every_file_with_a_message(tmp_path: Path, content: bytes, message: str) -> None:
    """No input makes check-config crash: a one-line reason, exit 1."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr


def test_a_merge_key_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server:\n  <<: {admin_port: 9500}\n  traffic_port: 8100\n"))
    assert (config.server.admin_port, config.server.traffic_port) == (9500, 8100)


def test_serve_model_flag_names_the_default_model_and_keeps_the_configured_ones(tmp_path: Path) -> None:
    """`modelmon serve --model NAME` names the model of routes that do not name one; it does not
    replace the configured models (and with them their profiles and settings)."""
    from modelmon.cli import _load, build_parser

    path = tmp_path / "modelmon.yaml"
    path.write_text("models:\n  - name: churn\n    version: '3'\n    task: classification\n"
                    "  - name: price\n    task: regression\n")
    for flag, names in (("price", ["price", "churn"]), ("churn", ["churn", "price"]),
                        ("fraud", ["fraud", "churn", "price"])):
        config = _load(build_parser().parse_args(["serve", "--config", str(path), "--model", flag]))
        assert [m.name for m in config.models] == names
        assert config.default_model == flag
        by_name = {m.name: m for m in config.models}
        assert (by_name["churn"].version, by_name["churn"].task) == ("3", "classification")
        assert by_name["price"].task == "regression"
    config = _load(build_parser().parse_args(["serve", "--model", "solo"]))
    assert [m.name for m in config.models] == ["solo"]


def test_numbers_as_go_and_yaml_1_2_write_them_are_numbers(tmp_path: Path) -> None:
    """Helm and kubectl write small and large floats as `1e-05` and YAML 1.2 allows `1.5e3`;
    PyYAML (YAML 1.1) reads both as strings, and the sidecar then refused its own chart's
    configuration. Quoted, they stay strings (and are refused where a number belongs)."""
    path = tmp_path / "modelmon.yaml"
    path.write_text("upstream:\n  url: http://127.0.0.1:8080\n  probe_interval_seconds: 1.5e1\n"
                    "  probe_timeout_seconds: 5e-1\nserver:\n  shutdown_grace_seconds: 2E+1\n")
    config = load_config(path, env={"MODELMON_ANALYSIS__STALL_SECONDS": "1.2e2"})
    assert (config.upstream.probe_interval_seconds, config.upstream.probe_timeout_seconds,
            config.server.shutdown_grace_seconds, config.analysis.stall_seconds) == (15.0, 0.5, 20.0, 120.0)
    path.write_text("upstream:\n  probe_interval_seconds: '1e1'\n")
    with pytest.raises(ConfigError, match=r"upstream\.probe_interval_seconds: must be a number"):
        load_config(path)
    # what YAML 1.1 already read keeps its meaning: integers, dates, strings that only look alike
    from modelmon.config import load_yaml

    assert load_yaml("a: 10\nb: 0x10\nc: 2024-01-01\nd: 1e5e\ne: 1.5\nf: '2'") == {
        "a": 10, "b": 16, "c": datetime.date(2024, 1, 1), "d": "1e5e", "e": 1.5, "f": "2"}
