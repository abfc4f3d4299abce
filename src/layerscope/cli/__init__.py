"""The ``layerscope`` command: parse → call the library → print. No logic of its own.

One module per subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> int``.
Every error is one line on stderr and a non-zero exit code (2 for a wrong argument, 1 for
anything else, 130 when interrupted, 143 when terminated); ``--debug`` (before or after the
subcommand) shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from layerscope._version import __version__
from layerscope.errors import LayerscopeError

#: The subcommand modules, in the order ``--help`` lists them; each registers its own parsers.
COMMANDS = ("tour", "grid", "layers", "methods", "train", "train_detector", "batch", "evaluate")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and a hint, not a usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"layerscope: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _modules() -> list[Any]:
    return [importlib.import_module(f"layerscope.cli.{name}") for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, built from the subcommand modules."""
    parser = Parser(
        prog="layerscope",
        description="See what every layer of a network looks at: class-activation maps at every layer in one "
        "forward and one backward pass, as an annotated animation, a video, an interactive page or arrays.",
    )
    parser.add_argument("--version", action="version", version=f"layerscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in _modules():
        before = set(sub.choices)
        module.add_parser(sub)
        for name in set(sub.choices) - before:
            p = sub.choices[name]
            p.set_defaults(_run=module.run)
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    return parser


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the command like Ctrl-C: cleanup runs, one line, exit 143. SIGINT
    interrupts even when the shell started the command with it ignored (``cmd &``,
    ``nohup``): a command stopped with ``kill -INT`` still cleans up and exits 130."""

    class Terminated(KeyboardInterrupt):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    old_int = signal.getsignal(signal.SIGINT)
    if old_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        if old_int == signal.SIG_IGN:
            signal.signal(signal.SIGINT, old_int)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from layerscope.cli._common import command_session

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        with _sigterm_as_interrupt(), command_session():
            return int(args._run(args))
    except LayerscopeError as e:
        if debug:
            raise
        from layerscope.cli._common import shown

        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]  # one line, whatever the message
        print(f"layerscope: error: {shown('; '.join(lines))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        terminated = type(e).__name__ == "Terminated"
        print(f"layerscope: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `layerscope methods | head -1`: the reader left; nothing to report
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: still one line, with the way to see more
        if debug:
            raise
        from layerscope.cli._common import shown

        print(
            f"layerscope: internal error: {type(e).__name__}: {shown(e)} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1
