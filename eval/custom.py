"""Own metrics named in the recipe as 'module.path:function', loaded only from inside the project folder
(the same rule as data_prep's custom filters: no code from site-packages or elsewhere on the machine)."""

from __future__ import annotations

import math
from typing import Any, Callable

from tailor.errors import TailorError
from tailor.plugins import load_project_function

Metric = Callable[..., Any]


def metric_name(spec: str) -> str:
    """The name a custom metric has in results: its function name."""
    return spec.partition(":")[2]


def load_metric(spec: str) -> Metric:
    """Import `module.path:function` from inside the project; wrap it so a bad return value is a clear error."""
    key = "eval.custom_metrics"
    found = load_project_function(spec, key)

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
