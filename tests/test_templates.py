"""Loss masks on the real chat templates: Qwen2.5 tools, Qwen3 thinking / non-thinking, DeepSeek-V3,
DeepSeek-R1-Distill (think block opened by the generation prompt), roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.audit import audit_rows, check, end_of_turn_token, highlight
from tailor.render import RowError
from tailor.render import Renderer, TemplateMismatch
from tailor.errors import TailorError


def tokenizer(name: str):
    from transformers import AutoTokenizer

    from tiny_models import ensure_tiny_model

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


R1_END = "<｜end▁of▁sentence｜>"


def test_r1_distill_without_reasoning_closes_the_open_think_block() -> None:
    renderer = Renderer(tokenizer("r1-distill-qwen"))
    prompt = renderer.prompt(CHAT)
    assert prompt.endswith("<｜Assistant｜><think>\n")  # what the model is given at inference
    assert renderer.text(CHAT).endswith("<｜Assistant｜>a1" + R1_END)  # the template's own render has no think block
    rendered = renderer.render(CHAT, 4096)
    full = renderer.tokenizer.decode(rendered.input_ids)
    assert full == prompt + "</think>\n\na1" + R1_END  # training text = inference prompt + completion
    assert trained_text(renderer, CHAT) == "</think>\n\na1" + R1_END


@pytest.mark.parametrize("answer", [
    {"role": "assistant", "content": "a2", "reasoning_content": "add one\n"},
    {"role": "assistant", "content": "<think>\nadd one\n</think>\n\na2"},
    {"role": "assistant", "content": "add one</think>a2"},  # R1 output: the opening tag was in the prompt
])
def test_r1_distill_trains_reasoning_after_the_generation_prefix(answer: dict) -> None:
    renderer = Renderer(tokenizer("r1-distill-qwen"))
    messages = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\na1"},
                {"role": "user", "content": "q2"}, answer]
    rendered = renderer.render(messages, 4096)
    full = renderer.tokenizer.decode(rendered.input_ids)
    prompt = renderer.prompt(messages)
    assert prompt.endswith("<｜User｜>q2<｜Assistant｜><think>\n") and full.startswith(prompt)
    assert "<｜Assistant｜>\n\na1" + R1_END in prompt  # history as the template renders it: reasoning dropped
    assert trained_text(renderer, messages) == "add one\n</think>\n\na2" + R1_END
    assert rendered.untrainable_history == 1 and rendered.trained_turns == 1  # a1 renders unlike inference


def test_r1_audit_passes_and_a_mismatched_template_fails_loudly(tmp_path: Path) -> None:
    from data_prep.prepare import prepare
    from tailor.recipe import load_recipe
    from tiny_models import ensure_tiny_model

    rows = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                          {"role": "assistant", "content": f"{i + 1}", "reasoning_content": f"{i} plus one"}]}
            for i in range(12)]
    data = tmp_path / "r1.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    model = ensure_tiny_model("r1-distill-qwen")
    # a template whose assistant turns never carry the think block its generation prompt opens
    broken = tmp_path / "broken.jinja"
    broken.write_text("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}<｜User｜>{{ m.content }}"
                      "{% else %}<｜Assistant｜>{{ m.content }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
                      "{% if add_generation_prompt %}<｜Assistant｜><think>\n<｜User｜>{% endif %}")

    def recipe(name: str, extra: dict):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({"name": name, "output_dir": str(tmp_path / "runs"), "model": {"name_or_path": str(model)},
                                    "data": {"sources": [{"path": str(data)}], **extra},
                                    "training": {"max_length": 128}, "tracking": {"mode": "disabled"}}))
        return load_recipe(path)

    manifest = prepare(recipe("r1", {}))
    audit = manifest["audit"]
    assert audit["template_mismatches"] == 0 and not audit["problems"]
    assert audit["end_of_turn"] == R1_END and audit["end_of_turn_trained"] == manifest["rows"]["train"] + manifest["rows"]["heldout"]
    with pytest.raises(TailorError, match="renders the final answer differently for training than at inference.*: 12"):
        prepare(recipe("broken", {"template": str(broken), "max_bad_fraction": 1.0}))
