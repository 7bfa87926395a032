"""The recipe schema: the single source of truth for every setting of every stage.

Every model forbids unknown keys, so a typo is an error, never a silently ignored setting.
Paths inside a recipe are resolved relative to the recipe file that names them (see `tailor.recipe`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError


def also(name: str, *library_names: str) -> AliasChoices:
    """A key's accepted names: tailor's own first (used in resolved recipes), then trl/transformers/peft synonyms."""
    return AliasChoices(name, *library_names)


def setting_names(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Each field of a recipe section with all its accepted names, its own first."""
    out = {}
    for field, info in model.model_fields.items():
        alias = info.validation_alias
        out[field] = tuple(str(n) for n in alias.choices) if isinstance(alias, AliasChoices) else (field,)
    return out


def field_named(model: type[BaseModel], key: str) -> str | None:
    """The field a key (its own name or a synonym) sets in a recipe section, or None."""
    return next((field for field, names in setting_names(model).items() if key in names), None)


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_setting(cls, data: Any) -> Any:
        """A setting given under two of its names (lr and learning_rate) is an error naming both."""
        if isinstance(data, dict):
            for field, names in setting_names(cls).items():
                given = [name for name in names if name in data]
                if len(given) > 1:
                    raise PydanticCustomError(
                        "tailor_synonyms", "{key} and {other} are two names of the same setting ({field}): give "
                        "only one", {"key": given[1], "other": given[0], "field": field})
        return data


class ModelSettings(Strict):
    """Which base model to fine-tune and how to load it."""

    name_or_path: str = Field(validation_alias=also("name_or_path", "model_name_or_path"),
                              description="Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local folder, or an "
                              "installed Python package that ships a GGUF file (with gguf_file).")
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path, converted once to a checkpoint.")
    revision: str | None = Field(None, validation_alias=also("revision", "model_revision"),
                                 description="Hub revision (branch, tag or commit) to pin.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto = the GPU's native precision (bfloat16 from compute capability 8.0, "
        "float16 below), float32 for training on CPU (eval generates in bfloat16 on CPUs with native bf16).")
    trust_remote_code: bool = Field(False, description="Run modelling code shipped with the checkpoint (if trusted).")
    allow_pickle_weights: bool = Field(False, description="Also load weights stored as pickle (pytorch_model.bin, "
                                       "*.pt), which can run code when loaded. Off: safetensors only.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


class FieldMap(Strict):
    """Column names in the source files, for each supported format."""

    messages: str = "messages"
    role: str = Field("role", description="Role key inside each message (ShareGPT: from).")
    content: str = Field("content", description="Text key inside each message (ShareGPT: value).")
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    prompt: str = "prompt"
    completion: str = "completion"
    text: str = "text"
    chosen: str = Field("chosen", description="Preferred answer (a string or assistant message list), preference.")
    rejected: str = Field("rejected", description="Dispreferred answer, preference format.")
    label: str = Field("label", description="true = desirable completion, false = undesirable "
                       "(unpaired_preference, KTO).")
    system: str | None = Field(None, description="Optional column holding a per-row system prompt.")


Role = Literal["system", "user", "assistant", "tool"]
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "model": "assistant", "tool": "tool", "function": "tool",
                  "observation": "tool", "function_call": "assistant"}


class DataSource(Strict):
    """One input: a file (JSONL, CSV, Parquet), a `datasets` folder saved with save_to_disk, or a hub dataset."""

    path: str | None = Field(None, description="File or save_to_disk folder, relative to the recipe file.")
    hub: str | None = Field(None, description="Hub dataset id (needs network), instead of path.")
    split: str = Field("train", description="Split to read from a hub dataset or a DatasetDict folder.")
    format: Literal["messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference",
                    "unpaired_preference"] = Field(
        "messages", description="messages: OpenAI chat rows; sharegpt: from/value turns; alpaca: "
        "instruction/input/output; prompt_completion: prompt/completion; text: plain text (continued pretraining); "
        "preference: prompt (or messages) + chosen + rejected (DPO, ORPO, KTO); unpaired_preference: prompt (or "
        "messages) + completion + label (KTO).")
    file_type: Literal["auto", "jsonl", "csv", "parquet", "hf_disk"] = "auto"
    fields: FieldMap = Field(default_factory=FieldMap)
    role_map: dict[str, Role] = Field(default_factory=dict, description="Source role names -> tailor roles.")
    max_rows: int | None = Field(None, ge=1, description="Use at most this many rows of this source.")
    weight: float = Field(1.0, gt=0.0, le=100.0, description="Training mix weight: 2.0 repeats rows, 0.5 keeps half.")

    @model_validator(mode="before")
    @classmethod
    def _sharegpt_defaults(cls, data: Any) -> Any:
        """ShareGPT rows keep turns in `conversations` with `from`/`value` keys unless the recipe says otherwise."""
        if isinstance(data, dict) and data.get("format") == "sharegpt" and isinstance(data.get("fields", {}), dict):
            defaults = {"messages": "conversations", "role": "from", "content": "value"}
            data = {**data, "fields": {**defaults, **data.get("fields", {})}}
        return data

    @model_validator(mode="after")
    def _one_location(self) -> "DataSource":
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path (a local file or folder) or hub (a hub dataset id)")
        return self


PiiType = Literal["EMAIL", "PHONE", "CARD", "IBAN", "IP"]


class PiiSettings(Strict):
    """Redaction of personal data, on by default: values become typed placeholders such as <EMAIL>."""

    enabled: bool = True
    types: list[PiiType] = Field(default_factory=lambda: ["EMAIL", "PHONE", "CARD", "IBAN", "IP"])
    patterns: dict[str, str] = Field(default_factory=dict, description="Extra regexes: {EMPLOYEE_ID: 'EMP-\\d{6}'}")


class DedupSettings(Strict):
    exact: bool = Field(True, description="Drop rows whose conversation is identical to an earlier row.")
    near: bool = Field(True, description="Drop rows whose text is a near-duplicate (MinHash) of an earlier row.")
    threshold: float = Field(0.9, gt=0.0, le=1.0, description="Estimated Jaccard similarity of word 3-grams.")


class ContaminationSettings(Strict):
    """Removal of held-out rows that overlap a training row (they would flatter the eval)."""

    enabled: bool = True
    ngram: int = Field(8, ge=1, description="Word n-gram size.")
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="Share of a held-out row's n-grams found in training.")


class LanguageSettings(Strict):
    """Keep only rows in these languages (detected offline by py3langid on the row's own words, system prompt
    left out); the others are rejected with the language found."""

    keep: list[str] = Field(min_length=1, description="ISO 639-1 codes to keep, e.g. [en, de].")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="Lowest (normalised) probability to keep a row.")


class CleanSettings(Strict):
    pii: PiiSettings = Field(default_factory=PiiSettings)
    language: LanguageSettings | None = Field(None, description="Optional language filter, e.g. {keep: [en]}.")
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    min_tokens: int | None = Field(None, ge=1, description="Drop rows shorter than this (rendered tokens).")
    max_tokens: int | None = Field(None, ge=1, description="Drop rows longer than this instead of truncating.")
    filters: list[str] = Field(default_factory=list, description="Filters 'module.path:function' in the project: "
                               "messages -> True to keep or a reason to drop.")


SET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
HASH_SPLIT_SET = "heldout"  # the name of the set held out from `sources` by content hash
# W&B keys are eval/<set>/<metric>, next to eval/<variant>/..., eval/delta/... and eval/gate/...
RESERVED_SET_NAMES = {"base", "tuned", "delta", "ci", "vs", "cost", "gate", "retention", "report", "predictions"}


class DataSettings(Strict):
    """Where the data comes from, how it is cleaned, split and rendered."""

    sources: list[DataSource] = Field(min_length=1)
    eval_sets: dict[str, list[DataSource]] = Field(
        default_factory=dict, description="Named evaluation sets read like sources, never split or trained on "
        "(overlapping training rows are removed). E.g. {test: [{path: test.csv, format: prompt_completion}]}.")
    system_prompt: str | None = Field(None, description="System message added to rows that have none.")
    heldout_fraction: float | None = Field(0.1, ge=0.0, lt=1.0, description="Share of sources held out by content "
                                           "hash as the eval set `heldout`; 0 or null: none (needs data.eval_sets).")
    split_seed: int = Field(0, description="Salt of the content hash that assigns rows to train or held-out.")
    max_train_rows: int | None = Field(None, ge=1, description="Cap on training rows (first by hash order).")
    max_heldout_rows: int | None = Field(None, ge=1, description="Cap on held-out rows (first by hash order).")
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0, description="Fail when a larger share of rows is bad "
                                    "input (bad rows are kept in rejected.jsonl).")
    clean: CleanSettings = Field(default_factory=CleanSettings)
    contamination: ContaminationSettings = Field(default_factory=ContaminationSettings)
    template: str | None = Field(None, description="Jinja chat template file to use instead of the tokenizer's.")
    template_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra chat-template variables.")
    roles_to_train: list[Role] = Field(default_factory=lambda: ["assistant"], min_length=1,
                                       description="Roles whose turns carry the loss (never a train: false message).")
    num_proc: int = Field(1, ge=1, description="Processes for rendering and tokenizing.")

    @field_validator("eval_sets")
    @classmethod
    def _set_names(cls, sets: dict[str, list[DataSource]]) -> dict[str, list[DataSource]]:
        for name, sources in sets.items():
            if not re.match(SET_NAME, name):
                raise ValueError(f"eval set name {name!r}: use letters, digits, '_' and '-' (it names a file)")
            if name == HASH_SPLIT_SET or name in RESERVED_SET_NAMES:
                raise ValueError(f"eval set name {name!r} is reserved"
                                 + (" for the hash split of sources (data.heldout_fraction)"
                                    if name == HASH_SPLIT_SET else ""))
            if not sources:
                raise ValueError(f"eval set {name!r} lists no source: give at least one file")
        return sets

    @property
    def hash_split(self) -> bool:
        """Whether rows of `sources` are held out by content hash (as the set `heldout`)."""
        return bool(self.heldout_fraction)

    def set_names(self) -> list[str]:
        """Every evaluation set: `heldout` (the hash split) first when there is one, then the named sets."""
        return ([HASH_SPLIT_SET] if self.hash_split else []) + list(self.eval_sets)

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> "DataSettings":
        if not self.hash_split and not self.eval_sets:
            raise ValueError("data.heldout_fraction is 0 and data.eval_sets is empty: nothing to evaluate on. "
                             "Set heldout_fraction (e.g. 0.1) or name an eval set")
        return self


class PeftSettings(Strict):
    """The adapter: LoRA on full-precision weights, or QLoRA on a 4-bit NF4 base."""

    method: Literal["lora", "qlora"] = "lora"
    r: int = Field(16, ge=1, validation_alias=also("r", "lora_r"))
    alpha: int = Field(32, ge=1, validation_alias=also("alpha", "lora_alpha"))
    dropout: float = Field(0.05, ge=0.0, lt=1.0, validation_alias=also("dropout", "lora_dropout"))
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", validation_alias=also("target_modules", "lora_target_modules"))
    use_rslora: bool = False
    use_dora: bool = False
    init_adapter: str | None = Field(None, description="Start from this trained adapter folder (e.g. "
                                     "runs/hotel-demo/adapter, relative to the working directory) and train it on.")
    from_run: str | None = Field(None, description="Start from the adapter of this earlier run (the folder "
                                 "<output_dir>/<from_run>/adapter); instead of init_adapter.")
    moe_experts: Literal["frozen", "targeted"] = Field(
        "frozen", description="Routed experts of MoE models: frozen = no LoRA on them; targeted = LoRA on every "
        "expert's weights too (peft target_parameters, needs dropout 0). Ignored for dense models.")

    @model_validator(mode="after")
    def _targeted_experts_need_no_dropout(self) -> "PeftSettings":
        if self.moe_experts == "targeted" and self.dropout != 0:
            raise ValueError("peft.moe_experts=targeted puts LoRA on fused expert weights (peft ParamWrapper), which "
                             "does not support dropout: set peft.dropout: 0.0")
        if self.init_adapter is not None and self.from_run is not None:
            raise PydanticCustomError("tailor_init_twice", "give init_adapter or from_run, not both",
                                      {"key": "from_run"})
        return self


Method = Literal["sft", "dpo", "orpo", "kto", "grpo"]
PREFERENCE_METHODS = ("dpo", "orpo", "kto")


class TrainingSettings(Strict):
    """Trainer knobs, mapped onto trl's configs in train/config.py. Short names, each also accepted under trl's
    name (learning_rate, num_train_epochs, ...); any other field of the method's trl config goes in `extra`."""

    method: Method = Field("sft", description="sft: supervised (trl SFTTrainer); dpo, orpo, kto: preference tuning "
                           "on preference data; grpo: reinforcement learning with eval metrics as rewards (the "
                           "recipe's grpo section). Method settings: the top-level dpo/orpo/kto/grpo sections.")
    lr: float = Field(2e-4, gt=0.0, validation_alias=also("lr", "learning_rate"))
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", validation_alias=also("lr_scheduler", "lr_scheduler_type"))
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Share of the steps spent warming up.")
    epochs: float = Field(1.0, gt=0.0, validation_alias=also("epochs", "num_train_epochs"))
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = run all epochs.")
    batch_size: int = Field(4, ge=1, validation_alias=also("batch_size", "per_device_train_batch_size"),
                            description="Micro batch per device.")
    grad_accum: int = Field(1, ge=1, validation_alias=also("grad_accum", "gradient_accumulation_steps"))
    max_length: int = Field(1024, ge=8, description="Sequences longer than this (in tokens) are truncated.")
    packing: bool = Field(True, description="SFT: pack rows into max_length sequences (trl BFD, padding-free); "
                          "batch_size then counts packed sequences. false: one row per sequence, padded. The other "
                          "methods batch one example (pair, prompt) per row.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    mixed_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision (autocast). auto = what the device runs natively, measured "
        "(tailor/precision.py; `make doctor` shows the choice).")
    optim: str = Field("auto", description="auto = fused AdamW, paged 8-bit AdamW for QLoRA on GPUs; or any "
                       "transformers optimizer name.")
    logging_steps: int = Field(5, ge=1)
    seed: int = 42
    strategy: Literal["auto", "single", "ddp", "fsdp", "zero2", "zero3"] = Field(
        "auto", description="Launch profile (train/profiles/); auto = single or ddp. make STRATEGY=... wins.")
    save_steps: int = Field(50, ge=1, description="Save a full checkpoint every N optimizer steps.")
    save_total_limit: int = Field(2, ge=1, description="Keep only the last K checkpoints.")
    resume: bool = Field(True, description="Resume from the run's latest checkpoint; false: start over.")
    liger: Literal["auto", "on", "off"] = Field("auto", description="Liger fused kernels; auto = on GPUs if installed.")
    torch_compile: bool = Field(False, description="torch.compile the model (slow first steps; opt-in).")
    compact_lm_head: bool = Field(True, description="Project only the trained positions through the LM head, on "
                                  "CPUs too (trl does it on GPUs).")
    collective_timeout_s: int = Field(1800, ge=10, validation_alias=also("collective_timeout_s", "ddp_timeout"),
                                      description="A collective waiting longer fails the job, naming the stalled rank.")
    eval_steps: int | None = Field(None, ge=1, description="Held-out loss every N optimizer steps on eval_rows rows "
                                   "of the first eval set (W&B eval/loss; cost: docs/training.md).")
    eval_rows: int = Field(64, ge=1, description="Rows scored at each eval_steps (always the same first N).")
    keep_best: bool = Field(False, validation_alias=also("keep_best", "load_best_model_at_end"),
                            description="Keep the checkpoint with the lowest held-out loss (needs eval_steps).")
    extra: dict[str, Any] = Field(default_factory=dict, description="Any other field of the method's trl config "
                                  "(SFTConfig, DPOConfig, ...), passed as given, e.g. {neftune_noise_alpha: 5}; "
                                  "fields tailor sets itself are refused.")

    @property
    def padding_free(self) -> bool:
        """Whether batches are flattened without padding (not a recipe key): packing decides (SFT), or trl's
        padding_free given in extra."""
        return (self.packing and self.method == "sft") or bool(self.extra.get("padding_free"))

    @model_validator(mode="after")
    def _extra_is_trl_config(self) -> "TrainingSettings":
        config = TRL_CONFIGS[self.method]
        set_here = {**{k: v for k, v in SFT_SET_BY_TAILOR.items() if self.method not in NOT_SET_FOR.get(k, ())},
                    **METHOD_SET_BY_TAILOR[self.method]}
        for key in self.extra:
            if key in set_here:
                raise PydanticCustomError("tailor_extra_set", "tailor sets {config}.{name} itself: use {use}",
                                          {"key": f"extra.{key}", "name": key, "config": config, "use": set_here[key]})
        if not self.extra:
            return self
        fields = trl_config_fields(self.method)  # imports trl: only for a recipe that uses extra
        for key in self.extra:
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise PydanticCustomError("tailor_extra_unknown", "not a field of trl's {config}{hint}",
                                          {"key": f"extra.{key}", "hint": hint, "config": config})
        return self

    @model_validator(mode="after")
    def _sft_only(self) -> "TrainingSettings":
        if self.method != "sft" and self.packing and "packing" in self.model_fields_set:
            raise PydanticCustomError("tailor_packing", "packing applies to method sft only ({method} batches one "
                                      "example per row): remove it", {"key": "packing", "method": self.method})
        if self.method != "sft" and self.eval_steps is not None:
            raise PydanticCustomError("tailor_eval_steps", "the held-out loss during training is SFT's; {method} "
                                      "logs its own signals (rewards, margins) every logging_steps: remove it",
                                      {"key": "eval_steps", "method": self.method})
        return self

    @model_validator(mode="after")
    def _best_needs_eval(self) -> "TrainingSettings":
        if self.keep_best and self.eval_steps is None:
            raise ValueError("training.keep_best picks the checkpoint with the lowest held-out loss: it needs "
                             "training.eval_steps (e.g. 25)")
        if self.keep_best and self.save_steps % self.eval_steps:
            raise ValueError(f"training.keep_best: save_steps ({self.save_steps}) must be a multiple of eval_steps "
                             f"({self.eval_steps}) so every saved checkpoint has a held-out loss")
        return self


# SFTConfig fields train/config.py sets from the recipe, with the key that decides each (training.extra refuses them).
SFT_SET_BY_TAILOR = {
    "output_dir": "output_dir and name (the run folder)", "learning_rate": "training.lr",
    "lr_scheduler_type": "training.lr_scheduler", "warmup_steps": "training.warmup_ratio",
    "num_train_epochs": "training.epochs", "max_steps": "training.max_steps",
    "per_device_train_batch_size": "training.batch_size", "per_device_eval_batch_size": "training.batch_size",
    "gradient_accumulation_steps": "training.grad_accum", "max_length": "training.max_length",
    "packing": "training.packing", "gradient_checkpointing": "training.gradient_checkpointing",
    "gradient_checkpointing_kwargs": "training.gradient_checkpointing", "weight_decay": "training.weight_decay",
    "max_grad_norm": "training.max_grad_norm", "optim": "training.optim", "use_liger_kernel": "training.liger",
    "torch_compile": "training.torch_compile", "logging_steps": "training.logging_steps",
    "logging_first_step": "training.logging_steps", "seed": "training.seed", "data_seed": "training.seed",
    "bf16": "training.mixed_precision", "fp16": "training.mixed_precision", "use_cpu": "the device (tailor decides)",
    "save_strategy": "training.save_steps", "save_steps": "training.save_steps",
    "save_total_limit": "training.save_total_limit", "save_only_model": "training.resume (tailor saves everything "
    "for an exact resume)", "eval_strategy": "training.eval_steps", "eval_steps": "training.eval_steps",
    "prediction_loss_only": "training.eval_steps", "load_best_model_at_end": "training.keep_best",
    "metric_for_best_model": "training.keep_best", "greater_is_better": "training.keep_best",
    "report_to": "tracking.backend and tracking.mode", "run_name": "tracking.run_name",
    "dataset_num_proc": "data.num_proc (data_prep tokenizes)", "ddp_find_unused_parameters": "training.strategy",
    "ddp_timeout": "training.collective_timeout_s", "include_num_input_tokens_seen": "training.logging_steps",
    "disable_tqdm": "the log level (TAILOR_LOG)",
}


# Fields of each other method's trl config that tailor sets from the method's own recipe section.
METHOD_SET_BY_TAILOR: dict[str, dict[str, str]] = {
    "sft": {},
    "dpo": {"beta": "dpo.beta", "loss_type": "dpo.loss_type", "loss_weights": "dpo.loss_weights",
            "label_smoothing": "dpo.label_smoothing"},
    "orpo": {"beta": "orpo.beta"},
    "kto": {"beta": "kto.beta", "desirable_weight": "kto.desirable_weight",
            "undesirable_weight": "kto.undesirable_weight"},
    "grpo": {"beta": "grpo.beta", "loss_type": "grpo.loss_type", "num_generations": "grpo.num_generations",
             "max_completion_length": "grpo.max_completion_length", "temperature": "grpo.temperature",
             "top_p": "grpo.top_p", "reward_weights": "grpo.rewards (weight of each)",
             "scale_rewards": "grpo.scale_rewards", "use_vllm": "grpo.vllm", "vllm_mode": "grpo.vllm",
             "vllm_server_base_url": "grpo.vllm_server_url", "log_completions": "tracking.log_samples"},
}
# Shared trl arguments tailor does not set for some methods: their config lacks the field, or (GRPO, ORPO: batches
# without input_ids) transformers cannot count input tokens.
NOT_SET_FOR = {"packing": ("dpo", "orpo", "kto", "grpo"), "max_length": ("grpo",), "dataset_num_proc": ("grpo",),
               "include_num_input_tokens_seen": ("orpo", "grpo")}
TRL_CONFIGS = {"sft": "SFTConfig", "dpo": "DPOConfig", "orpo": "ORPOConfig", "kto": "KTOConfig",
               "grpo": "GRPOConfig"}


def trl_config_class(method: str) -> type:
    """trl's config class of a training method (imports trl)."""
    import trl

    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig
    return getattr(trl, TRL_CONFIGS[method])


def trl_config_fields(method: str = "sft") -> set[str]:
    """The init fields of the method's trl config (imports trl)."""
    return {f.name for f in dataclasses.fields(trl_config_class(method)) if f.init}


def sft_config_fields() -> set[str]:
    """The init fields of trl's SFTConfig (imports trl)."""
    return trl_config_fields("sft")


MetricName = Literal["exact_match", "exact_match_normalized", "token_f1", "rouge_l", "chrf", "json_valid",
                     "json_schema_valid", "json_field_accuracy", "regex_match", "classification"]


class JudgeSettings(Strict):
    """An LLM judge behind any OpenAI-compatible /v1/chat/completions endpoint (e.g. an in-house vLLM server)."""

    url: str = Field(description="Base URL of the endpoint, e.g. http://judge.internal:8000/v1.")
    model: str = Field(description="Model name the endpoint serves.")
    rubric: str | None = Field(None, description="Grading instructions; default: tailor's fixed rubric "
                               "(correctness, completeness, format, no invention).")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key "
                                    "(the key itself is never written anywhere).")
    max_rows: int | None = Field(None, ge=1, description="Judge only the first N rows.")
    timeout_s: float = Field(60.0, gt=0.0)


class GateSettings(Strict):
    """The promotion verdict: PROMOTE when tuned beats base on one metric of one set beyond doubt, and the
    retention sets (eval.retention) lost no more than allowed; HOLD otherwise."""

    metric: str = Field(description="Metric of eval.metrics (or a custom metric) whose paired interval decides.")
    set: str | None = Field(None, description="Eval set it is measured on; default: the first set.")
    min_delta: float = Field(0.0, description="PROMOTE needs the whole paired interval of tuned - base above this.")
    retention_max_drop: float | None = Field(None, ge=0.0, description="Largest allowed increase of the mean "
                                             "per-row loss (nats/token) on each retention set, tuned - base: HOLD "
                                             "when the upper end of its paired interval is above it.")


class RetentionSettings(Strict):
    """General-text loss of base vs tuned on small licensed sets shipped in eval/general_data/ (offline)."""

    sets: list[str] = Field(default_factory=lambda: ["gsm8k"], min_length=1,
                            description="Names of eval/general_data/<name>.jsonl (question/answer rows).")
    max_rows: int | None = Field(200, ge=1, description="Rows of each set used (the first N).")
    max_length: int = Field(512, ge=16, description="Tokens of a rendered row (question + answer); longer rows "
                            "are cut, a row with no answer token left is skipped (counted).")


class EvalSettings(Strict):
    """Held-out evaluation of base and tuned model."""

    metrics: list[MetricName] = Field(default_factory=lambda: ["exact_match"], min_length=1)
    custom_metrics: list[str] = Field(default_factory=list, description="Own per-row metrics "
                                      "'module.path:function' inside the project: f(prediction, reference) -> "
                                      "a score in [0, 1], or None when the row does not apply.")
    json_fields: list[str] | None = Field(None, description="Fields scored by json_field_accuracy; "
                                          "default: every key of each reference object.")
    json_schema: dict[str, Any] | None = Field(None, description="JSON Schema for json_schema_valid.")
    regex: str | None = Field(None, description="Pattern the whole answer must match, for regex_match.")
    labels: list[str] | None = Field(None, description="Label set for classification (accuracy, macro-F1, "
                                     "confusion table).")
    bootstrap_resamples: int = Field(10_000, ge=100, description="Paired bootstrap resamples for the intervals.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, description="Sample only among the k likeliest tokens.")
    seed: int = Field(0, description="Seed of sampled generation (temperature > 0).")
    stop: list[str] = Field(default_factory=list, description="Stop strings: each answer is cut at the first one.")
    think_tags: tuple[str, str] | None = Field(("<think>", "</think>"), description="Reasoning block of thinking "
                                               "models: metrics use the answer after it, its length is reported. "
                                               "null: score the whole output.")
    backend: Literal["auto", "hf", "vllm"] = Field("auto", description="Generation engine; auto = vLLM when it "
                                                   "is installed and a GPU is present, else transformers.")
    judge: JudgeSettings | None = Field(None, description="Pairwise LLM judge of tuned vs the other variants.")
    general_tasks: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks (names or "
                                     "local task YAML files) run on base and tuned to catch lost general ability.")
    general_limit: int | None = Field(None, ge=1, description="Examples per general task (lm_eval --limit).")
    max_rows: int | None = Field(None, ge=1, description="Evaluate only the first N held-out rows.")
    compare_base: bool = Field(True, description="Also evaluate the base model on the same rows.")
    sets: list[str] | None = Field(None, description="Evaluate only these sets (heldout and/or names of "
                                   "data.eval_sets); default: all. EVAL_SETS=a,b in the environment wins.")
    gate: GateSettings | None = Field(None, description="Promotion verdict PROMOTE/HOLD, e.g. {metric: exact_match, "
                                      "set: test, min_delta: 0.0}; `python -m eval --gate` exits 3 on HOLD.")
    retention: RetentionSettings | None = Field(None, description="Retention guard: loss of base vs tuned on "
                                                "general text, e.g. {sets: [gsm8k], max_rows: 200}.")


DpoLoss = Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "exo_pair", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm", "sft"]


class DpoSettings(Strict):
    """Direct preference optimisation (trl DPOTrainer) on chosen/rejected pairs. The reference model is the starting
    point: the base model, or the `peft.init_adapter` it starts from (trl keeps a frozen copy of that adapter)."""

    beta: float = Field(0.1, gt=0.0, description="Strength of the pull towards the reference model (DPO paper: "
                        "0.1-0.5; lower moves further).")
    loss_type: DpoLoss | list[DpoLoss] = Field(
        "sigmoid", description="trl's DPO loss; sigmoid = the DPO paper's. A list combines losses with "
        "loss_weights, e.g. [sigmoid, sft] (RPO: DPO plus the chosen answers' SFT loss, which keeps their likelihood "
        "from falling).")
    loss_weights: list[float] | None = Field(None, description="Weight of each loss of a loss_type list "
                                             "(default: 1 each).")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="Assumed share of flipped labels (robust, "
                                   "exo_pair, aot).")

    @model_validator(mode="after")
    def _weights_match(self) -> "DpoSettings":
        losses = self.loss_type if isinstance(self.loss_type, list) else [self.loss_type]
        if self.loss_weights is not None and len(self.loss_weights) != len(losses):
            raise ValueError(f"dpo.loss_weights has {len(self.loss_weights)} weights for {len(losses)} loss types")
        if self.label_smoothing and not set(losses) & {"robust", "exo_pair", "aot"}:
            raise PydanticCustomError("tailor_smoothing", "trl's {losses} loss ignores label_smoothing (used by "
                                      "robust, exo_pair and aot): set dpo.loss_type: robust, or remove it",
                                      {"key": "label_smoothing", "losses": "/".join(losses)})
        if "exo_pair" in losses and not self.label_smoothing:
            raise PydanticCustomError("tailor_smoothing", "exo_pair needs label_smoothing > 0 (e.g. 1e-3)",
                                      {"key": "label_smoothing"})
        return self


class OrpoSettings(Strict):
    """Odds-ratio preference optimisation (trl ORPOTrainer): SFT on chosen plus an odds-ratio penalty on rejected,
    no reference model."""

    beta: float = Field(0.1, gt=0.0, description="Weight of the odds-ratio term (the ORPO paper's lambda).")


class KtoSettings(Strict):
    """Kahneman-Tversky optimisation (trl KTOTrainer) on unpaired desirable/undesirable completions (thumbs
    up/down); preference pairs are unpaired into one of each."""

    beta: float = Field(0.1, gt=0.0)
    desirable_weight: float = Field(1.0, gt=0.0, description="Loss weight of desirable rows; the KTO paper keeps "
                                    "desirable_weight x n_desirable / (undesirable_weight x n_undesirable) in 1-4/3.")
    undesirable_weight: float = Field(1.0, gt=0.0)


REWARD_FUNCTION = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class RewardSettings(Strict):
    """One reward: a metric of eval.metrics' kind, or a project function 'module.path:function' with the same
    signature as a custom metric: f(prediction, reference) -> score in [0, 1] (None = not applicable, counts 0)."""

    name: str = Field(description="A built-in metric (exact_match, json_valid, json_field_accuracy, classification, "
                      "regex_match, token_f1, ...) or 'module.path:function' inside the project.")
    weight: float = Field(1.0, description="Weight in the summed reward.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        metrics = list(get_args(MetricName))
        if name in metrics or re.match(REWARD_FUNCTION, name):
            return name
        close = difflib.get_close_matches(name, metrics, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown reward {name!r}{hint}: name a metric ({', '.join(metrics)}) or a project "
                         "function 'module.path:function'")


class GrpoSettings(Strict):
    """Group relative policy optimisation (trl GRPOTrainer): sample num_generations answers per prompt, score them
    with the rewards against the row's reference, and move towards the better ones."""

    rewards: list[RewardSettings] = Field(default_factory=list, description="What is optimised, e.g. "
                                          "[{name: json_field_accuracy, weight: 1.0}, json_valid]; the same "
                                          "functions eval reports.")
    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt (the group); trl's default is 8.")
    max_completion_length: int = Field(128, ge=1, description="Tokens generated per answer.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the generations.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    beta: float = Field(0.0, ge=0.0, description="KL penalty towards the reference model; trl's default 0 (no "
                        "reference model, as in DAPO and Dr. GRPO); e.g. 0.04 as in the DeepSeekMath paper.")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("dapo", description="trl's loss normalisation.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Divide advantages by the reward "
                                                             "std of the group, of the batch, or not at all.")
    vllm: Literal["auto", "off", "colocate", "server"] = Field(
        "auto", description="Generation engine: auto = vLLM colocated on GPUs when it is installed, else "
        "transformers generate (always on CPU).")
    vllm_server_url: str | None = Field(None, description="For vllm: server, the `trl vllm-serve` endpoint.")

    @model_validator(mode="after")
    def _server_url(self) -> "GrpoSettings":
        if (self.vllm == "server") != (self.vllm_server_url is not None):
            raise ValueError("grpo.vllm: server needs grpo.vllm_server_url, and the url needs vllm: server")
        return self


METHOD_SECTIONS = ("dpo", "orpo", "kto", "grpo")


class ApiPrice(Strict):
    """A paid API's price in currency units per 1M tokens, to compare with the cost of the tuned model."""

    input: float = Field(ge=0.0, description="Price per 1M prompt tokens.")
    output: float = Field(ge=0.0, description="Price per 1M generated tokens.")


class TrackingSettings(Strict):
    """Weights & Biases logging; offline by default, so nothing leaves the machine unless asked."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    backend: Literal["wandb", "trackio"] = Field(
        "wandb", description="Tracking sink. trackio needs its package installed (see docs/tracking.md).")
    gpu_hour_price: float | None = Field(None, ge=0.0, description="Price of one GPU-hour (one CPU-hour on CPU) for "
                                         "the cost in run.json and compare; default: env TAILOR_GPU_HOUR_PRICE.")
    api_price_per_1m_tokens: ApiPrice | None = Field(None, description="Price of a paid API ({input, output} per 1M "
                                                     "tokens): shows what the same eval would have cost there.")
    project: str = "tailor"
    entity: str | None = None
    run_name: str | None = Field(None, description="W&B group name; defaults to the recipe name.")
    tags: list[str] = Field(default_factory=list)
    log_samples: bool = Field(False, description="Log rendered (PII-redacted) sample rows and predictions to W&B. "
                              "Off: only counts and metrics leave the machine.")


class Recipe(Strict):
    """One fine-tuning run, from data to evaluation."""

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)  # "peft.init_adapter" -> "file:line" (load_recipe)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Run name; the run folder is <output_dir>/<name>.")
    output_dir: str = Field("runs", description="Parent of the run folder, relative to the working directory.")
    model: ModelSettings
    data: DataSettings
    peft: PeftSettings = Field(default_factory=PeftSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    dpo: DpoSettings | None = Field(None, description="Settings of training.method: dpo (defaults when absent).")
    orpo: OrpoSettings | None = Field(None, description="Settings of training.method: orpo.")
    kto: KtoSettings | None = Field(None, description="Settings of training.method: kto.")
    grpo: GrpoSettings | None = Field(None, description="Settings of training.method: grpo (needs rewards).")

    def method_settings(self) -> Any:
        """The settings section of training.method (its defaults when the recipe leaves it out); None for sft."""
        method = self.training.method
        if method == "sft":
            return None
        given = getattr(self, method)
        return given if given is not None else type(self).model_fields[method].annotation.__args__[0]()

    @property
    def init_adapter_dir(self) -> str | None:
        """The adapter folder training starts from (peft.init_adapter, or peft.from_run's adapter), or None."""
        if self.peft.from_run is not None:
            return f"{self.output_dir}/{self.peft.from_run}/adapter"
        return self.peft.init_adapter

    @model_validator(mode="after")
    def _method_and_data(self) -> "Recipe":
        method = self.training.method
        for section in METHOD_SECTIONS:
            if getattr(self, section) is not None and section != method:
                raise PydanticCustomError("tailor_method_section", "{key} settings are given but training.method "
                                          "is {method}: set training.method: {key} or remove the section",
                                          {"key": section, "method": method})
        if method == "grpo" and (self.grpo is None or not self.grpo.rewards):
            raise PydanticCustomError("tailor_grpo_rewards", "method grpo needs rewards to optimise, e.g. "
                                      "grpo.rewards: [json_valid, json_field_accuracy] (any metric eval reports, or "
                                      "a project function 'module.path:function')", {"key": "training.method"})
        allowed = {"dpo": ("preference",), "orpo": ("preference",), "kto": ("preference", "unpaired_preference")}
        for index, source in enumerate(self.data.sources):
            preference = source.format in ("preference", "unpaired_preference")
            if method in allowed and source.format not in allowed[method]:
                raise PydanticCustomError(
                    "tailor_method_format", "training.method {method} trains on {formats} data, this source is "
                    "{format}", {"key": f"data.sources.{index}.format", "method": method,
                                 "formats": " or ".join(allowed[method]), "format": source.format})
            if method not in allowed and preference:
                raise PydanticCustomError(
                    "tailor_method_format", "{format} data needs training.method dpo, orpo or kto (method is "
                    "{method})", {"key": f"data.sources.{index}.format", "method": method, "format": source.format})
            if method == "grpo" and source.format == "text":
                raise PydanticCustomError(
                    "tailor_method_format", "grpo samples answers to prompts: plain text rows have none",
                    {"key": f"data.sources.{index}.format"})
        return self

    @model_validator(mode="after")
    def _metric_options(self) -> "Recipe":
        needs = {"json_field_accuracy": "json_fields", "json_schema_valid": "json_schema", "regex_match": "regex",
                 "classification": "labels"}
        rewards = [r.name for r in self.grpo.rewards] if self.grpo is not None else []
        for metric, option in needs.items():
            given = getattr(self.eval, option) is not None
            if given and metric not in self.eval.metrics and metric not in rewards:
                raise ValueError(f"eval.{option} is set but eval.metrics (and grpo.rewards) lack {metric}")
            for where, names in (("eval.metrics", self.eval.metrics), ("grpo.rewards", rewards)):
                if metric in names and not given and option != "json_fields":
                    raise ValueError(f"{where} has {metric}, which needs eval.{option}")
        return self

    @model_validator(mode="after")
    def _sets_and_gate(self) -> "Recipe":
        names = self.data.set_names()
        for name in self.eval.sets or []:
            if name not in names:
                raise ValueError(f"eval.sets names {name!r}, which is not an eval set of this recipe "
                                 f"(sets: {', '.join(names)})")
        if self.eval.retention is not None and not self.eval.compare_base:
            raise ValueError("eval.retention compares tuned with base: it needs eval.compare_base: true")
        gate = self.eval.gate
        if gate is None:
            return self
        if gate.set is not None and gate.set not in names:
            raise ValueError(f"eval.gate.set {gate.set!r} is not an eval set of this recipe (sets: {', '.join(names)})")
        if not self.eval.compare_base:
            raise ValueError("eval.gate compares tuned with base: it needs eval.compare_base: true")
        if gate.retention_max_drop is not None and self.eval.retention is None:
            raise ValueError("eval.gate.retention_max_drop needs eval.retention (e.g. {sets: [gsm8k]})")
        return self
