"""Map a raw row of any supported format to a list of chat messages (OpenAI style).

Messages keep the keys chat templates understand (tool_calls, tool_call_id, name, reasoning_content) and tailor's
own per-message `train` flag. Plain text rows (continued pretraining) become a single message of role "text".
"""

from __future__ import annotations

from typing import Any

from tailor.render import TEXT_ROLE, RowError
from tailor.schema import SHAREGPT_ROLES, DataSource

ROLES = ("system", "user", "assistant", "tool")
PASSTHROUGH_KEYS = ("tool_calls", "tool_call_id", "name", "reasoning_content")


def to_messages(row: dict[str, Any], source: DataSource, system_prompt: str | None) -> list[dict[str, Any]]:
    """Convert one row to `[{"role": ..., "content": ...}, ...]` ending with an assistant message."""
    fields = source.fields
    if source.format == "text":
        return [{"role": TEXT_ROLE, "content": _text(row, fields.text)}]
    if source.format in ("messages", "sharegpt"):
        role_map = {**(SHAREGPT_ROLES if source.format == "sharegpt" else {}), **source.role_map}
        messages = _messages_column(row, fields.messages, fields.role, fields.content, role_map)
    elif source.format == "alpaca":
        instruction = _text(row, fields.instruction)
        extra = _text(row, fields.input, required=False)
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row, fields.output)}]
    else:
        messages = [{"role": "user", "content": _text(row, fields.prompt)},
                    {"role": "assistant", "content": _text(row, fields.completion)}]
    row_system = _text(row, fields.system, required=False) if fields.system else ""
    if messages[0]["role"] != "system" and (row_system or system_prompt):
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


def _messages_column(row: dict[str, Any], key: str, role_key: str, content_key: str,
                     role_map: dict[str, str]) -> list[dict[str, Any]]:
    value = row.get(key)
    if value is None:
        raise RowError(f"field '{key}' is missing")
    if not isinstance(value, list) or not value:
        raise RowError(f"field '{key}' must be a non-empty list of messages")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowError(f"{key}[{index}] must be an object with {role_key} and {content_key}")
        raw_role = message.get(role_key)
        role = role_map.get(raw_role, raw_role) if isinstance(raw_role, str) else raw_role
        if role not in ROLES:
            known = sorted(set(ROLES) | set(role_map))
            raise RowError(f"{key}[{index}].{role_key}: unknown role {raw_role!r} (expected one of "
                           f"{', '.join(known)}; map others with role_map)")
        content = message.get(content_key)
        if content is None and message.get("tool_calls"):
            pass  # templates test `content is none` to render a pure tool-call turn
        elif not isinstance(content, str):
            raise RowError(f"{key}[{index}].{content_key} must be a string, got {type(content).__name__}")
        out: dict[str, Any] = {"role": role, "content": content}
        out.update({k: message[k] for k in PASSTHROUGH_KEYS if message.get(k) is not None})
        if "train" in message:
            if not isinstance(message["train"], bool):
                raise RowError(f"{key}[{index}].train must be true or false")
            out["train"] = message["train"]
        messages.append(out)
    return messages


def _check_conversation(messages: list[dict[str, Any]]) -> None:
    if any(m["role"] == "system" for m in messages[1:]):
        raise RowError("a system message may only come first")
    if messages[-1]["role"] != "assistant":
        raise RowError("the conversation must end with an assistant message (the answer to learn)")
    if not (messages[-1]["content"] or "").strip() and not messages[-1].get("tool_calls"):
        raise RowError("the last assistant message is empty")
    if not any(m["role"] == "user" for m in messages):
        raise RowError("the conversation has no user message")


def row_text(messages: list[dict[str, Any]]) -> str:
    """The row's own words, without the system prompt most rows share: what contamination compares."""
    return "\n".join(m.get("content") or "" for m in messages if m["role"] != "system")
