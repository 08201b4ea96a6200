"""Entry point of the command line: `main`, `main_exit` and `CLIError`.

Named after `main`, the function the console script (``napari_kanezaki.cli:main_exit``) and
``examples/segment_sample.py`` call. `main` parses the arguments (`napari_kanezaki.cli.parser`),
runs the subcommand's handler (the ``run`` of ``cli/<command>.py``) and turns the errors a
user can fix into a one-line message and exit status 2. This module imports no other CLI
module at import time: they all import `CLIError` from here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["CLIError", "main", "main_exit"]


class CLIError(Exception):
    """A usage error with a message for the user (exit status 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 1 when some images failed, 2 for a usage or configuration
        error (also a missing optional dependency), 130 when interrupted.
    """
    from napari_kanezaki.cli.parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from napari_kanezaki.core.config import ConfigError
    from napari_kanezaki.imaging.images import ImageError
    from napari_kanezaki.workflows.extras import MissingExtraError

    try:
        return int(args.handler(args) or 0)
    except (CLIError, ConfigError, ImageError, MissingExtraError, ValueError) as exc:
        print(f"napari-kanezaki {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno is None:  # the project's own FileExistsError/FileNotFoundError
            print(f"napari-kanezaki {args.command}: error: {exc}", file=sys.stderr)
            return 2
        # the file system refused: a read-only folder, a file where a folder should be
        where = f" {exc.filename}" if exc.filename else ""
        print(f"napari-kanezaki {args.command}: error: cannot write or read{where}: "
              f"{exc.strerror or exc}; choose another path or fix its permissions.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point: `main` with its status as the exit code."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
