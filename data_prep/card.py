"""The data card: what went into the prepared data, as JSON (for tools) and Markdown (for people).

It holds counts and statistics only, never a raw row, so it is safe to log to a tracking server.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from typing import Any, Sequence

HISTOGRAM_BINS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def length_histogram(lengths: Sequence[int]) -> dict[str, int]:
    """Row counts by token length, in power-of-two bins ("<=64": n, ...)."""
    labels = [f"<={edge}" for edge in HISTOGRAM_BINS] + [f">{HISTOGRAM_BINS[-1]}"]
    counts = Counter(labels[bisect_left(HISTOGRAM_BINS, length)] for length in lengths)
    return {label: counts[label] for label in labels if label in counts}


def padding_fraction_batched(lengths: Sequence[int], batch_size: int, seed: int = 0) -> float:
    """Share of padding tokens when shuffled rows are batched and padded to the longest row of each batch."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    padded = real = 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded if padded else 0.0


def padding_fraction_packed(lengths: Sequence[int], max_length: int, strategy: str = "bfd") -> tuple[float, int]:
    """Share of empty space when trl packs rows into max_length sequences, and the pack count (1000-row
    batches as `datasets.map` gives trl, a slice of whole batches at a time to bound memory)."""
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset, disable_progress_bars, enable_progress_bars, is_progress_bar_enabled
    from trl.data_utils import pack_dataset

    if not len(lengths):
        return 0.0, 0
    clipped = np.minimum(np.asarray(lengths, dtype=np.int64), max_length)
    step = 1000 * max(1, int((1 << 21) // max(float(clipped.mean()) * 1000, 1.0)))  # ~2M tokens a slice
    packs = 0
    bars = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        for start in range(0, len(clipped), step):
            part = clipped[start:start + step]
            offsets = np.concatenate([[0], np.cumsum(part)]).astype(np.int32)
            ids = pa.ListArray.from_arrays(pa.array(offsets), pa.nulls(int(part.sum())))
            packs += len(pack_dataset(Dataset(pa.table({"input_ids": ids})), max_length, strategy))
    finally:
        if bars:
            enable_progress_bars()
    return 1 - int(clipped.sum()) / (packs * max_length), packs


def build_card(manifest: dict[str, Any], train_lengths: Sequence[int], batch_size: int, max_length: int,
               sources: list[dict[str, Any]], method: str = "sft") -> dict[str, Any]:
    """The card's content. Methods other than sft batch one example per row (never packed): no packing figure;
    dpo, orpo and kto add the pair statistics (`pairs.PairStats`). A train length is a row's longest sequence."""
    padding: dict[str, Any] = {"batched_fraction": round(padding_fraction_batched(train_lengths, batch_size), 4),
                               "batch_size": batch_size}
    if method == "sft":
        packed_fraction, packs = padding_fraction_packed(train_lengths, max_length)
        padding.update(packed_fraction=round(packed_fraction, 4), packed_sequences=packs, max_length=max_length,
                       packing_strategy="bfd")
    extra = {} if method == "sft" else {"method": method}
    if manifest.get("preference") is not None:
        extra["preference"] = manifest["preference"]
    return {
        **extra,
        "sources": sources,
        "rows": manifest["rows"],
        "tokens": manifest["tokens"],
        "pii": manifest.get("pii", {}),
        "contamination": manifest.get("contamination", {}),
        "eval_sets": manifest.get("eval_sets", {}),
        "warnings": manifest.get("warnings", []),
        "audit": manifest.get("audit", {}),
        "train_length_histogram": length_histogram(train_lengths),
        "padding": padding,
    }


def card_markdown(card: dict[str, Any], name: str) -> str:
    rows, tokens, padding = card["rows"], card["tokens"], card["padding"]
    lines = [f"# Data card: {name}", "", "## Sources", "", "| file | format | sha256 | rows read | used for |",
             "|---|---|---|---|---|"]
    for source in card["sources"]:
        use = f"eval set {source['eval_set']}" if source.get("eval_set") else "training (and the hash split)"
        lines.append(f"| {source['path']} | {source['format']} | `{source['sha256'][:12]}` | {source['rows_read']} "
                     f"| {use} |")
    lines += ["", "## Rows", "", f"- read: {rows['read']}", f"- train: {rows['train']}",
              f"- held-out: {rows['heldout']}", f"- rejected or removed: {rows['rejected']}"]
    lines += [f"  - {reason}: {count}" for reason, count in sorted(rows["rejected_by_reason"].items())]
    lines += ["", "## Tokens", "", f"- train tokens: {tokens['train_total']} ({tokens['train_trained']} trained)",
              f"- held-out tokens: {tokens['heldout_total']}", f"- truncated train rows: {tokens['train_truncated_rows']}",
              "", "| train row length (tokens) | rows |", "|---|---|"]
    lines += [f"| {label} | {count} |" for label, count in card["train_length_histogram"].items()]
    lines += ["", "## Padding", "",
              f"- padded batches of {padding['batch_size']}: {padding['batched_fraction']:.1%} padding"]
    if "packed_fraction" in padding:
        lines.append(f"- packed ({padding['packing_strategy']}, {padding['max_length']} tokens): "
                     f"{padding['packed_fraction']:.1%} empty in {padding['packed_sequences']} sequences")
    if card.get("preference"):
        lines += preference_markdown(card["preference"], card.get("method", ""))
    if card["pii"]:
        lines += ["", "## PII redacted", "", "| type | values |", "|---|---|"]
        lines += [f"| {kind} | {count} |" for kind, count in sorted(card["pii"].items())]
    if card.get("eval_sets"):
        lines += ["", "## Evaluation sets", "", "| set | file | rows | tokens | training rows removed (overlap) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {set_name} | {info['file']} | {info['rows']} | {info['tokens']} | "
                  f"{info.get('removed_from_train', '-')} |" for set_name, info in card["eval_sets"].items()]
        lines += [f"- warning: {w}" for w in card.get("warnings", [])]
    if card["contamination"]:
        c = card["contamination"]
        lines += ["", "## Held-out contamination", "",
                  f"- {c['removed']} held-out row(s) removed: word {c['ngram']}-gram overlap with a training row "
                  f">= {c['threshold']}"]
        lines += [f"- {removed} training row(s) removed: {c['threshold']:.0%} or more of their word "
                  f"{c['ngram']}-grams are in eval set {set_name}" for set_name, removed in
                  c.get("eval_sets", {}).items()]
    if card["audit"]:
        audit = card["audit"]
        lines += ["", "## Loss-mask audit", "", f"- end-of-turn token `{audit['end_of_turn']}` trained "
                  f"{audit['end_of_turn_trained']} times", "", "| role | tokens | trained |", "|---|---|---|"]
        lines += [f"| {role} | {audit['tokens_by_role'][role]} | {audit['trained_by_role'].get(role, 0)} |"
                  for role in sorted(audit["tokens_by_role"])]
    return "\n".join(lines) + "\n"


def preference_markdown(stats: dict[str, Any], method: str) -> list[str]:
    """The card's section on preference data (`pairs.PairStats.summary`)."""
    def spread(side: str) -> str:
        value = stats[f"{side}_tokens"]
        return f"mean {value['mean']}, median {value['median']}" if value else "-"

    lines = ["", f"## Preference data ({method})", "", f"- training pairs: {stats['pairs']}",
             f"- chosen tokens: {spread('chosen')}; rejected tokens: {spread('rejected')}"]
    if stats["chosen_longer_share"] is not None:
        lines.append(f"- chosen longer than rejected in {stats['chosen_longer_share']:.1%} of pairs (length bias: "
                     "far from 50% teaches length as much as quality)")
    lines.append(f"- refused: {stats['identical_pairs_refused']} identical pair(s), "
                 f"{stats['prompt_mismatch_refused']} row(s) whose prompt renders differently for chosen and rejected")
    if "desirable" in stats:
        lines.append(f"- KTO rows: {stats['desirable']} desirable, {stats['undesirable']} undesirable "
                     f"({stats['unpaired']} unpaired rows, each pair gives one of each)")
    return lines
