"""`python -m eval RECIPE [key=value ...] [--adapter DIR | --model DIR] [--compare-run RUN] [--predictions FILE]
[--gate]`: evaluation of tuned vs base and any other variant on every eval set; `--gate` exits 3 on HOLD."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tailor.cli import recipe_parser, run_cli
from tailor.errors import TailorError
from tailor.schema import Recipe


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    from eval.gate import HOLD_EXIT_CODE
    from eval.run import evaluate, format_sets, format_table
    from tailor.runs import run_paths
    from tailor.tracking import finish_stage, start_stage

    if args.adapter and args.model:
        raise TailorError("give --adapter (an adapter on the recipe's base model) or --model (a full, e.g. merged, "
                          "model folder), not both.")
    if args.gate and recipe.eval.gate is None:
        raise TailorError("--gate needs eval.gate in the recipe, e.g. eval.gate: {metric: exact_match, set: test, "
                          "min_delta: 0.0} (or ARGS=\"eval.gate.metric=exact_match\").")
    results = evaluate(recipe, Path(args.adapter) if args.adapter else None, Path(args.model) if args.model else None,
                       args.compare_run or [], args.predictions or [])
    paths = run_paths(recipe)
    print(f"eval on {results['rows']} held-out rows of set {results.get('set', 'heldout')} ({paths.results}, "
          f"report: {paths.eval_dir / 'report.html'}):")
    print(format_table(results))
    if extra := format_sets(results):
        print(extra)
    run = start_stage(recipe, "eval", {"data_hash": results["hashes"]["data"]})
    gate = results.get("gate")
    if run is not None:
        flat = {f"eval/{variant}/{key}": value for variant, metrics in results["models"].items()
                for key, value in metrics.items() if isinstance(value, (int, float))}
        flat.update({f"eval/delta/{key}": value for key, value in results.get("delta", {}).items()})
        flat.update(_intervals("eval", results.get("comparisons", {})))
        for other, pair in results.get("pairs", {}).items():
            if other != "base":
                flat.update({f"eval/vs/{other}/{metric}/{k}": float(c[k]) for metric, c in pair.items()
                             for k in ("delta", "ci_low", "ci_high", "excludes_zero")})
        flat.update({f"eval/cost/{k}": v for k, v in results["cost"].items() if isinstance(v, (int, float))})
        flat.update(_set_metrics(results))
        _log_tables(run, recipe, paths.predictions, results)
        run.log(flat)
        if gate:  # strings go to the summary only (W&B history holds numbers)
            flat.update({"eval/gate/decision": gate["decision"], "eval/gate/reason": gate["reason"]})
        finish_stage(run, flat)
    if args.gate and gate and not gate["promote"]:
        print(f"eval: HOLD (exit code {HOLD_EXIT_CODE}): {gate['reason']}")
        sys.exit(HOLD_EXIT_CODE)


def _set_metrics(results: dict) -> dict[str, float]:
    """Per eval set: eval/<set>/<metric> (tuned), eval/<set>/base/<metric>, eval/<set>/delta/<metric> and the
    interval; retention eval/retention/<set>/...; the gate as eval/gate/promote (1 or 0)."""
    flat: dict[str, float] = {}
    for name, block in results.get("sets", {}).items():
        for variant, prefix in (("tuned", f"eval/{name}"), ("base", f"eval/{name}/base")):
            flat.update({f"{prefix}/{k}": v for k, v in block["models"].get(variant, {}).items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
        flat.update({f"eval/{name}/delta/{k}": v for k, v in block.get("delta", {}).items()})
        flat.update(_intervals(f"eval/{name}", block.get("comparisons", {})))
    if retention := results.get("retention"):
        for name, r in retention["sets"].items():
            flat.update({f"eval/retention/{name}/{k}": r[k] for k in ("base_loss", "tuned_loss", "delta", "ci_low",
                                                                        "ci_high", "rows")})
        flat["eval/retention/seconds"] = retention["seconds"]
    if results.get("gate"):
        flat["eval/gate/promote"] = int(results["gate"]["promote"])
    return flat


def _intervals(prefix: str, comparisons: dict) -> dict[str, float]:
    """PREFIX/ci/<metric>/low, high and excludes_zero (1 or 0) of each paired interval."""
    return {f"{prefix}/ci/{metric}/{key}": value for metric, c in comparisons.items() for key, value in
            (("low", c["ci_low"]), ("high", c["ci_high"]), ("excludes_zero", int(c["excludes_zero"])))}


def _log_tables(run, recipe: Recipe, predictions: Path, results: dict) -> None:
    """report.html to W&B (without tracking.log_samples: numbers and row ids only), and with log_samples a table of
    the held-out predictions (it holds customer text)."""
    import wandb

    from eval.report import render_html

    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    html = render_html(recipe.name, results, rows, include_text=recipe.tracking.log_samples)
    run.log({"eval/report": wandb.Html(html, inject=False, data_is_not_path=True)})
    if recipe.tracking.log_samples:
        columns = ["id", "prompt", "reference", *results["models"]]
        run.log({"eval/predictions": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser("Evaluate tuned vs base (and other runs or predictions) on the held-out set.")
    parser.add_argument("--adapter", help="adapter folder to evaluate as 'tuned' (default: the run's adapter/)")
    parser.add_argument("--model", help="a full model folder (e.g. from `make merge`) to evaluate as 'tuned' "
                        "instead of base + adapter")
    parser.add_argument("--compare-run", action="append", metavar="RUN_DIR", help="another run folder: its "
                        "predictions are reused when they match these rows, else its adapter runs on them (repeatable)")
    parser.add_argument("--predictions", action="append", metavar="[NAME=]FILE", help="external predictions, JSONL "
                        "with 'id' and 'prediction' per line, compared as variant NAME (default: file stem; "
                        "repeatable)")
    parser.add_argument("--gate", action="store_true", help="end with the eval.gate verdict: exit code 3 on HOLD "
                        "(PROMOTE: 0)")
    run_cli(stage, parser, argv)


if __name__ == "__main__":
    main()
