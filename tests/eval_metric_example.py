"""A custom eval metric used by the tests (recipes name it as eval_metric_example:mentions_number)."""

import re


def mentions_number(prediction: str, reference: str) -> float | None:
    """1 when the answer contains the number of the reference {"number": N}; None for other references."""
    found = re.search(r'"number":\s*(\d+)', reference)
    return None if not found else float(found.group(1) in prediction)
