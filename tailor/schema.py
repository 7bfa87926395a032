"""The recipe schema: the single source of truth for every setting of every stage.

Every model forbids unknown keys, so a typo is an error, never a silently ignored setting.
Paths inside a recipe are resolved relative to the recipe file that names them (see `tailor.recipe`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(Strict):
    """Which base model to fine-tune and how to load it."""

    name_or_path: str = Field(description="Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local folder, or an "
                              "installed Python package that ships a GGUF file (with gguf_file).")
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path; tailor converts it once to a "
                                  "cached ordinary checkpoint.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto = bfloat16 on GPUs that support it, float32 on CPU.")
    trust_remote_code: bool = Field(False, description="Run modelling code shipped with the checkpoint. Off unless "
                                    "you trust its source.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


class FieldMap(Strict):
    """Column names in the source files, for each supported format."""

    messages: str = "messages"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    prompt: str = "prompt"
    completion: str = "completion"
    system: str | None = Field(None, description="Optional column holding a per-row system prompt.")


class DataSource(Strict):
    """One input file."""

    path: str = Field(description="JSONL, CSV or Parquet file, relative to the recipe file.")
    format: Literal["messages", "alpaca", "prompt_completion"] = Field(
        "messages", description="messages: OpenAI chat rows; alpaca: instruction/input/output; "
        "prompt_completion: prompt/completion strings.")
    file_type: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    fields: FieldMap = Field(default_factory=FieldMap)


class DataSettings(Strict):
    """Where the data comes from and how it is split."""

    sources: list[DataSource] = Field(min_length=1)
    system_prompt: str | None = Field(None, description="System message added to rows that have none.")
    heldout_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of rows held out for evaluation.")
    split_seed: int = Field(0, description="Salt of the content hash that assigns rows to train or held-out.")
    max_train_rows: int | None = Field(None, ge=1, description="Cap on training rows (first by hash order).")
    max_heldout_rows: int | None = Field(None, ge=1, description="Cap on held-out rows (first by hash order).")
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0, description="Fail when more than this share of rows "
                                    "is rejected (bad rows are always kept in rejected.jsonl).")


class PeftSettings(Strict):
    """The adapter: LoRA on full-precision weights, or QLoRA on a 4-bit NF4 base."""

    method: Literal["lora", "qlora"] = "lora"
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False


class TrainingSettings(Strict):
    """Trainer knobs (names follow common usage; mapped onto trl's SFTConfig in train/config.py)."""

    lr: float = Field(2e-4, gt=0.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = run all epochs.")
    batch_size: int = Field(4, ge=1, description="Micro batch per device.")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8, description="Sequences longer than this (in tokens) are truncated.")
    packing: bool = Field(False, description="Pack rows into max_length sequences (trl BFD, padding-free).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    optim: str = Field("adamw_torch", description="Any transformers optimizer name, e.g. paged_adamw_8bit.")
    logging_steps: int = Field(5, ge=1)
    seed: int = 42


MetricName = Literal["exact_match", "json_valid", "json_field_accuracy"]


class EvalSettings(Strict):
    """Held-out evaluation of base and tuned model."""

    metrics: list[MetricName] = Field(default_factory=lambda: ["exact_match"], min_length=1)
    json_fields: list[str] | None = Field(None, description="Fields scored by json_field_accuracy; "
                                          "default: every key of each reference object.")
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_rows: int | None = Field(None, ge=1, description="Evaluate only the first N held-out rows.")
    compare_base: bool = Field(True, description="Also evaluate the base model on the same rows.")


class TrackingSettings(Strict):
    """Weights & Biases logging; offline by default, so nothing leaves the machine unless asked."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "tailor"
    entity: str | None = None
    run_name: str | None = Field(None, description="W&B group name; defaults to the recipe name.")
    tags: list[str] = Field(default_factory=list)


class Recipe(Strict):
    """One fine-tuning run, from data to evaluation."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Run name; the run folder is <output_dir>/<name>.")
    output_dir: str = Field("runs", description="Parent of the run folder, relative to the working directory.")
    model: ModelSettings
    data: DataSettings
    peft: PeftSettings = Field(default_factory=PeftSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    @field_validator("name")
    @classmethod
    def _no_dot_names(cls, value: str) -> str:
        if value in {".", ".."}:
            raise ValueError("name must not be '.' or '..'")
        return value

    @model_validator(mode="after")
    def _json_metrics_need_json(self) -> "Recipe":
        if self.eval.json_fields is not None and "json_field_accuracy" not in self.eval.metrics:
            raise ValueError("eval.json_fields is set but eval.metrics lacks json_field_accuracy")
        return self
