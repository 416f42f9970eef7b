"""``anydepth`` command line: thin layers over the public API, one module per command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import batch, estimate, generate, geometry, info, mesh, sequence, video

#: Each command module has ``add_parser(subparsers)`` that sets ``run`` as the handler.
COMMANDS = (estimate, info, batch, generate, geometry, mesh, sequence, video)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anydepth", description="Depth Anything depth estimation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


#: Exit status after Ctrl-C, as shells report a SIGINT death (128 + 2).
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure becomes a one-line message and an exit status, never a traceback.

    Exit status: 0 done, 1 an error or failed inputs (named on stderr), 2 bad command-line usage (argparse),
    130 interrupted (Ctrl-C; finished outputs are complete and a rerun resumes). ``ANYDEPTH_DEBUG=1`` re-raises
    unexpected errors with their traceback, for bug reports.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt as interrupt:
        report = getattr(interrupt, "report", None)
        done = f"{report.on_disk} of {report.total} written" if report is not None else "stopped"
        print(f"\nanydepth: interrupted: {done}; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, KeyError, OSError, ImportError, MemoryError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"anydepth: error: {message}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        if os.environ.get("ANYDEPTH_DEBUG"):
            raise
        print(f"anydepth: error: {type(err).__name__}: {err} (set ANYDEPTH_DEBUG=1 to see where it happened)",
              file=sys.stderr)
        return 1
