"""Own metrics named in the recipe as 'module.path:function', loaded only from inside the project folder
(the same rule as data_prep's custom filters: no code from site-packages or elsewhere on the machine)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Callable

from tailor.errors import TailorError

Metric = Callable[..., Any]


def metric_name(spec: str) -> str:
    """The name a custom metric has in results: its function name."""
    return spec.partition(":")[2]


def load_metric(spec: str) -> Metric:
    """Import `module.path:function` from inside the project; wrap it so a bad return value is a clear error."""
    module_name, _, function = spec.partition(":")
    key = "eval.custom_metrics"
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
    found = getattr(module, function, None)
    if not callable(found):
        raise TailorError(f"{key}: {module_name} has no function {function!r}.")

    def checked(prediction: str, reference: str, **_: Any) -> float | None:
        value = found(prediction, reference)
        if value is None:
            return None
        if isinstance(value, bool):
            return float(value)
        if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
            raise TailorError(f"{key}: {spec} returned {value!r}; a metric returns a number in [0, 1] "
                              "(or None when the row does not apply).")
        return float(value)

    return checked
