"""Map a raw row of any supported format to a list of chat messages (OpenAI style)."""

from __future__ import annotations

from typing import Any

from tailor.schema import DataSource

ROLES = ("system", "user", "assistant")


class RowError(ValueError):
    """A row that cannot become a training example; the message is the reason recorded in rejected.jsonl."""


def to_messages(row: dict[str, Any], source: DataSource, system_prompt: str | None) -> list[dict[str, str]]:
    """Convert one row to `[{"role": ..., "content": ...}, ...]` ending with an assistant message."""
    fields = source.fields
    if source.format == "messages":
        messages = _messages_column(row, fields.messages)
    elif source.format == "alpaca":
        instruction = _text(row, fields.instruction)
        extra = _text(row, fields.input, required=False)
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row, fields.output)}]
    else:
        messages = [{"role": "user", "content": _text(row, fields.prompt)},
                    {"role": "assistant", "content": _text(row, fields.completion)}]
    row_system = _text(row, fields.system, required=False) if fields.system else ""
    if messages[0]["role"] != "system":
        if row_system or system_prompt:
            messages.insert(0, {"role": "system", "content": row_system or system_prompt or ""})
    _check_conversation(messages)
    return messages


def _text(row: dict[str, Any], key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowError(f"field '{key}' is missing or empty")
        return ""
    if not isinstance(value, str):
        raise RowError(f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def _messages_column(row: dict[str, Any], key: str) -> list[dict[str, str]]:
    value = row.get(key)
    if value is None:
        raise RowError(f"field '{key}' is missing")
    if not isinstance(value, list) or not value:
        raise RowError(f"field '{key}' must be a non-empty list of messages")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowError(f"{key}[{index}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RowError(f"{key}[{index}].role: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise RowError(f"{key}[{index}].content must be a string, got {type(content).__name__}")
        messages.append({"role": role, "content": content})
    return messages


def _check_conversation(messages: list[dict[str, str]]) -> None:
    if any(m["role"] == "system" for m in messages[1:]):
        raise RowError("a system message may only come first")
    if messages[-1]["role"] != "assistant":
        raise RowError("the conversation must end with an assistant message (the answer to learn)")
    if not messages[-1]["content"].strip():
        raise RowError("the last assistant message is empty")
    if not any(m["role"] == "user" for m in messages):
        raise RowError("the conversation has no user message")
