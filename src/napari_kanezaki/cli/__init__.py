"""The ``napari-kanezaki`` command line."""

from napari_kanezaki.cli.main import build_parser, main, main_exit

__all__ = ["build_parser", "main", "main_exit"]
