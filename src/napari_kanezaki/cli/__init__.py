"""The ``napari-kanezaki`` command line: segment, train, predict, evaluate, tune, demo.

A thin face over the objects the widgets use (`Segmenter`, `SPConfig`/`STConfig`, the
presets, `io`, `batch`, `evaluation`, `tuning`). Run ``napari-kanezaki <command> --help``
for every option and its default. Exit status: 0 on success, 1 when some images failed
(the others are finished and a summary is printed), 2 for a usage or configuration error.

Modules: `main` (entry point, error handling), `parser` (the parser, shared option groups,
configuration from the options), `inputs` (input files and their checks), `records`
(``config.toml``/``run.json`` and the summary line) and one module per subcommand
(`segment`, `train`, `predict`, `evaluate`, `tune`, `demo`), each with ``register`` (its
options) and ``run`` (its handler). Heavy libraries are imported by the handlers only.
"""

from napari_kanezaki.cli.main import main, main_exit
from napari_kanezaki.cli.parser import build_parser

__all__ = ["build_parser", "main", "main_exit"]
