"""Generation: stop strings (real transformers stop_strings + cut), sampling settings, token counts, progress bar,
and thinking-model outputs (answer after </think>, think length)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.generate import cut_at_stop, generated_length
from tailor.schema import EvalSettings
from tailor.thinking import split_thinking, thinking_summary

TAGS = ("<think>", "</think>")


@pytest.mark.parametrize("text,stop,expected", [
    ("answer\nUser: more", ["\nUser:"], "answer"),
    ("a STOP b END c", ["END", "STOP"], "a "),  # the earliest occurrence wins, whatever the list order
    ("no stop here", ["###"], "no stop here"),
    ("", ["x"], ""),
    ("日本語。次", ["。"], "日本語"),
    ("text", [], "text"),
])
def test_cut_at_stop(text: str, stop: list[str], expected: str) -> None:
    assert cut_at_stop(text, stop) == expected


def test_generated_length_stops_at_the_first_end_token() -> None:
    assert generated_length([5, 6, 2, 0, 0], {2, 0}) == 3
    assert generated_length([5, 6, 7], {2}) == 3


@pytest.fixture(scope="module")
def tiny(tiny_qwen25: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen25)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen25)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Say the number {i} as JSON."}],
                                             tokenize=False, add_generation_prompt=True) for i in range(3)]
    return model, tokenizer, prompts


QWEN3_OUTPUT = ("<think>\nThe guest wants a late checkout.\nSo intent: checkout.\n</think>\n\n"
                '{"intents": ["checkout"]}')


@pytest.mark.parametrize("text,thinking,answer,unfinished", [
    (QWEN3_OUTPUT, "The guest wants a late checkout.\nSo intent: checkout.", '{"intents": ["checkout"]}', False),
    ("<think>\n\n</think>\n\nParis", "", "Paris", False),                    # Qwen3 with thinking switched off
    ("reasoning in the prompt's open block</think>Paris", "reasoning in the prompt's open block", "Paris", False),
    ("<think>\nstill thinking when the budget ran out", "still thinking when the budget ran out", "", True),
    ("Paris", None, "Paris", False),
])
def test_split_thinking(text: str, thinking: str | None, answer: str, unfinished: bool) -> None:
    split = split_thinking(text, TAGS)
    assert (split.thinking, split.answer, split.unfinished) == (thinking, answer, unfinished)


def test_split_thinking_off_and_summary_counts_tokens(tiny) -> None:
    assert split_thinking(QWEN3_OUTPUT, None).answer == QWEN3_OUTPUT
    tokenizer = tiny[1]  # the Qwen2.5 tokenizer: same vocabulary as Qwen3's
    splits = [split_thinking(t, TAGS) for t in (QWEN3_OUTPUT, "<think>\nhmm", "plain")]
    summary = thinking_summary(splits, lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    block = "The guest wants a late checkout.\nSo intent: checkout."
    assert summary["think_rows"] == 2 and summary["think_unfinished"] == 1
    assert summary["think_chars_mean"] == (len(block) + len("hmm")) / 2
    count = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (block, "hmm")]
    assert count[0] > 10 and summary["think_tokens_mean"] == sum(count) / 2
    assert thinking_summary([split_thinking("plain", TAGS)], len) == {}


def test_stop_strings_end_generation_and_cut_the_answer(tiny, capsys) -> None:
    from eval.generate import generate

    model, tokenizer, prompts = tiny
    sampled = {"temperature": 1.0, "seed": 3, "max_new_tokens": 10, "batch_size": 2}  # varied text, reproducible
    free = generate(model, tokenizer, prompts, EvalSettings(**sampled), desc="free")
    assert "free" in capsys.readouterr().err  # the tqdm progress bar
    assert all(0 < n <= 10 for n in free.new_tokens) and free.tokens_per_second > 0
    text = free.texts[0]
    assert len(text) >= 6, f"the tiny model produced too little text to test with: {text!r}"
    stop = text[3:6]
    stopped = generate(model, tokenizer, prompts, EvalSettings(**sampled, stop=[stop]))
    for full, cut in zip(free.texts, stopped.texts):
        assert cut == (full[: full.index(stop)] if stop in full else full)
    assert stopped.new_tokens[0] < free.new_tokens[0]  # generation ended early, not only the text cut


def test_stop_string_does_not_match_across_the_prompt_end(tiny) -> None:
    """The prompt ends in "assistant\n" and this random model answers newlines: transformers' stop_strings would stop
    after two newlines ("\n" of the prompt + 2) and return "\n\n"; only generated text may match."""
    from eval.generate import generate

    model, tokenizer, prompts = tiny
    greedy = generate(model, tokenizer, prompts[:1], EvalSettings(max_new_tokens=6))
    assert greedy.texts == ["\n" * 6]
    stopped = generate(model, tokenizer, prompts[:1], EvalSettings(max_new_tokens=6, stop=["\n\n\n"]))
    assert stopped.texts == [""] and stopped.new_tokens == [3]


def test_sampling_is_seeded(tiny) -> None:
    from eval.generate import generate

    model, tokenizer, prompts = tiny

    def run(**settings) -> list[str]:
        return generate(model, tokenizer, prompts, EvalSettings(max_new_tokens=6, batch_size=3, **settings)).texts

    sampled = run(temperature=1.5, top_k=50, seed=1)
    assert run(temperature=1.5, top_k=50, seed=1) == sampled
    assert run(temperature=1.5, top_k=50, seed=2) != sampled  # 3 x 6 tokens from a random 151k-token model
