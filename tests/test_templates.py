"""Loss masks on the real chat templates: Qwen2.5 tools, Qwen3 thinking / non-thinking, DeepSeek-V3, roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.audit import audit_rows, check, end_of_turn_token, highlight
from data_prep.formats import RowError
from data_prep.render import Renderer, TemplateMismatch
from tailor.errors import TailorError


def tokenizer(name: str):
    from transformers import AutoTokenizer

    from tailor.tiny_models import ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model(name))


def trained_text(renderer: Renderer, messages: list[dict]) -> str:
    rendered = renderer.render(messages, max_length=4096)
    return renderer.tokenizer.decode([t for t, m in zip(rendered.input_ids, rendered.assistant_masks) if m])


CHAT = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]


def test_qwen3_non_thinking_trains_answer_only_and_matches_inference() -> None:
    renderer = Renderer(tokenizer("qwen3"), template_kwargs={"enable_thinking": False})
    assert renderer.prompt(CHAT).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert trained_text(renderer, CHAT) == "a1<|im_end|>\n"
    full = renderer.text(CHAT)
    assert full.startswith(renderer.prompt(CHAT) + "a1")  # training text = inference prompt + answer


def test_qwen3_thinking_mode_never_trains_an_empty_think_block() -> None:
    renderer = Renderer(tokenizer("qwen3"))
    assert renderer.prompt(CHAT).endswith("<|im_start|>assistant\n")
    assert "<think>\n\n</think>" in renderer.text(CHAT)
    assert trained_text(renderer, CHAT) == "a1<|im_end|>\n"


def test_qwen3_reasoning_is_trained_when_present() -> None:
    renderer = Renderer(tokenizer("qwen3"))
    messages = [{"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1", "reasoning_content": "think it through"}]
    assert trained_text(renderer, messages) == "<think>\nthink it through\n</think>\n\na1<|im_end|>\n"


def test_qwen3_history_turns_rewritten_by_template_are_not_trained() -> None:
    renderer = Renderer(tokenizer("qwen3"))
    messages = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    rendered = renderer.render(messages, 4096)
    assert rendered.untrainable_history == 1 and rendered.trained_turns == 1
    assert trained_text(renderer, messages) == "a2<|im_end|>\n"


def test_qwen25_multi_turn_with_tool_calls() -> None:
    renderer = Renderer(tokenizer("qwen2.5"))
    call = {"type": "function", "function": {"name": "get_room", "arguments": {"id": 7}}}
    messages = [{"role": "user", "content": "room 7?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "{\"free\": true}"}, {"role": "assistant", "content": "Room 7 is free."}]
    text = trained_text(renderer, messages)
    assert "<tool_call>" in text and "get_room" in text and text.endswith("Room 7 is free.<|im_end|>\n")
    assert "free\": true" not in text  # the tool result is context, not a target
    rendered = renderer.render(messages, 4096)
    assert rendered.trained_turns == 2 and rendered.role_trained["assistant"] == sum(rendered.assistant_masks)


def test_deepseek_v3_masks_answer_and_end_of_sentence() -> None:
    tok = tokenizer("deepseek-v3")
    renderer = Renderer(tok)
    assert trained_text(renderer, CHAT) == "a1<｜end▁of▁sentence｜>"
    assert end_of_turn_token(tok)[1] == "<｜end▁of▁sentence｜>"
    assert renderer.prompt(CHAT).endswith("<｜Assistant｜>")


def test_roles_to_train_and_per_message_train_flag() -> None:
    renderer = Renderer(tokenizer("qwen2.5"), roles_to_train=("assistant", "user"))
    messages = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1", "train": False},
                {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    text = trained_text(renderer, messages)
    assert "q1" in text and "q2" in text and "a2<|im_end|>" in text and "a1" not in text


def test_final_turn_template_mismatch_is_refused(tmp_path: Path) -> None:
    broken = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>bot\n{% endif %}")
    renderer = Renderer(tokenizer("qwen2.5"), template=broken)
    with pytest.raises(TemplateMismatch, match="differently for training than at inference"):
        renderer.render(CHAT, 4096)


def _row(ids, mask, turns=1, truncated=False, row_id="r"):
    return {"id": row_id, "input_ids": ids, "assistant_masks": mask, "trained_turns": turns, "truncated": truncated,
            "role_tokens": json.dumps({"assistant": len(ids)}), "role_trained": json.dumps({"assistant": sum(mask)})}


def test_audit_hard_errors() -> None:
    tok = tokenizer("qwen2.5")
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    good = _row([1, 2, eot], [0, 1, 1])
    assert not audit_rows([good], tok).problems()
    check(audit_rows([good], tok))
    no_trainable = audit_rows([good, _row([1, 2, eot], [0, 0, 0], row_id="dead")], tok)
    assert no_trainable.rows_without_trainable == ["dead"]
    never_eot = audit_rows([_row([1, 2, eot], [0, 1, 0], row_id="x")], tok)
    assert any("never trained" in p for p in never_eot.problems())
    assert never_eot.rows_missing_end_of_turn == ["x"]
    truncated = audit_rows([good, _row([1, 2, 3], [0, 1, 1], truncated=True)], tok)
    assert not truncated.problems()  # a truncated row may lose its end-of-turn token
    with pytest.raises(TailorError, match="data audit failed"):
        check(audit_rows([good], tok, template_mismatches=2))


def test_highlight_marks_trained_tokens() -> None:
    tok = tokenizer("qwen2.5")
    rendered = Renderer(tok).render(CHAT, 4096)
    row = {"input_ids": rendered.input_ids, "assistant_masks": rendered.assistant_masks}
    assert highlight(row, tok, color=False).endswith("[[a1<|im_end|>\n]]")
    assert "\033[1;32m" in highlight(row, tok)


def test_no_trainable_token_row_is_refused() -> None:
    renderer = Renderer(tokenizer("qwen2.5"), roles_to_train=("system",))
    with pytest.raises(RowError, match="no trainable token"):
        renderer.render(CHAT, 4096)
