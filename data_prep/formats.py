"""Map a raw row of any supported format to a list of chat messages (OpenAI style), or a preference row to a
`Preference` (prompt messages, then the final turns of each side).

Messages keep the keys chat templates understand (tool_calls, tool_call_id, name, reasoning_content) and tailor's
own per-message `train` flag. Plain text rows (continued pretraining) become a single message of role "text".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tailor.render import TEXT_ROLE, RowError
from tailor.schema import SHAREGPT_ROLES, DataSource

ROLES = ("system", "user", "assistant", "tool")
PASSTHROUGH_KEYS = ("tool_calls", "tool_call_id", "name", "reasoning_content")


PREFERENCE_FORMATS = ("preference", "unpaired_preference")
LABELS = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True)
class Preference:
    """A preference row: the prompt (the conversation before the answer) and the final turn(s) of each side.
    An unpaired row (KTO) has one side, `chosen` (its completion, whatever its label), `rejected` None and `label`."""

    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]] | None = None
    label: bool = True

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """prompt + chosen: the row as a conversation (filters, language, contamination, held-out rows)."""
        return self.prompt + self.chosen

    def sides(self) -> list[list[dict[str, Any]]]:
        return [self.chosen] if self.rejected is None else [self.chosen, self.rejected]

    def identity(self) -> dict[str, Any]:
        """What makes the row itself (its content hash): the pair, or the completion with its label."""
        if self.rejected is None:
            return {"prompt": self.prompt, "completion": self.chosen, "label": self.label}
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def to_row(row: dict[str, Any], source: DataSource, system_prompt: str | None) -> list[dict[str, Any]] | Preference:
    """A row of any format: its messages, or a `Preference` for the preference formats."""
    if source.format in PREFERENCE_FORMATS:
        return to_preference(row, source, system_prompt)
    return to_messages(row, source, system_prompt)


def to_preference(row: dict[str, Any], source: DataSource, system_prompt: str | None) -> Preference:
    """Map a preference row (prompt or messages + chosen + rejected) or an unpaired one (+ completion + label)."""
    fields = source.fields
    if row.get(fields.prompt) is not None:
        prompt = _turns(row, fields.prompt, "prompt", "user", source)
    elif row.get(fields.messages) is not None:
        prompt = _messages_column(row, fields.messages, fields.role, fields.content, source.role_map)
    else:
        raise RowError(f"the prompt is missing: give '{fields.prompt}' (a string or a list of messages) or "
                       f"'{fields.messages}' (the conversation before the answer)")
    _add_system(prompt, row, fields, system_prompt)
    if not any(m["role"] == "user" for m in prompt):
        raise RowError("the prompt has no user message")
    if prompt[-1]["role"] == "assistant":
        raise RowError("the prompt ends with an assistant message: give the conversation before the answer (the "
                       "answers go in " + ("chosen and rejected)" if source.format == "preference" else "completion)"))
    if source.format == "preference":
        chosen = _turns(row, fields.chosen, "chosen", "assistant", source)
        rejected = _turns(row, fields.rejected, "rejected", "assistant", source)
        if same_turns(chosen, rejected):
            raise RowError("chosen and rejected are identical: the pair teaches nothing")
        out = Preference(prompt, chosen, rejected)
    else:
        out = Preference(prompt, _turns(row, fields.completion, "completion", "assistant", source), None,
                         _label(row.get(fields.label), fields.label))
    for side in out.sides():
        _check_conversation(prompt + side)
    return out


def same_turns(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Whether two sides say the same (contents compared without surrounding whitespace)."""

    def canonical(turns: list[dict[str, Any]]) -> str:
        stripped = [{**m, "content": (m.get("content") or "").strip()} for m in turns]
        return json.dumps(stripped, sort_keys=True, default=str)

    return canonical(a) == canonical(b)


def _turns(row: dict[str, Any], key: str, name: str, role: str, source: DataSource) -> list[dict[str, Any]]:
    """A column holding a string (one `role` message) or a list of messages; `name` is what the reasons call it."""
    value = row.get(key)
    label = name if key == name else f"{name} (column '{key}')"
    if value is None:
        raise RowError(f"{label} is missing")
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"{label} is empty")
        return [{"role": role, "content": value}]
    if not isinstance(value, list):
        raise RowError(f"{label} must be a string or a list of messages, got {type(value).__name__}")
    if not value:
        raise RowError(f"{label} is empty")
    fields = source.fields
    turns = _messages_column(row, key, fields.role, fields.content, source.role_map)
    if role == "assistant":
        if turns[-1]["role"] != "assistant":
            raise RowError(f"{label} must end with an assistant message")
        if not (turns[-1]["content"] or "").strip() and not turns[-1].get("tool_calls"):
            raise RowError(f"{label} is empty")
    return turns


def _label(value: Any, key: str) -> bool:
    """A desirable/undesirable label: a boolean, 0/1, or (CSV) the strings true/false/1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    if value is None:
        raise RowError(f"field '{key}' is missing")
    raise RowError(f"field '{key}' must be true or false (desirable or not), got {value!r}")


def to_messages(row: dict[str, Any], source: DataSource, system_prompt: str | None) -> list[dict[str, Any]]:
    """Convert one row of an SFT format to `[{"role": ..., "content": ...}, ...]` ending with an assistant message
    (preference rows: `to_preference`)."""
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
    _add_system(messages, row, fields, system_prompt)
    _check_conversation(messages)
    return messages


def _add_system(messages: list[dict[str, Any]], row: dict[str, Any], fields: Any, system_prompt: str | None) -> None:
    """Put the row's system column (else the recipe's system prompt) first, unless a system message is there."""
    row_system = _text(row, fields.system, required=False) if fields.system else ""
    if messages[0]["role"] != "system" and (row_system or system_prompt):
        messages.insert(0, {"role": "system", "content": row_system or system_prompt or ""})


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
