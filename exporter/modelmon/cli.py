"""Command line: ``modelmon serve | check-config | profile | mixin | demo``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from . import __version__
from .config import LOG_LEVELS, Config, ConfigError, DriftConfig, config_schema, load_config
from .logs import setup_logging


def _run(main: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        return asyncio.run(main)
    return uvloop.run(main)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    for key in ("host", "traffic_port", "admin_port", "log_level"):
        value = getattr(args, key, None)
        if value is not None:
            server[key] = value
    out: dict[str, Any] = {"server": server} if server else {}
    if args.no_upstream:
        out["upstream"] = {"url": None}
    elif args.upstream:
        out["upstream"] = {"url": args.upstream}
    if args.auth_token_file:
        out["auth"] = {"token_file": args.auth_token_file}
    return out


def _load(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("MODELMON_CONFIG")
    overrides = _overrides(args)
    config = load_config(path, env=os.environ, overrides=overrides)
    if args.model and config.default_model != args.model:
        overrides["models"] = _with_default_model(config, args.model)
        config = load_config(path, env=os.environ, overrides=overrides)
    return config


def _with_default_model(config: Config, name: str) -> list[dict[str, Any]]:
    """``--model NAME``: the models of the configuration with NAME first (the model of routes
    that do not name one), its settings kept; NAME is added, with none, if it is not there."""
    models = [msgspec.to_builtins(m) for m in config.models]
    named = [m for m in models if m["name"] == name] or [{"name": name}]
    return named + [m for m in models if m["name"] != name]


def _profile(args: argparse.Namespace) -> int:
    from .reference.builder import build_profile
    from .reference.datasource import DataSourceError
    from .reference.profile import reference_note

    progress = _progress_bar() if sys.stderr.isatty() else None
    try:
        profile = build_profile(
            args.data, model=args.model, model_version=args.model_version, features=args.features,
            categorical=args.categorical, target=args.target, prediction=args.prediction,
            bins=args.bins, top_k=args.top_k, names=args.names, progress=progress,
        )
    except (DataSourceError, OSError) as exc:
        print(f"\nmodelmon profile: {exc}", file=sys.stderr)
        return 1
    profile.save(args.out)
    kinds = {"numeric": 0, "categorical": 0}
    for f in profile.features:
        kinds[f.kind] += 1
    print(f"{args.out}: {profile.rows} rows, {kinds['numeric']} numeric and "
          f"{kinds['categorical']} categorical features, {profile.hash}", file=sys.stderr)
    min_samples = DriftConfig().min_samples  # the default; the sidecar logs the same per its config
    for f in profile.features:
        note = reference_note(f, min_samples)
        if note is not None and f.role != "target":
            print(f"  warning: feature {f.name}: {note}", file=sys.stderr)
    return 0


def _mixin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .mixin import RUNBOOK_FILE, Mixin, example_yaml, load_mixin_config

    try:
        config = load_mixin_config(args.config)
    except ConfigError as exc:
        print(f"invalid mixin config: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in Mixin(config).files().items():
        path = Path(args.runbook) if name == RUNBOOK_FILE and args.runbook else out / name
        path.write_text(text, encoding="utf-8")
        written.append(str(path))
    if args.dashboards:
        try:
            from .mixin.dashboards import dashboards
        except ImportError:
            print("modelmon mixin --dashboards needs Grafana's SDK: pip install 'modelmon[dashboards]'",
                  file=sys.stderr)
            return 1
        Path(args.dashboards).mkdir(parents=True, exist_ok=True)
        for name, text in dashboards(config).items():
            (Path(args.dashboards) / name).write_text(text, encoding="utf-8")
            written.append(str(Path(args.dashboards) / name))
    if args.example_config:
        Path(args.example_config).write_text(example_yaml(config), encoding="utf-8")
        written.append(args.example_config)
    print("wrote " + ", ".join(written), file=sys.stderr)
    return 0


def _progress_bar() -> Callable[[int, float | None], None]:
    def show(rows: int, fraction: float | None) -> None:
        bar = "" if fraction is None else f" [{'#' * int(fraction * 30):<30}] {fraction:4.0%}"
        print(f"\rprofiling: {rows:,} rows{bar}", end="", file=sys.stderr, flush=True)

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelmon", description="modelmon: a Prometheus monitoring sidecar for machine-learning models")
    parser.add_argument("--version", action="version", version=f"modelmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", "-c", help="YAML config file (or $MODELMON_CONFIG)")
    serve.add_argument("--upstream", help="model server URL (default http://127.0.0.1:8080)")
    serve.add_argument("--no-upstream", action="store_true",
                       help="receive-only mode: no proxy, records are pushed")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--traffic-port", type=int, help="proxy port (default 8000)")
    serve.add_argument("--admin-port", type=int, help="metrics/health/push port (default 9400)")
    serve.add_argument("--model", help="model name for routes that do not name one")
    serve.add_argument("--log-level", choices=LOG_LEVELS)
    serve.add_argument("--auth-token-file", metavar="FILE",
                       help="require Authorization: Bearer <the token in FILE> on the push API")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", nargs="?", help="the config file (YAML)")
    check.add_argument("--schema", action="store_true",
                       help="print the JSON Schema of the whole configuration and exit")

    profile = sub.add_parser("profile", help="build a reference profile from training data")
    profile.add_argument("data", help="CSV, Parquet (needs pyarrow) or NumPy .npy/.npz file")
    profile.add_argument("--out", "-o", required=True, help="where to write the profile JSON")
    profile.add_argument("--model", default="default", help="model name recorded in the profile")
    profile.add_argument("--model-version", default="", help="model version recorded in the profile")
    profile.add_argument("--features", nargs="+",
                         help="input columns (default: all but target/prediction)")
    profile.add_argument("--categorical", nargs="+", default=[], help="columns to treat as categorical")
    profile.add_argument("--target", help="ground-truth label column")
    profile.add_argument("--prediction", help="model output column (profiled as an output feature)")
    profile.add_argument("--bins", type=int, default=20, help="quantile bins per numeric feature")
    profile.add_argument("--top-k", type=int, default=20, help="categories kept per categorical feature")
    profile.add_argument("--names", nargs="+", help="column names for a 2-D .npy file")

    mixin = sub.add_parser("mixin", help="write the recording and alerting rules, alertmanager.yml "
                                         "and the runbook (the modelmon mixin)")
    mixin.add_argument("--config", "-c", help="mixin configuration YAML (default: the built-in defaults; "
                                              "see alertmanager/mixin.example.yaml)")
    mixin.add_argument("--out", "-o", required=True, help="directory to write the files into")
    mixin.add_argument("--runbook", help="where to write the runbook (default: OUT/runbook.md)")
    mixin.add_argument("--dashboards", metavar="DIR",
                       help="also write the Grafana dashboards (JSON) into DIR (needs the "
                            "'dashboards' extra: grafana-foundation-sdk)")
    mixin.add_argument("--example-config", metavar="FILE",
                       help="also write the configuration, every key with its value and meaning")

    demo = sub.add_parser("demo", help="model server + sidecar + traffic, on embedded defaults")
    demo.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--rps", type=float, default=20.0, help="requests per second (default 20)")
    demo.add_argument("--traffic-port", type=int, default=8000)
    demo.add_argument("--admin-port", type=int, default=9400)
    demo.add_argument("--model-port", type=int, default=8080)
    demo.add_argument("--drift-after", type=float, default=60.0,
                      help="seconds of normal traffic before inputs drift (default 60; <0: never)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        if args.schema:
            if args.file is not None:
                print("modelmon check-config: --schema takes no FILE", file=sys.stderr)
                return 2
            print(json.dumps(config_schema(), indent=2, sort_keys=True))
            return 0
        if args.file is None:
            print("modelmon check-config: give a FILE, or --schema", file=sys.stderr)
            return 2
        try:
            load_config(args.file, env=os.environ)
        except ConfigError as exc:
            print(f"invalid config: {exc}", file=sys.stderr)
            return 1
        print(f"{args.file}: ok")
        return 0
    if args.command == "serve":
        try:
            config = _load(args)
        except ConfigError as exc:
            print(f"invalid config: {exc}", file=sys.stderr)
            return 2
        setup_logging(config.server.log_level)
        from .sidecar.listeners import serve

        # Everything imported so far lives as long as the process: keep the collector from
        # rescanning it, which shortens the pauses it causes on the request path.
        gc.freeze()
        from .reference.profile import ProfileError

        try:
            _run(serve(config))
        except ConfigError as exc:  # found at start-up, e.g. an unreadable auth.token_file
            print(f"invalid config: {exc}", file=sys.stderr)
            return 2
        except ProfileError as exc:  # a models[].profile that does not load
            print(f"modelmon serve: cannot load a reference profile: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a port in use, an address that does not resolve, ...
            import errno
            import socket

            where = ""
            if isinstance(exc, socket.gaierror) or exc.errno in (
                    errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                server = config.server
                where = (f" (server.host {server.host}, server.traffic_port {server.traffic_port}, "
                         f"server.admin_port {server.admin_port})")
            print(f"modelmon serve: cannot start: {exc.strerror or exc}{where}", file=sys.stderr)
            return 2
        return 0
    if args.command == "profile":
        return _profile(args)
    if args.command == "mixin":
        return _mixin(args)
    setup_logging("info")
    from .demo.runner import run_demo

    drift_after = None if args.drift_after < 0 else args.drift_after
    return int(_run(run_demo(args.duration, args.rps, traffic_port=args.traffic_port,
                             admin_port=args.admin_port, model_port=args.model_port,
                             drift_after=drift_after)))
