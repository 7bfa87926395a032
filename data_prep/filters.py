"""Custom row filters named in the recipe as 'module.path:function', loaded only from inside the project."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from tailor.errors import TailorError

Filter = Callable[[list[dict[str, Any]]], "bool | str"]


def load_filters(specs: list[str]) -> list[Filter]:
    """Import each filter; it receives a row's messages and returns True to keep it, or False / a reason to drop."""
    return [_load(spec) for spec in specs]


def _load(spec: str) -> Filter:
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise TailorError(f"data.clean.filters: {spec!r} must look like 'module.path:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TailorError(f"data.clean.filters: cannot import {module_name!r} ({err}).") from None
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if Path.cwd().resolve() not in origin.parents:
        raise TailorError(f"data.clean.filters: {spec!r} lives outside the project ({origin}); custom code is only "
                          "loaded from inside the project folder.")
    found = getattr(module, function, None)
    if not callable(found):
        raise TailorError(f"data.clean.filters: {module_name} has no function {function!r}.")
    return found
