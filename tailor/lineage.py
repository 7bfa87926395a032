"""What made a run and what it cost: code, packages, launch, hardware, durations, device-hours and prices.

The only environment variables read are WORLD_SIZE, TAILOR_STRATEGY and TAILOR_GPU_HOUR_PRICE, so no secret can
reach a record. `tailor.runs` imports this module, which imports only `tailor.hashing` (hence its own JSON reading).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailor.hashing import file_sha256

if TYPE_CHECKING:
    from tailor.runs import RunPaths

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "wandb")
PRICE_ENV = "TAILOR_GPU_HOUR_PRICE"
SOURCE_ROOT = Path(__file__).resolve().parents[1]
# a source checkout (make setup's editable install) has its pyproject.toml here; an installed wheel has none (its
# site-packages may sit inside some other git repository, whose commit says nothing about tailor)
FROM_SOURCE = (SOURCE_ROOT / "pyproject.toml").is_file()


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Git commit and dirty flag of tailor's checkout (None outside one), tailor, Python and key package versions."""
    def git(*args: str) -> str | None:
        if not FROM_SOURCE:
            return None
        try:
            return subprocess.run(["git", *args], cwd=SOURCE_ROOT, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None,
            "tailor_version": package_versions(("tailor",))["tailor"], "python": platform.python_version(),
            "packages": package_versions(PACKAGES)}


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each distribution, None when it is not installed."""
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in names}


def launch_profile() -> dict[str, Any]:
    """How the stage was launched: strategy and world size as set by tailor's launcher (default: single)."""
    try:
        world_size = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        world_size = 1
    return {"strategy": os.environ.get("TAILOR_STRATEGY") or "single", "world_size": world_size}


@functools.lru_cache(maxsize=1)
def hardware() -> dict[str, Any]:
    """GPU model and count (torch.cuda), CPU model and cores of this machine."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"gpu_count": gpus, "gpu_model": torch.cuda.get_device_name(0) if gpus else None,
            "cpu_model": cpu_name(), "cpu_isa": torch.backends.cpu.get_cpu_capability(), "cpu_cores": os.cpu_count()}


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(paths: "RunPaths") -> dict[str, Any]:
    """The lineage facts that need no recipe: code, launch, hardware and the data card hash (None before data)."""
    card = paths.data_dir / "data_card.json"
    return {"code": code_version(), "launch": launch_profile(), "hardware": hardware(),
            "data_card_hash": file_sha256(card) if card.is_file() else None}


def stage_facts(paths: "RunPaths", stage: str, info: dict[str, Any]) -> dict[str, Any]:
    """`usage` (duration, device kind and count, device-hours, eval token counts) and `lineage` of a finished stage;
    the duration is the stage's own `seconds`, else the eval's wall time, else the data manifest's `seconds`."""
    env = environment(paths)
    results = _safe_json(paths.results) if stage == "eval" and paths.results.is_file() else {}
    meter = info.get("cost") if isinstance(info.get("cost"), dict) else results.get("cost")
    meter = meter if isinstance(meter, dict) else {}
    seconds = info.get("seconds") if isinstance(info.get("seconds"), (int, float)) else meter.get("wall_seconds")
    if seconds is None and stage == "data" and paths.manifest.is_file():
        seconds = _safe_json(paths.manifest).get("seconds")
    if seconds is None and isinstance(results.get("seconds"), dict):
        seconds = round(sum(v for v in results["seconds"].values() if isinstance(v, (int, float))), 1)
    world = int(info.get("world_size") or env["launch"]["world_size"])
    gpus = meter.get("gpus") if isinstance(meter.get("gpus"), int) else \
        min(world, env["hardware"]["gpu_count"]) if env["hardware"]["gpu_count"] else 0
    device, count = ("gpu", gpus) if gpus else ("cpu", world)
    hours = round(seconds * count / 3600, 6) if isinstance(seconds, (int, float)) else None
    usage: dict[str, Any] = {"seconds": seconds, "device": device, "devices": count, "device_hours": hours}
    if stage == "train":
        usage.update({key: info.get(key) for key in ("tokens_seen", "tokens_per_second")})
    if stage == "eval" and results:
        tuned = ((meter.get("generation") or {}).get("tuned") or {})
        usage["predictions"] = results.get("rows")
        usage["tuned_seconds"] = tuned.get("generation_seconds", (results.get("seconds") or {}).get("tuned"))
        usage["eval_tokens"] = eval_tokens(paths, results, tuned.get("generated_tokens"))
    return {"usage": usage, "lineage": env}


def _safe_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def eval_tokens(paths: "RunPaths", results: dict[str, Any], generated: int | None = None) -> dict[str, Any]:
    """Prompt and generated tokens of the tuned model's held-out answers: `generated` when given, else counted with
    the adapter's tokenizer over predictions.jsonl, or estimated at 4 characters per token (`source` says which)."""
    prompts, answers = [], []
    try:
        for line in paths.predictions.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            prompts.append(str(row.get("prompt", "")))
            answers.append(str(row.get("tuned", "")))
    except (OSError, ValueError):
        return {"prompt": None, "generated": None, "source": "missing"}
    count = _token_counter(Path(results.get("adapter") or paths.adapter_dir))
    if count is None:
        counted = {"prompt": sum(len(p) for p in prompts) // 4, "generated": sum(len(a) for a in answers) // 4,
                   "source": "estimated (4 characters per token)"}
    else:
        counted = {"prompt": count(prompts), "generated": count(answers), "source": "counted"}
    if isinstance(generated, int):
        counted["generated"] = generated
        counted["source"] += "; generated tokens from eval"
    return counted


def _token_counter(folder: Path):
    """A function counting tokens of a list of texts with the tokenizer saved in `folder`, or None."""
    if not (folder / "tokenizer_config.json").is_file():
        return None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001 - any loading problem means: estimate instead
        log.warning("could not load the tokenizer in %s to count eval tokens (%s); estimating", folder, err)
        return None
    return lambda texts: sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) \
        if texts else 0


def gpu_hour_price(recipe: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """Price per device-hour and where it came from: the recipe's tracking.gpu_hour_price, else the env var."""
    price = ((recipe or {}).get("tracking") or {}).get("gpu_hour_price")
    if isinstance(price, (int, float)):
        return float(price), "recipe tracking.gpu_hour_price"
    text = os.environ.get(PRICE_ENV)
    if text:
        try:
            value = float(text)
            if value >= 0:
                return value, f"env {PRICE_ENV}"
        except ValueError:
            pass
        log.warning("%s=%r is not a non-negative number; cost is not computed", PRICE_ENV, text)
    return None, None


def totals(record: dict[str, Any]) -> dict[str, Any]:
    """Durations, device-hours, tokens and costs summed over a run record's stages (sets each `usage.cost` too)."""
    stages = record.get("stages") or {}
    price, source = gpu_hour_price(record.get("recipe"))
    out: dict[str, Any] = {"seconds": 0.0, "gpu_hours": 0.0, "cpu_hours": 0.0, "price_per_gpu_hour": price,
                           "price_source": source}
    for entry in stages.values():
        usage = entry.get("usage") if isinstance(entry, dict) else None
        if not isinstance(usage, dict):
            continue
        if isinstance(usage.get("seconds"), (int, float)):
            out["seconds"] += usage["seconds"]
        hours = usage.get("device_hours")
        if isinstance(hours, (int, float)):
            out["gpu_hours" if usage.get("device") == "gpu" else "cpu_hours"] += hours
        usage["cost"] = round(hours * price, 6) if price is not None and isinstance(hours, (int, float)) else None
    out = {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}
    train = stages.get("train") if isinstance(stages.get("train"), dict) else {}
    for key in ("tokens_seen", "tokens_per_second"):
        out[key] = (train.get("usage") or {}).get(key, train.get(key))
    out["cost"] = round((out["gpu_hours"] + out["cpu_hours"]) * price, 6) if price is not None else None
    out.update(_eval_costs((stages.get("eval") or {}).get("usage") or {}, price, record.get("recipe")))
    return out


def _eval_costs(entry: dict[str, Any], price: float | None, recipe: dict[str, Any] | None) -> dict[str, Any]:
    """Cost of 1k held-out predictions of the tuned model, and what a paid API would charge for the same eval."""
    out: dict[str, Any] = {"cost_per_1k_predictions": None, "api_cost": None, "api_cost_per_1k_predictions": None}
    rows = entry.get("predictions")
    if not isinstance(rows, int) or rows <= 0:
        return out
    seconds, devices = entry.get("tuned_seconds"), entry.get("devices") or 1
    if price is not None and isinstance(seconds, (int, float)):
        out["cost_per_1k_predictions"] = round(seconds * devices / 3600 * price / rows * 1000, 6)
    api = ((recipe or {}).get("tracking") or {}).get("api_price_per_1m_tokens")
    tokens = entry.get("eval_tokens") or {}
    if isinstance(api, dict) and tokens.get("prompt") is not None and tokens.get("generated") is not None:
        cost = (tokens["prompt"] * api.get("input", 0.0) + tokens["generated"] * api.get("output", 0.0)) / 1e6
        out["api_cost"] = round(cost, 6)
        out["api_cost_per_1k_predictions"] = round(cost / rows * 1000, 6)
    return out
