"""trl's trainer of each training method, taking data_prep's token columns as they are.

data_prep renders every example with the recipe's chat template and loss mask (tailor.render), as it does for SFT,
and writes token ids: `prompt_ids`/`chosen_ids`/`rejected_ids` (DPO, ORPO) or `prompt_ids`/`completion_ids`/`label`
(KTO). trl's DPO and KTO trainers always re-tokenize text columns; these subclasses pass prepared columns through
(keeping trl's own steps that do not tokenize), so training sees the tokens the mask audit showed (trl trains a
side from its first trained token through its last).
GRPO reads the rendered `prompt` text and generates, so it needs no change.
"""

from __future__ import annotations

from typing import Any

PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
UNPAIRED_COLUMNS = ("prompt_ids", "completion_ids", "label")
COLUMNS = {"sft": ("input_ids", "assistant_masks"), "dpo": PAIR_COLUMNS, "orpo": PAIR_COLUMNS,
           "kto": UNPAIRED_COLUMNS, "grpo": ("prompt", "reference")}  # what each method reads of train.parquet


def trainer_class(method: str) -> type:
    """The trainer class of a training method (imports trl)."""
    if method == "sft":
        from trl import SFTTrainer

        return SFTTrainer
    if method == "grpo":
        from trl import GRPOTrainer

        return GRPOTrainer
    return {"dpo": _dpo, "orpo": _orpo, "kto": _kto}[method]()


def _prepared(dataset: Any, columns: tuple[str, ...]) -> bool:
    return set(columns) <= set(getattr(dataset, "column_names", None) or ())


def _dpo() -> type:
    from trl import DPOTrainer

    class PreparedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if _prepared(dataset, PAIR_COLUMNS):
                return dataset  # data_prep truncated to training.max_length and refused prompts that fill it
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PreparedDPOTrainer


def _kto() -> type:
    from trl import KTOTrainer

    class PreparedKTOTrainer(KTOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if not _prepared(dataset, UNPAIRED_COLUMNS):
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if not self.calculate_KL:
                return dataset

            def mismatched(rows: dict) -> dict:
                """trl's KL pairing (each prompt with another row's completion) over the whole set, shifted by half
                of it: data_prep writes a pair's desirable and undesirable rows next to each other, and trl's shift
                by one within a batch would pair a prompt with its own other answer."""
                completions = rows["completion_ids"]
                shift = max(1, len(completions) // 2)
                rows["KL_completion_ids"] = completions[-shift:] + completions[:-shift]
                return rows

            return dataset.map(mismatched, batched=True, batch_size=None)

    return PreparedKTOTrainer


def _orpo() -> type:
    from trl.experimental.orpo import ORPOTrainer

    class PreparedORPOTrainer(ORPOTrainer):
        def tokenize_row(self, feature: dict, model: Any = None) -> dict:
            if "prompt_ids" not in feature:
                return super().tokenize_row(feature, model)
            prompt = list(feature["prompt_ids"])
            out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
            for side in ("chosen", "rejected"):
                ids = prompt + list(feature[f"{side}_ids"])
                out.update({f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids),
                            f"{side}_labels": [-100] * len(prompt) + list(feature[f"{side}_ids"])})
            return out

    return PreparedORPOTrainer
