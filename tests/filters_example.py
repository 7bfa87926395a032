"""A custom row filter used by the tests (recipes name it as filters_example:drop_refunds)."""


def drop_refunds(messages: list[dict]) -> bool | str:
    return "mentions refund" if any("refund" in (m.get("content") or "") for m in messages) else True
