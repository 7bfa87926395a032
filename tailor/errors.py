"""User-facing errors: one exception type whose message is shown without a traceback."""

from __future__ import annotations


class TailorError(Exception):
    """A problem with the user's input or environment, explained well enough to fix it.

    Entry points catch it and print the message alone (exit code 2): no traceback is shown to the user.
    """
