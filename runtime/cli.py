"""The `autan` command: up, serve, gateway, deploy, invoke, ls, status, dlq, trigger, worker.

The only module that reads the environment (through `Settings.from_env`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import anyio
import msgspec

from broker import BrokerError
from runtime.errors import AutanError, RemoteError
from runtime.logs import configure_logging
from runtime.settings import Settings
from runtime.worker import Boot
from storage import StorageError

if TYPE_CHECKING:
    from runtime.commands import Http

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autan", description=__doc__)
    parser.add_argument("--nats-url", help="NATS server (env AUTAN_NATS_URL)")
    parser.add_argument("--storage-url", help="file:///path or s3://bucket?endpoint=host:port")
    parser.add_argument("--data-dir", type=Path, help="local state (env AUTAN_DATA_DIR)")
    parser.add_argument("--log-format", choices=["console", "json"], help="env AUTAN_LOG_FORMAT")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole stack on this machine until Ctrl-C")
    up.add_argument("--nats-port", type=int, default=4222)
    up.add_argument("--functions", default="functions", help="what to deploy (default: bundled)")
    up.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics (0: off)")
    up.add_argument("--http-port", type=int, default=8000, help="the HTTP bridge (0: off)")

    serve = commands.add_parser(
        "serve", help="deploy and run one worker per function against an existing NATS and storage"
    )
    serve.add_argument("--functions", default="functions", help="what to deploy (default: bundled)")
    serve.add_argument(
        "--metrics-port", type=int, default=9464, help="Prometheus /metrics (0: off)"
    )
    serve.add_argument("--http-port", type=int, default=8000, help="the HTTP bridge (0: off)")
    serve.add_argument("--http-host", default=None, help="bind address (env AUTAN_HTTP_HOST)")

    gateway = commands.add_parser("gateway", help="the HTTP bridge alone")
    gateway.add_argument("--http-port", type=int, default=None, help="env AUTAN_HTTP_PORT, 8000")
    gateway.add_argument("--http-host", default=None, help="env AUTAN_HTTP_HOST, 127.0.0.1")

    deploy = commands.add_parser("deploy", help="package and register the functions of PATH")
    deploy.add_argument("path", help="a package directory, a .py file or a module name")

    invoke = commands.add_parser("invoke", help="call APP.FN with one JSON argument")
    invoke.add_argument("function", metavar="APP.FN")
    invoke.add_argument("input", nargs="?", help="the argument, as JSON")
    invoke.add_argument("--file", type=Path, help="pass this file's bytes as the argument")
    invoke.add_argument("--kwargs", help="keyword arguments as a JSON object")

    trigger = commands.add_parser("trigger", help="message triggers (functions with on=)")
    trigger_commands = trigger.add_subparsers(dest="trigger_command", required=True)
    replay = trigger_commands.add_parser("replay", help="deliver a trigger's past events again")
    replay.add_argument("function", metavar="APP.FN")
    since = replay.add_mutually_exclusive_group(required=True)
    since.add_argument("--since", type=_duration_s, help="how far back: 30s, 10m, 2h, 1d")
    since.add_argument("--from-seq", type=int, help="the first stream sequence to deliver")

    dlq = commands.add_parser("dlq", help="dead letters: calls that failed for good")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_ls = dlq_commands.add_parser("ls", help="list dead letters")
    dlq_ls.add_argument("function", nargs="?", metavar="APP.FN")
    dlq_show = dlq_commands.add_parser("show", help="one dead letter with its error")
    dlq_show.add_argument("ref", metavar="SEQ|CALL_ID")
    dlq_redrive = dlq_commands.add_parser("redrive", help="run dead calls again (new call ids)")
    dlq_redrive.add_argument("ref", metavar="SEQ|CALL_ID|APP.FN|all")
    dlq_purge = dlq_commands.add_parser("purge", help="delete dead letters")
    dlq_purge.add_argument("function", nargs="?", metavar="APP.FN")

    commands.add_parser("ls", help="list deployed functions, versions and workers")
    commands.add_parser("status", help="backlog, workers and the last scaling decision")

    worker = commands.add_parser("worker", help="serve one function (started by 'autan up')")
    worker.add_argument("function", metavar="APP.FN")
    worker.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    worker.add_argument("--device", type=int, default=0, help="GPU device id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    started_unix_s = time.time()  # after the imports: a forked worker has them already
    args = _parser().parse_args(argv)
    args.started_unix_s = started_unix_s
    try:
        settings = Settings.from_env(
            nats_url=args.nats_url,
            storage_url=args.storage_url,
            data_dir=args.data_dir,
            log_format=args.log_format,
        )
    except ValueError as exc:
        print(f"autan: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        return int(anyio.run(_dispatch, args, settings))
    except _EXPECTED as exc:
        return _report(exc)
    except BaseExceptionGroup as group:  # from a task group: report the first known error
        expected, _ = group.split(_EXPECTED)
        if expected is None:
            raise
        return _report(_first(expected))
    except KeyboardInterrupt:
        return 130


_EXPECTED = (AutanError, BrokerError, StorageError, ValueError)


def _report(exc: BaseException) -> int:
    print(str(exc) if isinstance(exc, RemoteError) else f"autan: {exc}", file=sys.stderr)
    return 1


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from runtime import commands

    match args.command:
        case "up":
            return await commands.up(
                settings,
                nats_port=args.nats_port,
                target=args.functions,
                metrics_port=args.metrics_port,
                http=_http(args, host="127.0.0.1"),
            )
        case "serve":
            return await commands.serve(
                settings, target=args.functions, metrics_port=args.metrics_port, http=_http(args)
            )
        case "gateway":
            return await commands.gateway(settings, _http(args))
        case "invoke":
            value = _invoke_input(args)
            kwargs = json.loads(args.kwargs) if args.kwargs else {}
            result = await commands.invoke(settings, args.function, value, kwargs)
            print(json.dumps(_jsonable(result)))
            return 0
        case "worker":
            return await commands.worker(
                settings,
                args.function,
                threads=args.threads,
                device=args.device,
                boot=_boot(args.started_unix_s),
                memory_mb=int(os.environ.get("AUTAN_MEMORY_LIMIT_MB", 0) or 0) or None,
            )
    return await _dispatch_admin(args, settings)


async def _dispatch_admin(args: argparse.Namespace, settings: Settings) -> int:
    from runtime import commands

    match args.command:
        case "status":
            return await commands.status(settings)
        case "deploy":
            return await commands.deploy(settings, args.path)
        case "ls":
            return await commands.ls(settings)
        case "dlq":
            return await commands.dlq(settings, args.dlq_command, args)
        case "trigger":
            return await commands.replay(
                settings, args.function, since_s=args.since, from_seq=args.from_seq
            )
    raise AssertionError(args.command)


def _http(args: argparse.Namespace, *, host: str | None = None) -> Http:
    """The HTTP bridge's settings: flags first, then AUTAN_HTTP_* and AUTAN_API_KEYS[_FILE]."""
    from runtime.commands import Http

    env = os.environ
    port = _port(args.http_port, env.get("AUTAN_HTTP_PORT"))
    if not port:  # no bridge: neither its imports nor its settings
        return Http(port=0)
    from runtime.gateway import GatewayConfig, api_keys_from_env

    return Http(
        host=host or getattr(args, "http_host", None) or env.get("AUTAN_HTTP_HOST", "127.0.0.1"),
        port=port,
        api_keys=api_keys_from_env(env),
        config=GatewayConfig.from_env(env),
    )


def _port(flag: int | None, env: str | None) -> int:
    if flag is not None:
        return flag
    return int(env) if env else 8000


def _duration_s(text: str) -> float:
    """`30s`, `10m`, `2h`, `1d` (or plain seconds) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        return float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write a duration like 30s, 10m, 2h") from None


def _boot(main_unix_s: float) -> Boot:
    """When this worker process was asked for and forked, as the provider recorded it."""
    return Boot(
        spawned_unix_s=float(os.environ.get("AUTAN_SPAWNED_UNIX_S", 0) or 0),
        forked_unix_s=float(os.environ.get("AUTAN_FORKED_UNIX_S", 0) or 0),
        main_unix_s=main_unix_s,
    )


def _invoke_input(args: argparse.Namespace) -> Any:
    if args.file is not None:
        return args.file.read_bytes()
    if args.input is None:
        raise ValueError("give the argument as JSON, e.g. autan invoke demo.echo '\"hi\"'")
    try:
        return json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"the argument is not valid JSON ({exc.msg}); quote strings: '\"hello\"'"
        ) from exc


def _jsonable(value: Any) -> Any:
    def enc_hook(obj: Any) -> Any:
        if isinstance(obj, bytes):
            return base64.b64encode(obj).decode()
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise NotImplementedError

    return json.loads(msgspec.json.encode(value, enc_hook=enc_hook))


if __name__ == "__main__":
    sys.exit(main())
