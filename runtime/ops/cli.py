"""The `autan` command: up, serve, agent, gateway, deploy, invoke, ls, logs, nodes, status,
dlq, trigger, worker.

It reads the environment once (`Settings.from_env`, flags win) and hands the settings on.
Exit codes: 0 done; 1 it failed, and the one line printed says why and what to do; 2 a
command line or setting that means nothing; 130 interrupted (Ctrl-C); 141 its output was
closed (piped into `head`, say).
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
from typing import Any

import anyio
import msgspec

from runtime.core import (
    InvalidOption,
    RemoteError,
    Settings,
    WorkerLaunch,
    check_secret_name,
    configure_logging,
    known_error,
)

__all__ = ["main"]

_UNISOLATED = "run deployed code as this user, unconfined (where no sandbox can be had)"


def _global_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    """Options every command takes, before or after its name."""
    parser.add_argument("--nats-url", default=default, help="NATS server (env AUTAN_NATS_URL)")
    parser.add_argument(
        "--storage-url", default=default, help="file:///path or s3://bucket?endpoint=host:port"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=default, help="local state (env AUTAN_DATA_DIR)"
    )
    parser.add_argument(
        "--log-format", choices=["console", "json"], default=default, help="env AUTAN_LOG_FORMAT"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    _commands(commands)
    for command in _leaves(parser):
        _global_options(command, default=argparse.SUPPRESS)  # given there, it wins
    return parser


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the commands that run (`dlq ls`, not `dlq`)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _leaves(child) or [child]
    return found


def _commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="run the whole stack on this machine until Ctrl-C")
    up.add_argument("--nats-port", type=int, default=4222)
    up.add_argument("--functions", default="functions", help="what to deploy (default: bundled)")
    up.add_argument("--metrics-port", type=int, help="Prometheus /metrics, 9464 (0: off)")
    up.add_argument("--http-port", type=int, help="the HTTP bridge, 8000 (0: off)")
    up.add_argument("--unisolated", action="store_true", help=_UNISOLATED)
    up.add_argument(
        "--agents", type=int, default=0, metavar="N",
        help="run N node agents on this machine and place workers on them, as in a fleet",
    )  # fmt: skip

    serve = commands.add_parser(
        "serve", help="deploy, then scale workers and serve HTTP against an existing NATS"
    )
    serve.add_argument("--functions", default="functions", help="what to deploy (default: bundled)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus /metrics, 9464 (0: off)")
    serve.add_argument("--http-port", type=int, help="the HTTP bridge, 8000 (0: off)")
    serve.add_argument("--http-host", help="bind address (env AUTAN_HTTP_HOST, 127.0.0.1)")
    serve.add_argument("--unisolated", action="store_true", help=_UNISOLATED)
    serve.add_argument(
        "--fleet", action="store_true", help="run no worker here: place them on 'autan agent's"
    )

    agent = commands.add_parser("agent", help="run this host's workers for the fleet")
    agent.add_argument("--name", help="this node's name (default: the host name)")
    agent.add_argument(
        "--gpus", help="declare GPUs instead of nvidia-smi's: each one's memory in GB (24,24)"
    )
    agent.add_argument("--unisolated", action="store_true", help=_UNISOLATED)
    agent.add_argument("--identities-from-orders", action="store_true", help=argparse.SUPPRESS)

    gateway = commands.add_parser("gateway", help="the HTTP bridge alone")
    gateway.add_argument("--http-port", type=int, help="env AUTAN_HTTP_PORT, 8000")
    gateway.add_argument("--http-host", help="env AUTAN_HTTP_HOST, 127.0.0.1")

    deploy = commands.add_parser("deploy", help="package and register the functions of PATH")
    deploy.add_argument("path", help="a package directory, a .py file or a module name")

    invoke = commands.add_parser(
        "invoke", help="call APP.FN with one JSON argument (a generator: one line per item)"
    )
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

    key = commands.add_parser("key", help="deploy keys: who may sign what runs")
    key_commands = key.add_subparsers(dest="key_command", required=True)
    key_commands.add_parser("public", help="the public key of the deploy key in use")
    key_new = key_commands.add_parser("new", help="make a deploy key (0600); print its public key")
    key_new.add_argument("path", type=Path)

    secret = commands.add_parser("secret", help="secrets of functions (sealed at rest)")
    secret_commands = secret.add_subparsers(dest="secret_command", required=True)
    secret_set = secret_commands.add_parser(
        "set", help="set a secret; its value is read from stdin (or a prompt)"
    )
    secret_set.add_argument("name", type=_secret_name)
    secret_commands.add_parser("ls", help="the names of the secrets set (never their values)")
    secret_rm = secret_commands.add_parser("rm", help="delete a secret")
    secret_rm.add_argument("name", type=_secret_name)

    ls = commands.add_parser("ls", help="list deployed functions, versions and workers")
    ls.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    logs = commands.add_parser("logs", help="what a function's workers logged and printed")
    logs.add_argument("function", metavar="APP.FN")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="then each new line, until Ctrl-C"
    )
    logs.add_argument(
        "--since", type=_duration_s, default=3600.0, help="how far back: 90s, 10m, 2h (default 1h)"
    )
    logs.add_argument("--call", help="only this call's lines")
    nodes = commands.add_parser("nodes", help="the fleet's hosts: capacity, use, workers")
    nodes.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status = commands.add_parser(
        "status", help="which parts are up; backlog, workers and the last scaling decision"
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    worker = commands.add_parser("worker", help="serve one function (started by 'autan up')")
    WorkerLaunch.add_arguments(worker)


def main(argv: Sequence[str] | None = None) -> int:
    started_unix_s = time.time()  # after the imports
    args = _parser().parse_args(argv)
    args.started_unix_s = started_unix_s
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"autan: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        return int(anyio.run(_dispatch, args, settings, backend_options=_loop_options(args)))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and flush nothing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except BaseException as exc:
        known = known_error(exc)
        if known is None:
            raise
        print(str(known) if isinstance(known, RemoteError) else f"autan: {known}", file=sys.stderr)
        return 1


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, the flags given winning."""
    settings = Settings.from_env(
        nats_url=args.nats_url,
        storage_url=args.storage_url,
        data_dir=args.data_dir,
        log_format=args.log_format,
        metrics_port=getattr(args, "metrics_port", None),
    )
    host = getattr(args, "http_host", None)
    if args.command == "up":
        host = "127.0.0.1"  # the embedded stack is for this machine
    return settings.with_http(host=host, port=getattr(args, "http_port", None))


def _loop_options(args: argparse.Namespace) -> dict[str, bool]:
    """`autan gateway` (the HTTP bridge alone) runs on uvloop when it is installed."""
    if args.command != "gateway":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.ops import admin, stack

    match args.command:
        case "up":
            return await stack.up(settings, nats_port=args.nats_port, target=args.functions,
                                  unisolated=args.unisolated, agents=args.agents)  # fmt: skip
        case "serve":
            return await stack.serve(settings, target=args.functions, unisolated=args.unisolated,
                                     fleet=args.fleet)  # fmt: skip
        case "agent":
            from runtime.ops.fleet import agent

            return await agent(settings, name=args.name, gpus=args.gpus,
                               unisolated=args.unisolated,
                               identities_from_orders=args.identities_from_orders)  # fmt: skip
        case "gateway":
            return await stack.gateway(settings)
        case "invoke":
            value = _invoke_input(args)
            kwargs = json.loads(args.kwargs) if args.kwargs else {}
            await admin.invoke(settings, args.function, value, kwargs, _show)
            return 0
        case "worker":
            return await _worker(args, settings)
    return await _dispatch_admin(args, settings)


async def _dispatch_admin(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.ops import admin, dlq

    match args.command:
        case "status":
            return await admin.status(settings, as_json=args.json)
        case "key":
            return admin.key(settings, args.key_command, getattr(args, "path", None))
        case "secret":
            from runtime.ops.secrets import secret

            return await secret(settings, args.secret_command, getattr(args, "name", None))
        case "deploy":
            return await admin.deploy(settings, args.path)
        case "ls":
            return await admin.ls(settings, as_json=args.json)
        case "nodes":
            from runtime.ops.fleet import nodes

            return await nodes(settings, as_json=args.json)
        case "logs":
            from runtime.ops.logs import logs

            return await logs(settings, args.function, since_s=args.since, follow=args.follow,
                              call_id=args.call)  # fmt: skip
        case "dlq":
            return await dlq.dlq(settings, args.dlq_command, args)
        case "trigger":
            return await admin.replay(
                settings, args.function, since_s=args.since, from_seq=args.from_seq
            )
    raise AssertionError(args.command)


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.worker import Boot, run

    launch = WorkerLaunch.from_args(args)
    boot = Boot(spawned_unix_s=launch.spawned_unix_s, main_unix_s=args.started_unix_s)
    return await run(settings, launch, boot)


def _secret_name(text: str) -> str:
    try:
        return check_secret_name(text)
    except InvalidOption as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration_s(text: str) -> float:
    """`30s`, `10m`, `2h`, `1d` (or plain seconds) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        return float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write a duration like 30s, 10m, 2h") from None


def _show(result: Any) -> None:
    print(json.dumps(_jsonable(result)), flush=True)


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
