"""`python -m tailor.compare [RUNS ...]`: compare run folders from their own files, never the network.

RUNS are run folders, globs, or parent folders (every run folder directly under them); default `runs`. Prints a
table of the recipe keys that differ, metrics with intervals, tokens/s, GPU-hours and cost, and writes an HTML
report (`--html`). A corrupt or half-written run folder is listed with its problem, never a crash.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailor.errors import TailorError

LOWER_IS_BETTER = {"loss", "perplexity", "train_loss", "cost", "gpu_hours", "cpu_hours", "seconds",
                   "cost_per_1k_predictions", "api_cost", "api_cost_per_1k_predictions"}
RUN_MARKERS = ("run.json", "run.json.corrupt", "data", "adapter", "eval")
IGNORED_KEYS = {"name"}
MAX_KEY_COLUMNS = 4  # more differing recipe keys than this go to their own block, not the table
TOTAL_COLUMNS = {"tokens/s": "tokens_per_second", "GPU-h": "gpu_hours", "CPU-h": "cpu_hours", "cost": "cost",
                 "cost/1k pred": "cost_per_1k_predictions"}


@dataclass
class RunView:
    """What one run folder says about itself; `status` is ok, partial (something missing) or corrupt."""

    path: Path
    status: str = "ok"
    problems: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    tuned: dict[str, float] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    loss_curve: list[tuple[float, float]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def flag(self, status: str, problem: str) -> None:
        """Note a problem; corrupt outranks partial outranks ok."""
        self.problems.append(problem)
        self.status = max(self.status, status, key=["ok", "partial", "corrupt"].index)


def find_runs(targets: list[str]) -> list[Path]:
    """Run folders named by folders, globs or parent folders, in the given order, without duplicates."""
    found: list[Path] = []
    for target in targets or ["runs"]:
        matches = sorted(glob.glob(target)) if glob.has_magic(target) else [target]
        if not matches:
            raise TailorError(f"compare: {target!r} matches no folder. Give run folders (runs/NAME), a glob "
                              f"(\"runs/lr-*\") or a parent folder (runs).")
        for path in map(Path, matches):
            if not path.exists():
                raise TailorError(f"compare: {path} does not exist. Give run folders, globs or a parent folder.")
            if path.is_dir() and is_run_folder(path):
                found.append(path)
            elif path.is_dir():
                found.extend(child for child in sorted(path.iterdir()) if child.is_dir() and is_run_folder(child))
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def is_run_folder(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS) or any(path.glob(".run.json.*.tmp"))


def load_run(path: Path) -> RunView:
    """Read a run folder's run.json, eval results and training metrics; problems are recorded, not raised."""
    from tailor.lineage import totals

    run = RunView(path)
    leftovers = sorted(p for pattern in ("*.tmp", "*/*.tmp", ".*.tmp", "*/.*.tmp") for p in path.glob(pattern))
    for leftover in dict.fromkeys(leftovers):
        run.flag("partial", f"leftover temporary {leftover.relative_to(path)} (an interrupted write)")
    if (path / "run.json.corrupt").exists():
        run.flag("partial", "an earlier run.json was not valid JSON (kept as run.json.corrupt)")
    run.record = _dict(_read(run, path / "run.json", required=True))
    stages = _dict(run.record.get("stages"))
    run.recipe = run.record.get("recipe") if isinstance(run.record.get("recipe"), dict) else None
    if run.recipe is None and (path / "adapter" / "recipe.json").exists():
        recipe = _read(run, path / "adapter" / "recipe.json")
        run.recipe = recipe if isinstance(recipe, dict) else None
    if run.recipe is None:
        run.flag("partial", "no recipe recorded (run.json has none, nor adapter/recipe.json)")
    if "train" in stages and not (path / "adapter" / "adapter_config.json").exists():
        run.flag("partial", "run.json lists a train stage but adapter/adapter_config.json is missing")
    _read_metrics(run, path, "eval" in stages)
    _read_loss(run, path)
    try:
        run.totals = totals(copy.deepcopy({**run.record, "recipe": run.recipe}))
    except (TypeError, ValueError, AttributeError) as err:
        run.flag("corrupt", f"run.json: unexpected content ({err})")
    return run


def _read(run: RunView, path: Path, required: bool = False) -> Any:
    if not path.exists():
        if required:
            run.flag("partial", f"{path.name} is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError) as err:
        run.flag("corrupt", f"{path.relative_to(run.path)} is not valid JSON ({str(err)[:80]})")
        return None


def _read_metrics(run: RunView, path: Path, expected: bool) -> None:
    """The default set's metrics by name, other sets' as `<set>/<metric>`, retention losses as `retention/<set>`,
    the gate as 1 (PROMOTE) or 0 (HOLD)."""
    results = _read(run, path / "eval" / "results.json", required=expected)
    if not isinstance(results, dict):
        return
    _add_set(run, "", results)
    for name, block in _dict(results.get("sets")).items():
        if name != results.get("set") and isinstance(block, dict):
            _add_set(run, f"{name}/", block)
    for name, r in _dict(_dict(results.get("retention")).get("sets")).items():
        if isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in ("tuned_loss", "base_loss")):
            run.tuned[f"retention/{name}"], run.base[f"retention/{name}"] = r["tuned_loss"], r["base_loss"]
            run.comparisons[f"retention/{name}"] = {"delta": r.get("delta"), "ci_low": r.get("ci_low"),
                                                    "ci_high": r.get("ci_high"), "excludes_zero": False}
    if isinstance(gate := results.get("gate"), dict) and isinstance(gate.get("promote"), bool):
        run.tuned["gate"] = float(gate["promote"])


def _add_set(run: RunView, prefix: str, block: dict[str, Any]) -> None:
    models = _dict(block.get("models"))
    run.tuned.update({prefix + k: v for k, v in _numbers(models.get("tuned")).items()})
    run.base.update({prefix + k: v for k, v in _numbers(models.get("base")).items()})
    run.comparisons.update({prefix + k: v for k, v in _dict(block.get("comparisons")).items() if isinstance(v, dict)})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _numbers(values: Any) -> dict[str, float]:
    return {k: float(v) for k, v in _dict(values).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _read_loss(run: RunView, path: Path) -> None:
    """Training loss by optimizer step: train_metrics.json `log_history` (with steps) or `loss_history`."""
    metrics = _read(run, path / "adapter" / "train_metrics.json")
    if not isinstance(metrics, dict):
        return
    history = metrics.get("log_history")
    if isinstance(history, list) and any(isinstance(h, dict) and "loss" in h for h in history):
        run.loss_curve = [(float(h.get("step", i + 1)), float(h["loss"])) for i, h in enumerate(history)
                          if isinstance(h, dict) and isinstance(h.get("loss"), (int, float))]
    elif isinstance(losses := metrics.get("loss_history"), list):
        every = ((run.recipe or {}).get("training") or {}).get("logging_steps") or 1
        run.loss_curve = [(float((i + 1) * every), float(v)) for i, v in enumerate(losses)
                          if isinstance(v, (int, float))]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested recipe: data.sources[0].path, training.lr, ..."""
    if isinstance(obj, dict):
        items = [(f"{prefix}.{key}" if prefix else str(key), value) for key, value in obj.items()]
    elif isinstance(obj, list) and any(isinstance(item, (dict, list)) for item in obj):
        items = [(f"{prefix}[{index}]", item) for index, item in enumerate(obj)]
    else:
        return {prefix: obj}
    return {k: v for key, value in items for k, v in flatten(value, key).items()} or {prefix: {}}


def recipe_diff(runs: list[RunView]) -> list[str]:
    """Recipe keys whose values differ between the runs that have a recipe (run name excluded)."""
    flats = [flatten(r.recipe) for r in runs if r.recipe is not None]
    if len(flats) < 2:
        return []
    keys = dict.fromkeys(k for flat in flats for k in flat)
    missing = object()
    return [k for k in keys if k not in IGNORED_KEYS
            and len({json.dumps(f.get(k, missing), sort_keys=True, default=str) for f in flats}) > 1]


def recipe_value(run: RunView, key: str) -> str:
    if run.recipe is None:
        return "?"
    flat = flatten(run.recipe)
    return "-" if key not in flat else json.dumps(flat[key]) if not isinstance(flat[key], str) else flat[key]


def metric_names(runs: list[RunView]) -> list[str]:
    """Tuned-model metrics present in any run: loss first, then in the recipes' order."""
    names: dict[str, None] = {}
    for run in runs:
        for name in ("loss", *((run.recipe or {}).get("eval") or {}).get("metrics", []), *run.tuned):
            if name in run.tuned and not name.endswith("perplexity"):
                names.setdefault(name)
    return list(names)


def metric_value(run: RunView, name: str) -> float | None:
    """A number to sort by: a tuned metric, `delta.METRIC`, `base.METRIC`, or a total (cost, gpu_hours, ...)."""
    if name.startswith("delta."):
        key = name[6:]
        c = run.comparisons.get(key)
        if c and isinstance(c.get("delta"), (int, float)):
            return float(c["delta"])
        return run.tuned[key] - run.base[key] if key in run.tuned and key in run.base else None
    if name.startswith("base."):
        return run.base.get(name[5:])
    if name in run.tuned:
        return run.tuned[name]
    value = (((run.record.get("stages") or {}).get("train") or {}).get("train_loss") if name == "train_loss"
             else run.totals.get(name))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def lower_is_better(name: str) -> bool:
    """Losses and costs, also as `delta.loss`, `<set>/loss` and `retention/<set>`."""
    key = name.split(".", 1)[-1]
    return key.rsplit("/", 1)[-1] in LOWER_IS_BETTER or key.startswith("retention/")


def sort_runs(runs: list[RunView], metric: str) -> list[RunView]:
    """Best first by `metric`; runs without it last (in their given order)."""
    have = [r for r in runs if metric_value(r, metric) is not None]
    rest = [r for r in runs if metric_value(r, metric) is None]
    return sorted(have, key=lambda r: metric_value(r, metric), reverse=not lower_is_better(metric)) + rest


def format_metric(run: RunView, name: str) -> str:
    """Tuned value and delta vs base with its interval: `0.143 (+0.143 [+0.082, +0.214]*)`; the gate as PROMOTE/HOLD."""
    value = run.tuned.get(name)
    if value is None:
        return "-"
    if name == "gate":
        return "PROMOTE" if value else "HOLD"
    c = run.comparisons.get(name)
    if c and all(isinstance(c.get(k), (int, float)) for k in ("delta", "ci_low", "ci_high")):
        star = "*" if c.get("excludes_zero") else ""
        return f"{value:.3f} ({c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]{star})"
    if name in run.base:
        return f"{value:.3f} ({value - run.base[name]:+.3f})"
    return f"{value:.3f}"


def format_number(value: Any, digits: int = 4) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"


def table_rows(runs: list[RunView], keys: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (shared by the terminal and the HTML report)."""
    rows = [[run.name, run.status, *(recipe_value(run, k) for k in keys), *(format_metric(run, m) for m in metrics),
             *(format_number(run.totals.get(total)) for total in TOTAL_COLUMNS.values())] for run in runs]
    return ["run", "status", *keys, *metrics, *TOTAL_COLUMNS], rows


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def select(runs: list[RunView], recipe: str | None, tag: str | None) -> list[RunView]:
    """Keep runs whose recipe name (or folder name) matches `recipe` (a glob) and whose tags include `tag`."""
    def wanted(run: RunView) -> bool:
        name = (run.recipe or {}).get("name") or run.name
        tags = (((run.recipe or {}).get("tracking") or {}).get("tags")) or []
        return (not recipe or fnmatch.fnmatch(name, recipe) or fnmatch.fnmatch(run.name, recipe)) \
            and (not tag or tag in tags)

    return [run for run in runs if wanted(run)]


def compare(targets: list[str], recipe: str | None = None, tag: str | None = None, sort: str | None = None,
            best: str | None = None, metrics: list[str] | None = None) -> tuple[list[RunView], list[str], list[str]]:
    """Load, filter and order runs; returns (runs, differing recipe keys, metric names)."""
    runs = select([load_run(p) for p in find_runs(targets)], recipe, tag)
    if not runs:
        raise TailorError(f"compare: no run folder in {' '.join(targets) or 'runs'} matches "
                          f"{'--recipe ' + recipe if recipe else ''} {'--tag ' + tag if tag else ''}".rstrip() + ".")
    if best or sort:
        runs = sort_runs(runs, best or sort)
    return runs, recipe_diff(runs), metrics or metric_names(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tailor.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders, globs or parent folders (default: runs)")
    parser.add_argument("--recipe", help="only runs of this recipe name (a glob such as 'lr-*')")
    parser.add_argument("--tag", help="only runs whose tracking.tags include TAG")
    parser.add_argument("--sort", metavar="METRIC", help="order by METRIC, best first (exact_match, delta.json_valid, "
                        "loss, tokens_per_second, gpu_hours, cost, ...)")
    parser.add_argument("--best", metavar="METRIC", help="show the best run by METRIC first, with its lineage")
    parser.add_argument("--metrics", help="comma-separated metrics to show (default: all in the runs)")
    parser.add_argument("--html", default="runs/compare.html", help="HTML report path (default: runs/compare.html)")
    parser.add_argument("--no-html", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    try:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
        runs, keys, names = compare(args.runs, args.recipe, args.tag, args.sort, args.best, metrics)
    except TailorError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.best:
        print(best_summary(runs, args.best))
    header, rows = table_rows(runs, keys if len(keys) <= MAX_KEY_COLUMNS else [], names)
    print(render_table(header, rows))
    print("metrics: tuned value (delta vs base [95% interval], * = interval excludes 0)"
          + ("" if keys else "; the recipes do not differ (name aside)"))
    diff = [[k, *(recipe_value(r, k) for r in runs)] for k in keys]
    if len(keys) > MAX_KEY_COLUMNS:  # values cut to 32 characters
        cut = [[k, *(v if len(v) <= 32 else v[:29] + "..." for v in values)] for k, *values in diff]
        print(f"\nrecipe differences ({len(keys)} keys):\n{render_table(['recipe key', *(r.name for r in runs)], cut)}")
    for run in runs:
        for problem in run.problems:
            print(f"{run.status.upper()} {run.path}: {problem}")
    if not args.no_html:
        from tailor.compare_report import write_report

        html = Path(args.html)
        write_report(html, runs, (header, rows), diff, names, best_summary(runs, args.best) if args.best else None)
        print(f"report: {html}")


def best_summary(runs: list[RunView], metric: str) -> str:
    """One paragraph on the best run by `metric`: its value, recipe hash, commit, data card and cost."""
    top = next(iter(sort_runs(runs, metric)), None)
    if top is None or metric_value(top, metric) is None:
        return f"best by {metric}: no run has this metric"
    lineage = top.record.get("lineage") or {}
    code = lineage.get("code") or {}
    direction = "lowest" if lower_is_better(metric) else "highest"
    commit = (code.get("git_commit") or "?")[:12] + (" (dirty)" if code.get("git_dirty") else "")
    return (f"best by {metric} ({direction}): {top.name} = {metric_value(top, metric):.4g}\n"
            f"  recipe {str(top.record.get('recipe_hash') or '?')[:12]}, commit {commit}, "
            f"data card {str(lineage.get('data_card_hash') or '?')[:12]}, cost {format_number(top.totals.get('cost'))}")


if __name__ == "__main__":
    main()
