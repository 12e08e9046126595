"""Messages to the user as napari notifications (one place, so tests can listen).

The library's messages name Python arguments; the dock has no ``overwrite`` switch, so
a message that asks for one says what a dock user can do instead.
"""

from napari.utils.notifications import show_error, show_info, show_warning


def dock_words(message: str) -> str:
    """``message`` in the dock's terms."""
    return message.replace("pass overwrite=True", "delete it first")


def error(message: str) -> None:
    show_error(dock_words(message))


def warning(message: str) -> None:
    show_warning(dock_words(message))


def info(message: str) -> None:
    show_info(message)
