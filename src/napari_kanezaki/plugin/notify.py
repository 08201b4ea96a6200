"""Showing the core's errors to the user as napari notifications."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from napari.utils.notifications import show_error, show_info

__all__ = ["USER_ERRORS", "notify_error", "notify_info", "report_errors"]

#: Errors that describe a problem with the user's input; anything else is a bug and propagates.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError, OSError)


def notify_error(error: BaseException) -> None:
    """Show an exception's message as a napari error notification.

    Parameters
    ----------
    error : BaseException
        Typically a `ConfigError` or `ImageError` of the core, whose message says what to do.
    """
    show_error(str(error) or type(error).__name__)


def notify_info(text: str) -> None:
    """Show a line the user should know about a run (e.g. the level of a pyramid used).

    Parameters
    ----------
    text : str
        The message.
    """
    show_info(text)


@contextmanager
def report_errors() -> Iterator[None]:
    """Context manager turning `USER_ERRORS` raised inside it into notifications."""
    try:
        yield
    except USER_ERRORS as error:
        notify_error(error)
