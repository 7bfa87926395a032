"""Find and load the base model and tokenizer a recipe names: hub id, local folder, or a GGUF file."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailor.errors import TailorError
from tailor.hashing import file_sha256
from tailor.runs import atomic_dir, cache_dir
from tailor.schema import ModelSettings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
# ValueError texts from from_pretrained that mean the checkpoint cannot be loaded (others are bugs: re-raised)
LOAD_PROBLEMS = ("trust_remote_code", "Unrecognized", "does not recognize", "safetensors", "does not appear to have",
                 "model type")


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
    target = cache_dir() / "gguf" / f"{path.stem}-{file_sha256(path)[:12]}"
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


def resolve_dtype(settings: ModelSettings, for_generation: bool = False) -> "torch.dtype":
    """The weights dtype; `auto`: the device's native precision on GPUs (`tailor.precision`), float32 on CPUs except
    `for_generation`, which gets bfloat16 where the CPU computes it natively."""
    import torch

    from tailor.precision import device_precision

    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)
    if torch.cuda.is_available() or for_generation:
        return device_precision().torch_dtype
    return torch.float32


def load_tokenizer(settings: ModelSettings, source: str | None = None) -> "PreTrainedTokenizerBase":
    """The tokenizer of the base model (or of `source`, e.g. an adapter folder), with a pad token; it must fit."""
    from transformers import AutoTokenizer

    where = source or model_source(settings)
    warn_remote_code(settings, where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, revision=settings.revision,
                                                  trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise _cannot(f"load a tokenizer from {where}", err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise TailorError(f"model.name_or_path: the tokenizer of {settings.name_or_path} has no chat template.")
    _check_vocab_fits(settings, where, tokenizer)
    return tokenizer


def load_model(settings: ModelSettings, quantize_4bit: bool = False, for_generation: bool = False,
               **kwargs: Any) -> "PreTrainedModel":
    """Load the base model (`quantize_4bit`: NF4 with double quantization for QLoRA), safetensors only unless the
    recipe sets model.allow_pickle_weights."""
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(settings, for_generation)
    source = model_source(settings)
    warn_remote_code(settings, source)
    check_weight_files(settings, source)
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(
            source, revision=settings.revision, dtype=dtype, trust_remote_code=settings.trust_remote_code,
            attn_implementation=settings.attn_implementation,
            use_safetensors=None if settings.allow_pickle_weights else True, **kwargs)
    except (OSError, ValueError) as err:
        if isinstance(err, ValueError) and not any(k in str(err) for k in LOAD_PROBLEMS):
            raise
        raise _cannot(f"load the model from {source}", err) from None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weight_files(settings: ModelSettings, source: str) -> None:
    """A local model folder must hold safetensors weights, or the recipe must allow pickle weights."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return  # a hub id: from_pretrained(use_safetensors=True) refuses pickle-only repositories itself
    if not (folder / "config.json").is_file():
        raise TailorError(f"model.name_or_path: {folder} has no config.json; it is not a transformers model folder.")
    if any(folder.glob("*.safetensors")):
        return
    pickled = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and "training_args" not in p.name]
    if pickled and not settings.allow_pickle_weights:
        raise TailorError(f"model.name_or_path: {folder} holds its weights only as pickle "
                          f"({', '.join(sorted(pickled))}), which can run arbitrary code when loaded. Convert them to "
                          "safetensors, or, if you trust where they come from, set model.allow_pickle_weights: true.")
    if not pickled:
        raise TailorError(f"model.name_or_path: {folder} has no weights (no *.safetensors file).")


def warn_remote_code(settings: ModelSettings, source: str) -> None:
    """With trust_remote_code on, say whose Python code is about to run (the files, when the folder is local)."""
    if not settings.trust_remote_code:
        return
    folder = Path(source).expanduser()
    files = sorted(p.name for p in folder.glob("*.py")) if folder.is_dir() else []
    origin = (f"local folder {folder.resolve()}" if folder.is_dir()
              else f"hub repository {source} (revision {settings.revision or 'main, unpinned'})")
    shown = f": {', '.join(files)}" if files else ""
    log.warning("model.trust_remote_code is true: running Python code shipped with the %s%s", origin, shown)


def check_target_modules(settings: ModelSettings, target_modules: Any) -> None:
    """Every module a recipe's peft.target_modules names must exist in the model (checked on the meta device)."""
    if target_modules == "all-linear":
        return
    names = module_names(settings)
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if n.rsplit(".", 1)[-1].endswith("proj")})
        raise TailorError(f"peft.target_modules: {', '.join(missing)} not found in {settings.name_or_path} "
                          f"(its projection modules: {', '.join(leaves) or 'none'}). Use names from that list, or "
                          "all-linear.")


def module_names(settings: ModelSettings) -> list[str]:
    """Module names of the recipe's architecture, from its config only (meta device, no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    source = model_source(settings)
    warn_remote_code(settings, source)
    try:
        config = AutoConfig.from_pretrained(source, revision=settings.revision,
                                            trust_remote_code=settings.trust_remote_code)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise _cannot(f"read the model config of {source}", err) from None
    return [name for name, _ in model.named_modules()]


def _check_vocab_fits(settings: ModelSettings, source: str, tokenizer: Any) -> None:
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        return
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError:
        raise TailorError(f"model.name_or_path: {config_file} is not valid JSON.") from None
    vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise TailorError(f"model.name_or_path: the tokenizer in {source} has {len(tokenizer)} tokens but the model's "
                          f"embeddings have {vocab} (config.json vocab_size): the tokenizer belongs to another model. "
                          "Put the model's own tokenizer files in the folder.")


def _cannot(what: str, err: BaseException) -> TailorError:
    """The error for a failed load: what failed, the cause's first line, and a hint when remote code is needed."""
    lines = str(err).strip().splitlines()
    cause = lines[0][:300] if lines else type(err).__name__
    hint = (" The checkpoint ships its own Python code; set model.trust_remote_code: true only if you trust its "
            "source.") if "trust_remote_code" in str(err) else ""
    return TailorError(f"model.name_or_path: cannot {what} ({cause}).{hint}")
