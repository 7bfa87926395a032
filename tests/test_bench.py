"""`make bench`: the FLOP count against torch's own counter, the synthetic rows, the planner-vs-measured comparison,
and a 1-step run of the three rows."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from bench import train as bench
from bench.flops import effective_length, flops_per_token, gpu_peak_flops, shape_from_config
from train.memory import Arch
from train.plan import arch_configs


@pytest.mark.parametrize("checkpointing", [False, True])
def test_flop_count_matches_torch_flop_counter(checkpointing: bool) -> None:
    """Forward + backward of a LoRA model, counted by torch.utils.flop_counter, equals bench/flops.py's formula
    (eager attention, so the attention products are plain matmuls the counter sees)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()  # as with checkpointing: the first layer's input gradients are computed too
    n = 96
    ids = torch.randint(0, 1000, (1, n))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    expected = flops_per_token(shape_from_config(config), 4, "all-linear", doc_length=n, loss_fraction=1.0,
                               gradient_checkpointing=checkpointing).total * n
    # exact without checkpointing; with it, torch stops recomputing a layer once its saved tensors are rebuilt
    assert counter.get_total_flops() == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "qwen2.5-7b", "qwen3-8b"])
def test_shape_counts_the_real_architecture(name: str) -> None:
    """Layer and LoRA parameter counts from the config equal those of the real module tree (built on meta)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(arch_configs()[name].read_text())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw))
    layers = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in n)
    shape = shape_from_config(raw)
    assert shape.layer_params == layers
    assert shape.head_params == model.lm_head.weight.numel()
    peft_model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert shape.lora_params(16) == lora


def test_flop_terms_and_peaks() -> None:
    shape = Arch(layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=100)
    plain = flops_per_token(shape, 2, doc_length=10, loss_fraction=0.5)
    checkpointed = flops_per_token(shape, 2, doc_length=10, loss_fraction=0.5, gradient_checkpointing=True)
    assert plain.recompute == 0 and checkpointed.recompute > 0
    assert checkpointed.total - plain.total == checkpointed.recompute
    # frozen base: the activation backward of the base equals its forward (no weight gradients)
    assert plain.backward_adapters == 2 * shape.lora_params(2)
    assert effective_length([10, 30]) == pytest.approx((100 + 900) / 40)
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert gpu_peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert gpu_peak_flops("Some Future GPU") is None


def test_synthetic_rows_are_seeded_clipped_and_half_masked(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    lengths = bench.synthetic_lengths(2000, 512, seed=3)
    assert lengths == bench.synthetic_lengths(2000, 512, seed=3)
    assert min(lengths) == 64 and max(lengths) == 512
    assert 50 < sorted(lengths)[1000] < 90  # median ~ seq/8
    bench.write_rows(tmp_path / "rows.parquet", lengths[:20])
    table = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    assert [len(r["input_ids"]) for r in table] == lengths[:20]
    for row in table:
        n = len(row["input_ids"])
        assert row["assistant_masks"] == [0] * (n // 2) + [1] * (n - n // 2)
        assert max(row["input_ids"]) < bench.TOKEN_ID_LIMIT


def test_record_appends_one_block_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = bench.parse_args(["--model", "tiny", "--seq", "512", "--steps", "2", "--warmup", "1"])
    info = {"device": "CPU test", "peak_note": "peak x"}
    row = {"method": "lora", "tokens_per_second": 100.0, "step_seconds": 1.0, "peak_memory": 2**30, "mfu": 0.1,
           "dtype": "float32", "settings": {"batch": 4, "packing": True, "grad_accum": 1, "liger": False}}
    plan = bench.compare_memory({"weights": 1.1 * 2**30}, 2**30, 2**30)
    results = [{**row, "side": "tailor", "memory_plan": plan}, {**row, "side": "trl-tuned", "tokens_per_second": 80.0},
               {**row, "side": "trl-defaults", "tokens_per_second": 50.0},
               {"method": "qlora", "side": "tailor", "error": "out of memory"}]
    bench.record(args, ["--seq", "512"], info, results)
    bench.record(args, ["--seq", "512"], info, results)
    text = Path("BENCHMARKS.md").read_text()
    assert text.count(bench.SECTION) == 1 and text.count("Command: `python -m bench.train --seq 512`") == 2
    assert "| MFU | tailor / trl tuned | tailor / trl defaults |" in text
    assert ("| lora | tailor defaults | float32, packing | 4 | 100 | 1.000 | 1.00 GB (plan +10%) | 10.0% | 1.25x | "
            "2.00x |") in text
    assert "| lora | trl tuned by hand | float32, packing | 4 | 80 | 1.000 | 1.00 GB | 10.0% |  |  |" in text
    assert "| lora | trl defaults | float32, packing | 4 | 50 |" in text
    assert "| qlora | tailor defaults | | | failed: out of memory | | | | | |" in text
    assert not list(tmp_path.glob(".BENCHMARKS.md.*"))  # the atomic write left no temporary file


def test_planner_vs_measured_leaves_out_what_the_allocator_does_not_see() -> None:
    """max_memory_allocated counts neither the CUDA context, NCCL's buffers nor the allocator's slack; reserved
    counts the slack."""
    gib = 2**30
    plan = {"weights": 14 * gib, "activations": 10 * gib, "allocator fragmentation": 1 * gib,
            "CUDA context": 0.75 * gib, "NCCL buffers": 0.5 * gib}
    result = bench.compare_memory(plan, allocated=20 * gib, reserved=25 * gib)
    assert result["planned_total"] == pytest.approx(26.25 * gib)
    assert result["planned_allocated"] == pytest.approx(24 * gib)
    assert result["error_allocated"] == pytest.approx(0.2) and result["within_goal"] == 0.0
    assert result["planned_reserved"] == pytest.approx(25 * gib) and result["error_reserved"] == pytest.approx(0.0)
    close = bench.compare_memory(plan, allocated=25 * gib, reserved=26 * gib)
    assert close["error_allocated"] == pytest.approx(-0.04) and close["within_goal"] == 1.0
    assert "(-4.0%)" in bench.format_memory_plan(close) and "goal within 15%: yes" in bench.format_memory_plan(close)


ROW = re.compile(r"^(lora|qlora)\s+(tailor|trl-tuned|trl-defaults)\s+(\d+)\s+([\d,.]+)\s+([\d.]+)\s+([\d,.]+)\s+"
                 r"([\d.]+)GB\s+([\d.]+)\s+([\d.]+)%", re.M)


@pytest.mark.slow  # ~15 s each; `make bench` itself runs the same code
@pytest.mark.parametrize("methods", [("lora",), ("lora", "qlora")])
def test_one_step_bench_prints_three_rows_and_ratios(methods: tuple[str, ...], tiny_qwen25: Path, tmp_path: Path,
                                                     capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole bench at 1 step, all rows in this process, on the tiny Qwen2.5: nothing is recorded (QLoRA rows in
    make test-slow)."""
    from tailor.precision import resolve_precision

    monkeypatch.chdir(tmp_path)  # BENCHMARKS.md would be written here
    monkeypatch.setenv("TAILOR_TINY_MODELS_DIR", str(tiny_qwen25.parent))
    results = bench.main(["--model", "test", "--seq", "64", "--steps", "1", "--warmup", "0", "--no-record",
                          "--in-process", "--methods", *methods, "--json", str(tmp_path / "bench.json")])
    out = capsys.readouterr().out
    rows = ROW.findall(out)
    native_bf16 = resolve_precision("auto").name == "bf16"
    # trl's defaults autocast to bf16: on a CPU without native bf16 that row is left out, saying why
    sides = ("tailor", "trl-tuned", "trl-defaults") if native_bf16 else ("tailor", "trl-tuned")
    assert ("trl-defaults: not run: trl's default bf16 autocast" in out) != native_bf16, out
    assert sorted((m, s) for m, s, *_ in rows) == sorted((m, s) for m in methods for s in sides), out
    for *_, tokens_per_step, step, tokens_per_second, memory, gflop, mfu in rows:
        values = [float(v.replace(",", "")) for v in (tokens_per_step, step, tokens_per_second, memory, gflop, mfu)]
        assert all(math.isfinite(v) and v > 0 for v in values), out
    ratios = re.findall(r"^(lora|qlora)\s+ratio tokens/s tailor/trl-tuned: ([\d.]+)x(?:, tailor/trl-defaults: "
                        r"([\d.]+)x)?$", out, re.M)
    assert [m for m, *_ in ratios] == list(methods), out
    assert all(float(v) > 0 for _, *r in ratios for v in r if v or native_bf16), out
    assert all(math.isfinite(r["loss"]) for r in results)
    assert json.loads((tmp_path / "bench.json").read_text())["results"] == results
    expected = {"bfloat16" if resolve_precision("auto").name == "bf16" else "float32"}
    for method in methods:
        side = {r["side"]: r for r in results if r["method"] == method}
        tailor, tuned, defaults = side["tailor"], side["trl-tuned"], side.get("trl-defaults")
        if defaults is not None:  # trl defaults: checkpointing, padded batches of 8
            assert defaults["settings"]["gradient_checkpointing"] and defaults["settings"]["batch"] == 8
            assert not defaults["settings"]["packing"] and defaults["flops_per_token"]["recompute"] > 0
        # tuned by hand: packing (padding-free), no checkpointing, tailor's precision, optimizer and micro batch
        assert tuned["settings"]["packing"] and tuned["settings"]["padding_free"]
        assert not tuned["settings"]["gradient_checkpointing"] and tuned["flops_per_token"]["recompute"] == 0
        assert {tuned["dtype"], tailor["dtype"]} == expected
        for key in ("bf16", "fp16", "optim", "batch", "grad_accum", "liger", "attn"):
            assert tuned["settings"][key] == tailor["settings"][key], key
        assert (tailor["flops_per_token"]["recompute"] > 0) == tailor["settings"]["gradient_checkpointing"]
    # tailor's CPU LM-head compaction is on for its rows only and never leaks into a trl row run after it
    assert [r["settings"]["compact_lm_head"] for r in results] == [r["side"] == "tailor" for r in results]
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_train_run_is_a_prepared_run_for_python_m_train(tiny_qwen25: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`--train-run` (the GPU check's DDP phase) writes a recipe, its overrides and prepared rows that the launcher
    accepts as they are."""
    import shlex

    from tailor.contract import check_prepared_data
    from tailor.recipe import load_recipe
    from tailor.runs import run_paths

    monkeypatch.setenv("TAILOR_TINY_MODELS_DIR", str(tiny_qwen25.parent))
    args = bench.parse_args(["--model", "test", "--seq", "64", "--warmup", "0", "--steps", "3", "--train-run",
                             str(tmp_path / "ddp"), "--set", "training.grad_accum=2"])
    recipe_file, *overrides = shlex.split(bench.write_train_run(args, args.train_run).read_text())
    recipe = load_recipe(recipe_file, overrides)
    assert (recipe.name, recipe.training.max_steps, recipe.training.max_length) == ("bench-train", 3, 64)
    assert recipe.training.grad_accum == 2 and recipe.tracking.mode == "disabled"
    assert check_prepared_data(recipe, run_paths(recipe))["synthetic"]


def test_gpu_check_script_parses() -> None:
    """bench/gpu_check.sh is valid bash (its CPU run: `bash bench/gpu_check.sh --cpu-smoke`, a few minutes)."""
    import subprocess

    script = Path(bench.__file__).with_name("gpu_check.sh")
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 2 and "--cpu-smoke" in usage.stdout and "pip download" in usage.stdout


def test_gpu_rows_take_the_planners_micro_batch(tmp_path: Path) -> None:
    """On a GPU the tailor row trains the largest micro batch the planner says fits (packed 4096-token sequences,
    no checkpointing, as tailor's defaults are), not a fixed 4 that would not fit a 7B model in 80 GB."""
    from dataclasses import replace

    from tailor.recipe import load_recipe
    from train.memory import estimate, usable_bytes
    from train.plan import build_arch, recipe_setup

    model_dir = tmp_path / "qwen2.5-7b"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(arch_configs()["qwen2.5-7b"].read_text())
    spec = {"method": "lora", "warmup": 3, "steps": 20, "seq": 4096, "batch": None, "overrides": []}
    recipe = load_recipe(bench.bench_recipe_file(tmp_path, model_dir, tmp_path / "rows.parquet"),
                         bench.row_overrides(spec))
    assert recipe.training.packing and not recipe.training.gradient_checkpointing

    batch = bench.planned_micro_batch(recipe, 80)
    arch, lora_params, targets = build_arch(recipe)
    setup = recipe_setup(recipe, 1, "single", lora_params, targets)
    fits = lambda b: estimate(arch, replace(setup, micro_batch=b)).total <= usable_bytes(80)  # noqa: E731
    assert 1 <= batch < recipe.training.batch_size and fits(batch) and not fits(batch + 1)
    # the memory each GPU row is checked against: the same plan for tailor and trl-tuned, none for trl's defaults
    planned = load_recipe(bench.bench_recipe_file(tmp_path, model_dir, tmp_path / "rows.parquet"),
                          [*bench.row_overrides(spec), f"training.batch_size={batch}"])
    tailor, tuned = (bench.planned_memory(planned, side, 80) for side in ("tailor", "trl-tuned"))
    assert tailor == tuned and sum(tailor.values()) == pytest.approx(estimate(arch, replace(setup, micro_batch=batch))
                                                                     .total)
    assert bench.planned_memory(planned, "trl-defaults", 80) is None
    # nothing fits a 24 GB card without checkpointing: the recipe's own batch, and the row reports the OOM
    assert bench.planned_micro_batch(recipe, 24) == recipe.training.batch_size


def test_each_bench_records_into_its_own_section(tmp_path: Path) -> None:
    """Results land at the end of their own section (or table), not after whichever section comes last."""
    from bench.record import add_to_section

    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Data\n\n| date | x |\n|---|---|\n| d1 | 1 |\n\nReading: prose.\n\n"
                    "## Training\n\nintro\n\n### run 1\n\ntable 1\n\n## Eval\n\n| date | y |\n|---|---|\n| e1 | 2 |\n")
    add_to_section(path, "Data", "unused", ["| d2 | 3 |"], into_table=True)
    add_to_section(path, "Training", "unused", ["### run 2", "", "table 2"])
    add_to_section(path, "Eval", "unused", ["| e2 | 4 |"], into_table=True)
    add_to_section(path, "New", "fresh intro", ["| n1 | 5 |"], into_table=True)
    assert path.read_text() == (
        "# Benchmarks\n\n## Data\n\n| date | x |\n|---|---|\n| d1 | 1 |\n| d2 | 3 |\n\nReading: prose.\n\n"
        "## Training\n\nintro\n\n### run 1\n\ntable 1\n\n### run 2\n\ntable 2\n\n## Eval\n\n| date | y |\n|---|---|\n"
        "| e1 | 2 |\n| e2 | 4 |\n\n## New\n\nfresh intro\n| n1 | 5 |\n")


def test_dpo_pairs_are_seeded_fit_max_length_and_tokenize_back(tiny_qwen25: Path, tmp_path: Path) -> None:
    """bench.dpo's pairs: seeded log-normal lengths that fit max_length; the text given to plain trl tokenizes back,
    as trl's DPOTrainer tokenizes it (prompt, prompt + completion), to exactly the prepared ids."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from bench import dpo

    lengths = dpo.pair_lengths(2000, 512, seed=3)
    assert lengths == dpo.pair_lengths(2000, 512, seed=3)
    assert all(16 <= p <= 256 and 16 <= c <= 512 - p and 16 <= r <= 512 - p for p, c, r in lengths)
    assert 24 < sorted(p for p, _, _ in lengths)[1000] < 40  # median ~ seq/16
    dpo.write_pairs(tmp_path / "ids.parquet", tmp_path / "text.parquet", lengths[:20], tiny_qwen25)
    ids = pq.read_table(tmp_path / "ids.parquet").to_pylist()
    text = pq.read_table(tmp_path / "text.parquet").to_pylist()
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen25)
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for (p, c, r), row, words in zip(lengths, ids, text):
        assert [len(row[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")] == [p, c, r]
        assert row["chosen_ids"][-1] == row["rejected_ids"][-1] == tokenizer.eos_token_id
        assert words["chosen"].endswith(tokenizer.eos_token)  # trl adds no second EOS
        assert encode(words["prompt"]) == row["prompt_ids"]
        for side in ("chosen", "rejected"):
            assert encode(words["prompt"] + words[side]) == row["prompt_ids"] + row[f"{side}_ids"]


def test_dpo_record_has_its_own_section(tmp_path: Path) -> None:
    from bench import dpo

    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\n## {bench.SECTION}\n\nSFT intro\n")
    args = dpo.parse_args(["--model", "tiny", "--seq", "256", "--steps", "3", "--warmup", "1", "--benchmarks",
                           str(path)])
    row = {"method": "lora", "tokens_per_second": 100.0, "tokens_per_step": 400.0, "step_seconds": 4.0,
           "peak_memory": 2**30, "dtype": "bfloat16", "same_tokens": True,
           "settings": {"batch": 4, "grad_accum": 1, "packing": False, "bf16": True, "beta": 0.1}}
    results = [{**row, "side": "tailor"}, {**row, "side": "trl-tuned", "tokens_per_second": 50.0}]
    for _ in range(2):
        dpo.record(args, ["--seq", "256"], "CPU test", [(16, 20, 24)], results)
    text = path.read_text()
    assert text.index(bench.SECTION) < text.index(dpo.SECTION) and text.count(dpo.SECTION) == 1
    assert "Compare like with like: the baseline gets the same switches a competent user would set." in text
    assert text.count("Command: `python -m bench.dpo --seq 256` (1 warmup + 3 measured steps per row") == 2
    assert "| tailor defaults | bfloat16, bf16, beta=0.1 | 4 | 400 | 100 | 4.000 | 1.00 GB | 2.00x |" in text
    assert "| trl tuned by hand | bfloat16, bf16, beta=0.1 | 4 | 400 | 50 | 4.000 | 1.00 GB |  |" in text


DPO_ROW = re.compile(r"^(tailor|trl-tuned)\s+(\d+)\s+([\d,]+)\s+([\d.]+)\s+([\d,.]+)\s+([\d.]+)GB\s+(\S+), ", re.M)


@pytest.mark.slow  # like the SFT bench's 1-step test; `make bench` itself runs the same code
def test_one_step_dpo_bench_prints_both_rows_and_the_ratio(tiny_qwen25: Path, tmp_path: Path, capsys,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m bench.dpo` at 1 step, both rows in this process, on the tiny Qwen2.5: nothing is recorded, the
    plain trl row re-tokenized the text to tailor's ids, and both rows have the same switches but tailor's own."""
    from bench import dpo

    monkeypatch.chdir(tmp_path)  # BENCHMARKS.md would be written here
    monkeypatch.setenv("TAILOR_TINY_MODELS_DIR", str(tiny_qwen25.parent))
    results = dpo.main(["--model", "test", "--seq", "64", "--steps", "1", "--warmup", "0", "--no-record",
                        "--in-process"])
    out = capsys.readouterr().out
    rows = DPO_ROW.findall(out)
    assert [r[0] for r in rows] == ["tailor", "trl-tuned"], out
    for _, pairs, *figures, dtype in rows:
        assert int(pairs) == 4 and all(float(v.replace(",", "")) > 0 for v in figures), out
    assert re.search(r"^ratio tokens/s tailor/trl-tuned: [\d.]+x$", out, re.M), out
    assert "not the prepared pairs' tokens" not in out and all(r["same_tokens"] for r in results)
    tailor, tuned = results
    assert tailor["tokens_per_step"] == tuned["tokens_per_step"]  # the same pairs in the same batches
    for key in ("bf16", "fp16", "optim", "batch", "grad_accum", "liger", "attn", "gradient_checkpointing",
                "max_length", "beta", "loss_type"):
        assert tuned["settings"][key] == tailor["settings"][key], key
    assert [r["settings"]["compact_lm_head"] for r in results] == [True, False]
    assert all(math.isfinite(r["loss"]) for r in results)
    assert not (tmp_path / "BENCHMARKS.md").exists()
