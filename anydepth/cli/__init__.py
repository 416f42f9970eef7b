"""``anydepth`` command line: thin layers over the public API, one module per command."""

from __future__ import annotations

import argparse
import logging
import sys

from . import batch, estimate, generate, geometry, info

#: Each command module has ``add_parser(subparsers)`` that sets ``run`` as the handler.
COMMANDS = (estimate, info, batch, generate, geometry)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anydepth", description="Depth Anything depth estimation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"anydepth: error: {message}", file=sys.stderr)
        return 2
