"""Messages to the user as napari notifications (one place, so tests can listen)."""

from napari.utils.notifications import show_error, show_info, show_warning


def error(message: str) -> None:
    show_error(message)


def warning(message: str) -> None:
    show_warning(message)


def info(message: str) -> None:
    show_info(message)
