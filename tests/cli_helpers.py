"""Helpers of the CLI tests (imported by test modules; pytest puts tests/ on sys.path)."""

from __future__ import annotations

from collections.abc import Sequence


def exit_status(argv: Sequence[str]) -> int:
    """The status of ``napari-kanezaki ARGV``, also when argparse itself refuses it (exits)."""
    from napari_kanezaki.cli import main

    try:
        return main(list(argv))
    except SystemExit as exit_:  # refused by argparse itself
        return exit_.code
