"""Audit of the loss masks before any training: the checks that catch the silent data bugs.

Hard errors (the run stops): a row with no trainable token, an end-of-turn token never trained, a trained
assistant turn whose end-of-turn token is not trained, or renders that differ from inference (`render.py`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING, Any

from tailor.errors import TailorError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

GREEN, DIM, RESET = "\033[1;32m", "\033[2m", "\033[0m"


@dataclass
class AuditReport:
    """What the audit found over a prepared split."""

    rows: int = 0
    end_of_turn: str = ""
    tokens_by_role: Counter = field(default_factory=Counter)
    trained_by_role: Counter = field(default_factory=Counter)
    end_of_turn_trained: int = 0
    rows_without_trainable: list[str] = field(default_factory=list)
    rows_missing_end_of_turn: list[str] = field(default_factory=list)
    template_mismatches: int = 0

    def add(self, row_id: str, trained_eot: int, any_trained: bool, trained_turns: int, truncated: bool,
            role_tokens: dict[str, int], role_trained: dict[str, int]) -> None:
        """Count one rendered row (`trained_eot`: how many end-of-turn tokens it trains)."""
        self.rows += 1
        self.tokens_by_role.update(role_tokens)
        self.trained_by_role.update(role_trained)
        self.end_of_turn_trained += trained_eot
        if not any_trained:
            self.rows_without_trainable.append(row_id)
        elif trained_eot < trained_turns and not truncated:
            self.rows_missing_end_of_turn.append(row_id)

    def problems(self) -> list[str]:
        out = []
        if self.rows_without_trainable:
            out.append(f"{len(self.rows_without_trainable)} row(s) have no trainable token, e.g. "
                       f"{self.rows_without_trainable[:3]}")
        if self.rows and not self.end_of_turn_trained:
            out.append(f"the end-of-turn token {self.end_of_turn!r} is never trained: the model would not learn "
                       "to stop; check the chat template and roles_to_train")
        if self.rows_missing_end_of_turn:
            out.append(f"{len(self.rows_missing_end_of_turn)} row(s) train an assistant turn without its "
                       f"end-of-turn token {self.end_of_turn!r}, e.g. {self.rows_missing_end_of_turn[:3]}")
        if self.template_mismatches:
            out.append(f"{self.template_mismatches} row(s) render differently for training than at inference "
                       "(see rejected.jsonl): fix the chat template (data.template) before training")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "end_of_turn": self.end_of_turn,
                "tokens_by_role": dict(self.tokens_by_role), "trained_by_role": dict(self.trained_by_role),
                "end_of_turn_trained": self.end_of_turn_trained, "template_mismatches": self.template_mismatches,
                "problems": self.problems()}


def end_of_turn_token(tokenizer: "PreTrainedTokenizerBase") -> tuple[int, str]:
    """The special token that closes an assistant turn in this chat template (e.g. <|im_end|>)."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "PROBE"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    tail = text[text.rindex("PROBE") + len("PROBE"):]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return token_id, tokenizer.convert_ids_to_tokens(token_id)
    if tokenizer.eos_token_id is None:
        raise TailorError("the chat template closes assistant turns with no special token and the tokenizer has "
                          "no eos token: the model could never learn to stop.")
    return tokenizer.eos_token_id, tokenizer.eos_token


def audit_rows(rows: list[dict[str, Any]], tokenizer: "PreTrainedTokenizerBase",
               template_mismatches: int = 0) -> AuditReport:
    """Check rendered rows (id, input_ids, assistant_masks, role_tokens, role_trained, trained_turns, truncated)."""
    eot_id, eot = end_of_turn_token(tokenizer)
    report = AuditReport(rows=0, end_of_turn=eot, template_mismatches=template_mismatches)
    for row in rows:
        ids, mask = row["input_ids"], row["assistant_masks"]
        trained_eot = sum(1 for t, m in zip(ids, mask) if m and t == eot_id)
        report.add(row["id"], trained_eot, any(mask), row["trained_turns"], row["truncated"],
                   json.loads(row["role_tokens"]), json.loads(row["role_trained"]))
    return report


def check(report: AuditReport) -> None:
    """Raise a TailorError listing every hard problem the audit found."""
    problems = report.problems()
    if problems:
        raise TailorError("data audit failed:\n  - " + "\n  - ".join(problems))


def highlight(row: dict[str, Any], tokenizer: "PreTrainedTokenizerBase", color: bool = True) -> str:
    """The rendered row with trained tokens highlighted (green, or [[...]] without colour)."""
    runs = groupby(zip(row["input_ids"], row["assistant_masks"]), key=lambda pair: pair[1])
    return "".join(_wrap(tokenizer.decode([t for t, _ in run]), trained, color) for trained, run in runs)


def highlight_pair(row: dict[str, Any], tokenizer: "PreTrainedTokenizerBase", color: bool = True) -> str:
    """A preference row: its prompt (untrained), then each side's completion highlighted as trained; a KTO row
    (completion_ids, label) shows its one completion."""
    sides = ([("chosen", row["chosen_ids"]), ("rejected", row["rejected_ids"])] if "chosen_ids" in row else
             [("desirable" if row["label"] else "undesirable", row["completion_ids"])])
    lines = [_wrap(tokenizer.decode(row["prompt_ids"]), 0, color)]
    for name, ids in sides:
        lines.append(f"[{name}] " + _wrap(tokenizer.decode(ids), 1, color))
    return "\n".join(lines)


def _wrap(text: str, trained: int | None, color: bool) -> str:
    if color:
        return f"{GREEN}{text}{RESET}" if trained else f"{DIM}{text}{RESET}"
    return f"[[{text}]]" if trained else text


def format_report(report: AuditReport) -> str:
    lines = [f"audit: {report.rows} rows, end-of-turn token {report.end_of_turn!r} trained "
             f"{report.end_of_turn_trained} times"]
    for role in sorted(report.tokens_by_role):
        total, trained = report.tokens_by_role[role], report.trained_by_role[role]
        lines.append(f"       {role:<10} {total:>9} tokens, {trained:>9} trained ({trained / max(total, 1):.0%})")
    return "\n".join(lines)


def count_rows(audit: AuditReport, table: Any) -> int:
    """Count a block of rows in the audit; return their trained tokens."""
    columns = table.select(["id", "_eot", "_trained", "trained_turns", "truncated", "role_tokens",
                            "role_trained"]).to_pydict()
    for row_id, eot, trained, turns, truncated, role_tokens, role_trained in zip(*columns.values()):
        audit.add(row_id, eot, trained > 0, turns, truncated, json.loads(role_tokens), json.loads(role_trained))
    return int(sum(columns["_trained"]))
