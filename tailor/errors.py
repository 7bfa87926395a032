"""User-facing errors: one exception type whose message is shown without a traceback."""

from __future__ import annotations


class TailorError(Exception):
    """A problem with the user's input or environment; entry points print its message alone and exit 2."""
