"""Command line: ``modelmon serve | check-config | demo``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from . import __version__
from .config import Config, ConfigError, load_config
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
    if args.model:
        out["models"] = [{"name": args.model}]
    return out


def _load(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("MODELMON_CONFIG")
    return load_config(path, env=os.environ, overrides=_overrides(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmon", description=__doc__)
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
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")

    demo = sub.add_parser("demo", help="model server + sidecar + traffic, on embedded defaults")
    demo.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--rps", type=float, default=20.0, help="requests per second (default 20)")
    demo.add_argument("--traffic-port", type=int, default=8000)
    demo.add_argument("--admin-port", type=int, default=9400)
    demo.add_argument("--model-port", type=int, default=8080)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
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
        from .app import serve

        _run(serve(config))
        return 0
    setup_logging("info")
    from .demo.runner import run_demo

    return int(_run(run_demo(args.duration, args.rps, traffic_port=args.traffic_port,
                             admin_port=args.admin_port, model_port=args.model_port)))
