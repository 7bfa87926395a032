"""User code named in a recipe as 'module.path:function' (filters, metrics), imported only from inside the project."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from tailor.errors import TailorError


def load_project_function(spec: str, key: str) -> Callable[..., Any]:
    """Import `module.path:function`; refuse modules outside the project folder (the working directory)."""
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise TailorError(f"{key}: {spec!r} must look like 'module.path:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TailorError(f"{key}: cannot import {module_name!r} ({err}); the module must be inside the project "
                          "folder (the working directory).") from None
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if Path.cwd().resolve() not in origin.parents:
        raise TailorError(f"{key}: {spec!r} lives outside the project ({origin}); custom code is only loaded from "
                          "inside the project folder.")
    if not hasattr(module, function):
        raise TailorError(f"{key}: {module_name} has no function {function!r}.")
    found = getattr(module, function)
    if not callable(found):
        raise TailorError(f"{key}: {spec} is a {type(found).__name__}, not a function.")
    return found
