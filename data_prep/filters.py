"""Custom row filters named in the recipe as 'module.path:function', loaded only from inside the project."""

from __future__ import annotations

from typing import Any, Callable

from tailor.plugins import load_project_function

Filter = Callable[[list[dict[str, Any]]], "bool | str"]


def load_filters(specs: list[str]) -> list[Filter]:
    """Import each filter; it receives a row's messages and returns True to keep it, or False / a reason to drop."""
    return [load_project_function(spec, "data.clean.filters") for spec in specs]
