"""Find and load the base model and tokenizer a recipe names: hub id, local folder, or a GGUF file."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailor.errors import TailorError
from tailor.hashing import file_sha256
from tailor.runs import atomic_dir
from tailor.schema import ModelSettings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CACHE_ENV = "TAILOR_CACHE"


def cache_dir() -> Path:
    """Where converted models and tiny test checkpoints live (`$TAILOR_CACHE`, default `.cache/`)."""
    return Path(os.environ.get(CACHE_ENV, ".cache"))


def looks_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()


def gguf_path(settings: ModelSettings) -> Path:
    """The GGUF file a recipe names: inside a local folder or inside an installed Python package."""
    assert settings.gguf_file is not None
    folder = Path(settings.name_or_path).expanduser()
    if not folder.is_dir():
        spec = importlib.util.find_spec(settings.name_or_path) if settings.name_or_path.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise TailorError(f"model.name_or_path: {settings.name_or_path!r} is neither a folder nor an installed "
                              f"Python package holding {settings.gguf_file} (for the demo: make setup).")
        folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / settings.gguf_file
    if not path.is_file():
        raise TailorError(f"model.gguf_file: {path} does not exist.")
    return path


def check_model_source(settings: ModelSettings) -> None:
    """Fail early (before any download or load) when a local model source is missing."""
    if settings.gguf_file:
        gguf_path(settings)
    elif looks_local(settings.name_or_path) and not Path(settings.name_or_path).expanduser().is_dir():
        raise TailorError(f"model.name_or_path: local folder {settings.name_or_path} does not exist.")


def model_source(settings: ModelSettings) -> str:
    """A path or hub id that `from_pretrained` can load; a GGUF file is converted once into a cached folder."""
    if not settings.gguf_file:
        check_model_source(settings)
        return settings.name_or_path
    path = gguf_path(settings)
    digest = file_sha256(path)
    target = cache_dir() / "gguf" / f"{path.stem}-{digest[:12]}"
    if not (target / "config.json").is_file():
        log.info("converting %s to a cached checkpoint at %s (once)", path.name, target)
        _convert_gguf(path, target)
    return str(target)


def _convert_gguf(path: Path, target: Path) -> None:
    """Dequantize a GGUF file into an ordinary float32 safetensors checkpoint plus tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # A GGUF-loaded model carries its quantizer, which save_pretrained refuses: rebuild it plain.
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "_pre_quantization_dtype"):
        del config._pre_quantization_dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def resolve_dtype(settings: ModelSettings) -> "torch.dtype":
    """`auto` means bfloat16 on a GPU that supports it, float32 otherwise."""
    import torch

    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(settings: ModelSettings, source: str | None = None) -> "PreTrainedTokenizerBase":
    """The tokenizer of the base model (or of `source`, e.g. a saved adapter folder), with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source or model_source(settings), revision=settings.revision,
                                              trust_remote_code=settings.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise TailorError(f"model.name_or_path: the tokenizer of {settings.name_or_path} has no chat template.")
    return tokenizer


def load_model(settings: ModelSettings, quantize_4bit: bool = False, **kwargs: Any) -> "PreTrainedModel":
    """Load the base model; with `quantize_4bit` as NF4 with double quantization (QLoRA) via bitsandbytes."""
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(settings)
    if settings.trust_remote_code:
        log.warning("trust_remote_code is on: running modelling code shipped with %s", settings.name_or_path)
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype,
        )
    return AutoModelForCausalLM.from_pretrained(
        model_source(settings),
        revision=settings.revision,
        dtype=dtype,
        trust_remote_code=settings.trust_remote_code,
        attn_implementation=settings.attn_implementation,
        **kwargs,
    )
