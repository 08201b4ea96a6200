"""Optional dependencies (pip extras) imported on first use, with an install hint if missing.

``optuna`` (extra ``tune``) and ``distributed`` (extra ``distributed``) are not installed with
the package; `require` imports them where they are needed and turns a missing one into a
`MissingExtraError` that says which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]

DISTRIBUTION = "napari-kanezaki"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra to install.

    Parameters
    ----------
    module : str
        Top-level name of the missing package.
    extra : str
        Name of the pip extra of ``napari-kanezaki`` that installs it.
    purpose : str
        What needs it, as the start of a sentence ("the tune command").
    """

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        self.module = module
        self.extra = extra
        self.purpose = purpose
        super().__init__(
            f"{purpose} needs {module}, which is not installed; install it with: "
            f"pip install '{DISTRIBUTION}[{extra}]'",
            name=module,
        )


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or explain which extra installs it.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"optuna"`` or ``"optuna.storages.journal"``.
    extra : str
        Name of the pip extra of ``napari-kanezaki`` that installs it, e.g. ``"tune"``.
    purpose : str
        What needs it, as the start of a sentence, e.g. ``"the tune command"``.

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    MissingExtraError
        The package of `module` (or the module itself) is not installed.
    ImportError
        Any other import failure (a broken installation, a missing dependency *of* the
        package) is raised unchanged: installing the extra would not fix it.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise MissingExtraError(module.partition(".")[0], extra, purpose) from exc
        raise
