"""The bad-input corpus: hundreds of broken recipes, rows, files and models through the real CLIs.

Each input must end in a clear error (exit 2, the message names the file/line/key) or a counted rejection (its line
in rejected.jsonl with a reason) and never in a traceback. The CLIs run in one subprocess per batch
(`batch_cli.py`), so the whole corpus costs a few process starts. PII planted in odd places must not survive into
any file of the run folder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from faultkit import PY, REPO, TRACEBACK, chat_rows, env, jsonl, write_recipe

BATCH = Path(__file__).resolve().parent / "batch_cli.py"
COUNTS: dict[str, int] = {}


def run_batch(jobs: list[list[str]], tmp_path: Path) -> list[dict]:
    (tmp_path / "jobs.json").write_text(json.dumps([{"argv": j} for j in jobs]))
    proc = subprocess.run([PY, str(BATCH), str(tmp_path / "jobs.json"), str(tmp_path / "out.json")], cwd=REPO,
                          env=env(TAILOR_LOG="WARNING"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def base_recipe(model: Path, data: Path, out: Path) -> dict:
    return {"name": "bad", "output_dir": str(out), "model": {"name_or_path": str(model)},
            "data": {"sources": [{"path": str(data)}], "heldout_fraction": 0.25},
            "training": {"max_steps": 1, "batch_size": 2, "max_length": 64}, "tracking": {"mode": "disabled"}}


def set_key(recipe: dict, dotted: str, value) -> dict:
    import copy

    out = copy.deepcopy(recipe)
    target = out
    keys = dotted.split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else target[int(key)]
    if isinstance(target, list):
        target[int(keys[-1])] = value
    else:
        target[keys[-1]] = value
    return out


WRONG_VALUES = [  # (key, value, text the error must name)
    ("training.lr", "fast", "training.lr"), ("training.lr", [1], "training.lr"), ("training.lr", -1, "training.lr"),
    ("training.lr", 0, "training.lr"), ("training.batch_size", 0, "training.batch_size"),
    ("training.batch_size", "four", "training.batch_size"), ("training.batch_size", 2.5, "training.batch_size"),
    ("training.epochs", 0, "training.epochs"), ("training.epochs", "one", "training.epochs"),
    ("training.max_length", 3, "training.max_length"), ("training.grad_accum", 0, "training.grad_accum"),
    ("training.warmup_ratio", 1.0, "training.warmup_ratio"), ("training.lr_scheduler", "cyclic", "lr_scheduler"),
    ("training.mixed_precision", "fp8", "mixed_precision"), ("training.strategy", "mesh", "training.strategy"),
    ("training.save_steps", 0, "save_steps"), ("training.resume", "maybe", "training.resume"),
    ("training.seed", "x", "training.seed"), ("training.packing", [True], "training.packing"),
    ("training.collective_timeout_s", 1, "collective_timeout_s"), ("peft.r", 0, "peft.r"),
    ("peft.r", "sixteen", "peft.r"), ("peft.alpha", -2, "peft.alpha"), ("peft.dropout", 1.0, "peft.dropout"),
    ("peft.method", "full", "peft.method"), ("peft.target_modules", "q_proj", "peft.target_modules"),
    ("peft.target_modules", 7, "peft.target_modules"), ("peft.moe_experts", "all", "peft.moe_experts"),
    ("model.dtype", "int8", "model.dtype"), ("model.name_or_path", None, "model.name_or_path"),
    ("model.name_or_path", 5, "model.name_or_path"), ("model.trust_remote_code", "yes please", "trust_remote_code"),
    ("model.allow_pickle_weights", "sure", "allow_pickle_weights"),
    ("model.attn_implementation", "flash", "attn_implementation"), ("data.sources", [], "data.sources"),
    ("data.sources", "data.jsonl", "data.sources"), ("data.sources.0.format", "csvish", "data.sources[0].format"),
    ("data.sources.0.weight", 0, "data.sources[0].weight"), ("data.sources.0.weight", 1000, "weight"),
    ("data.sources.0.max_rows", 0, "max_rows"), ("data.sources.0.file_type", "xlsx", "file_type"),
    ("data.sources.0.role_map", {"bot": "robot"}, "role_map"), ("data.heldout_fraction", 1.5, "heldout_fraction"),
    ("data.heldout_fraction", 0, "heldout_fraction"), ("data.max_bad_fraction", -0.1, "max_bad_fraction"),
    ("data.roles_to_train", [], "roles_to_train"), ("data.roles_to_train", ["wizard"], "roles_to_train"),
    ("data.num_proc", 0, "num_proc"), ("data.clean.pii.types", ["SSN"], "pii.types"),
    ("data.clean.dedup.threshold", 0, "dedup.threshold"), ("data.contamination.ngram", 0, "contamination.ngram"),
    ("data.template_kwargs", "thinking", "template_kwargs"), ("eval.metrics", [], "eval.metrics"),
    ("eval.metrics", ["bleu"], "eval.metrics"), ("eval.metrics", ["regex_match"], "regex"),
    ("eval.temperature", -1, "eval.temperature"), ("eval.top_p", 0, "eval.top_p"),
    ("eval.confidence", 0.4, "eval.confidence"), ("eval.bootstrap_resamples", 5, "bootstrap_resamples"),
    ("eval.max_new_tokens", 0, "max_new_tokens"), ("tracking.mode", "cloud", "tracking.mode"),
    ("tracking.backend", "tensorboard", "tracking.backend"), ("tracking.gpu_hour_price", -3, "gpu_hour_price"),
    ("name", "../evil", "name"), ("name", ".", "name"), ("name", "", "name"), ("name", "a b", "name"),
    ("name", None, "name"), ("name", 12, "name"),
]
HUGE_VALUES = [  # huge numbers: refused when out of range; inf/nan are never a valid setting
    ("training.lr", float("inf"), "training.lr"), ("training.epochs", float("nan"), "training.epochs"),
    ("training.warmup_ratio", 1e308, "warmup_ratio"), ("data.heldout_fraction", 1e300, "heldout_fraction"),
    ("peft.dropout", 1e200, "peft.dropout"), ("eval.top_p", 1e50, "eval.top_p"),
    ("data.sources.0.weight", 1e308, "weight"), ("eval.confidence", 1e10, "eval.confidence"),
]
UNKNOWN_KEYS = [  # (key, text the error must name, hint expected)
    ("training.learning_rat", "Did you mean 'training.lr'"), ("training.num_epochs", "training.epochs"),
    ("training.lrr", "training.lr"), ("trainng.lr", "trainng"), ("peft.rank", "peft.r"),
    ("training.lora_alpha", "peft.alpha"), ("model.model_name", "model.name_or_path"), ("model.torch_dtype", "model.dtype"),
    ("data.source", "data.sources"), ("data.sources.0.pth", "data.sources[0].path"),
    ("data.clean.pii.enable", "enabled"), ("eval.metric", "eval.metrics"), ("tracking.projekt", "tracking.project"),
    ("data.clean.dedupe", "data.clean.dedupe"), ("evaluation", "evaluation"), ("model.trust_remote", "trust_remote"),
    ("training.max_seq_length", "training.max_length"), ("peft.lora_target", "peft.target_modules"),
    ("training.padding_free", "training.packing"), ("eval.json_field", "eval.json_field"),
]


def recipe_corpus(tmp_path: Path, model: Path, data: Path) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(kind, argv, needles): every broken recipe of the corpus, written under tmp_path/recipes."""
    import yaml

    folder = tmp_path / "recipes"
    folder.mkdir()
    base = base_recipe(model, data, tmp_path / "runs")
    items = []

    def add(kind: str, name: str, content: str | bytes, *needles: str, named: bool = True) -> None:
        """named: the message names this recipe file (else the file it points at, given in needles)."""
        path = folder / f"{len(items):03d}-{name}.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        items.append((kind, ["tailor", "check", str(path)], (str(path), *needles) if named else needles))

    for key, value, needle in WRONG_VALUES:
        add("recipe: wrong type or value", key, yaml.safe_dump(set_key(base, key, value)), needle)
    for key, value, needle in HUGE_VALUES:
        add("recipe: huge number", key, yaml.safe_dump(set_key(base, key, value)), needle)
    for key, hint in UNKNOWN_KEYS:
        add("recipe: unknown key", key, yaml.safe_dump(set_key(base, key, 1)), "unknown key", hint)
    for section in ("model", "data", "training", "peft", "eval"):
        add("recipe: missing or wrong section", f"no-{section}-dict", yaml.safe_dump({**base, section: "yes"}),
            section)
    add("recipe: missing or wrong section", "no-model", yaml.safe_dump({k: v for k, v in base.items() if k != "model"}),
        "model", "required")
    add("recipe: missing or wrong section", "no-data", yaml.safe_dump({k: v for k, v in base.items() if k != "data"}),
        "data", "required")
    # cycles and broken chains in base:
    (folder / "cycle-a.yaml").write_text("base: cycle-b.yaml\n")
    (folder / "cycle-b.yaml").write_text("base: cycle-a.yaml\n")
    (folder / "cycle-c.yaml").write_text("base: cycle-d.yaml\n")
    (folder / "cycle-d.yaml").write_text("base: cycle-e.yaml\n")
    (folder / "cycle-e.yaml").write_text("base: cycle-c.yaml\n")
    add("recipe: base cycle", "self", "base: 000-self.yaml\nname: x\n".replace("000", f"{len(items):03d}"), "loops")
    add("recipe: base cycle", "two", "base: cycle-a.yaml\n", "loops")
    add("recipe: base cycle", "three", "base: cycle-c.yaml\n", "loops")
    add("recipe: base cycle", "missing-base", "base: nowhere.yaml\n", "recipe file not found", "named by `base:`")
    add("recipe: base cycle", "base-not-str", "base: [a, b]\n", "base:")
    add("recipe: path outside the project", "base-etc-passwd", "base: /etc/passwd\n", "/etc/passwd",
        "must be a mapping", named=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "t.jinja").write_text("{{ messages }}")
    add("recipe: path outside the project", "template-outside",
        yaml.safe_dump(set_key(base, "data.template", str(outside / "t.jinja"))), "data.template",
        "outside the project")
    add("recipe: path outside the project", "template-dotdot",
        yaml.safe_dump(set_key(base, "data.template", "../../../../../../etc/hostname")), "data.template")
    add("recipe: path outside the project", "data-missing",
        yaml.safe_dump(set_key(base, "data.sources.0.path", "../../no/such/file.jsonl")), "data.sources[0].path",
        "does not exist")
    add("recipe: path outside the project", "model-missing",
        yaml.safe_dump(set_key(base, "model.name_or_path", "./no/such/model")), "model.name_or_path",
        "no/such/model", named=False)
    # not YAML, not a mapping, wrong encodings
    good = yaml.safe_dump(base)
    add("recipe: syntax or encoding", "invalid-yaml", "name: [unclosed\nmodel: {\n", "not valid YAML")
    add("recipe: syntax or encoding", "tabs", "name: x\nmodel:\n\tname_or_path: y\n", "not valid YAML")
    add("recipe: syntax or encoding", "list", "- a\n- b\n", "must be a mapping")
    add("recipe: syntax or encoding", "scalar", "just a string\n", "must be a mapping")
    add("recipe: syntax or encoding", "empty", "", "required")
    add("recipe: syntax or encoding", "latin1", ("# caf\xe9\n" + good).encode("latin-1"), "UTF-8")
    add("recipe: syntax or encoding", "utf16", good.encode("utf-16"), "UTF-8")
    add("recipe: syntax or encoding", "binary", bytes(range(256)) * 4, "recipe")
    add("recipe: syntax or encoding", "python-tag", "name: !!python/object/apply:os.getcwd []\n", "not valid YAML")
    add("recipe: syntax or encoding", "duplicate-anchor-bomb",
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n", "unknown key")
    add("recipe: syntax or encoding", "deep-nesting", "name: " + "[" * 5000 + "]" * 5000 + "\n", "recipe")
    # broken command-line overrides
    ok = folder / "ok.yaml"
    ok.write_text(good)
    for override, needle in [("training.lr", "must look like key.path=value"), ("=1", "empty key path"),
                             ("training.lr=fast", "training.lr"), ("data.sources.9.path=x", "not an existing"),
                             ("training..lr=1", "empty key path"), ("nope=1", "unknown key"),
                             ("training.lr=[", "training.lr"), ("peft.r=1e999", "peft.r")]:
        items.append(("recipe: bad override", ["tailor", "check", str(ok), override], ("command line", needle)))
    return items


def test_recipe_corpus_every_input_is_a_clear_error(tmp_path: Path, tiny_qwen25: Path) -> None:
    data = jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    corpus = recipe_corpus(tmp_path, tiny_qwen25, data)
    results = run_batch([argv for _, argv, _ in corpus], tmp_path)
    failures = []
    for (kind, argv, needles), result in zip(corpus, results):
        COUNTS[kind] = COUNTS.get(kind, 0) + 1
        out = result["stdout"] + result["stderr"]
        missing = [n for n in needles if n not in result["stderr"]]
        if result["code"] != 2 or TRACEBACK in out or missing:
            failures.append(f"{argv[2:]}: exit {result['code']}, missing {missing}: {out[-600:]}")
    assert not failures, "\n\n".join(failures)
    assert len(corpus) >= 130


# ---------------------------------------------------------------- data: malformed rows, files, encodings, PII

M = "messages"
BAD_ROWS = [  # one per line; every one must be rejected with its line and a reason
    '{"messages": [', '{"messages": []', "{'messages': []}", '{"messages": [],}', "not json at all", "[1, 2, 3]",
    '"a string"', "42", "null", "true", '{"messages": NaN}', '{"messages": "hello"}', '{"messages": 5}',
    '{"messages": null}', '{"messages": {}}', '{"messages": []}', '{"messages": ["hi", "there"]}',
    '{"messages": [1, 2]}', '{"messages": [[]]}', '{"other": 1}', "{}",
    json.dumps({M: [{"content": "hi"}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": "user"}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": 7, "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": None, "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": "user", "content": {"t": 1}}, {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "   \n\t"}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}]}),
    json.dumps({M: [{"role": "system", "content": "sys"}]}),
    json.dumps({M: [{"role": "assistant", "content": "only an answer"}]}),
    json.dumps({M: [{"role": "user", "content": "a"}, {"role": "system", "content": "late"},
                    {"role": "assistant", "content": "x"}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "train": "yes"}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "train": 1}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"},
                    {"role": "user", "content": "and?"}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]}),
    json.dumps({M: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "train": False}]}),
    json.dumps({M: [{"role": "user", "content": "summarise: " + "lorem ipsum " * 3000},
                    {"role": "assistant", "content": "ok"}]}),
]
BAD_BYTES = [b'{"messages": "\xff\xfe"}', b"\xc3\x28 broken utf8", b'{"messages": [{"role": "user", "content": '
             b'"caf\xe9"}, {"role": "assistant", "content": "x"}]}', b"\x00\x00\x00"]
ALPACA_BAD = ['{"instruction": "", "output": "x"}', '{"instruction": "q"}', '{"instruction": 5, "output": "x"}',
              '{"instruction": "q", "output": ["x"]}', '{"instruction": "q", "input": 3, "output": "x"}',
              '{"output": "x"}', '{"instruction": "q", "output": "   "}', "[]", '{"instruction": null, "output": "x"}']
PC_BAD = ['{"prompt": "q"}', '{"completion": "x"}', '{"prompt": "", "completion": "x"}', '{"prompt": 1, "completion": 2}',
          '{"prompt": "q", "completion": {"a": 1}}', '{"prompt": "q", "completion": null}', '"x"']
SHAREGPT_BAD = [json.dumps({"conversations": [{"from": "alien", "value": "hi"}, {"from": "gpt", "value": "x"}]}),
                json.dumps({"conversations": [{"from": "human", "value": "hi"}]}),
                json.dumps({"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}),
                json.dumps({"conversations": "hi"}), json.dumps({"messages": []}),
                json.dumps({"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]})]
GOOD = {"messages": lambda i: json.dumps(chat_rows(1, i)[0]),
        "alpaca": lambda i: json.dumps({"instruction": f"Say {i}", "output": f"{i}!"}),
        "prompt_completion": lambda i: json.dumps({"prompt": f"Say {i}", "completion": f"{i}!"}),
        "sharegpt": lambda i: json.dumps({"conversations": [{"from": "human", "value": f"Say {i}"},
                                                            {"from": "gpt", "value": f"{i}!"}]})}


def data_job(tmp_path: Path, model: Path, name: str, content: bytes, fmt: str = "messages", suffix: str = "jsonl",
             extra: str = "") -> tuple[list[str], Path]:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    data = folder / f"data.{suffix}"
    data.write_bytes(content)
    import yaml

    recipe = write_recipe(folder, model, data, name=name)
    settings = yaml.safe_load(recipe.read_text())
    settings["data"]["sources"][0]["format"] = fmt
    settings["data"].update(max_bad_fraction=1.0, **(yaml.safe_load(extra) or {}))
    recipe.write_text(yaml.safe_dump(settings, sort_keys=False))
    return ["data_prep", str(recipe)], folder / "runs" / name / "data"


def test_malformed_rows_are_each_rejected_with_line_and_reason(tmp_path: Path, tiny_qwen25: Path) -> None:
    jobs, expect = [], []
    sets = {"messages": [r.encode() for r in BAD_ROWS] + BAD_BYTES, "alpaca": [r.encode() for r in ALPACA_BAD],
            "prompt_completion": [r.encode() for r in PC_BAD], "sharegpt": [r.encode() for r in SHAREGPT_BAD]}
    for fmt, bad in sets.items():
        good = [GOOD[fmt](i).encode() for i in range(30)]
        lines = good[:15] + bad + good[15:]
        argv, data_dir = data_job(tmp_path, tiny_qwen25, f"rows-{fmt}", b"\n".join(lines) + b"\n", fmt)
        jobs.append(argv)
        expect.append((fmt, data_dir, set(range(16, 16 + len(bad)))))
        COUNTS[f"data: malformed {fmt} row"] = len(bad)
    results = run_batch(jobs, tmp_path)
    for (fmt, data_dir, bad_lines), result in zip(expect, results):
        out = result["stdout"] + result["stderr"]
        assert result["code"] == 0 and TRACEBACK not in out, out[-3000:]
        rejected = [json.loads(line) for line in (data_dir / "rejected.jsonl").read_text().splitlines()]
        by_line = {r["line"]: r["reason"] for r in rejected}
        missing = sorted(bad_lines - set(by_line))
        assert not missing, f"{fmt}: bad lines kept: {missing}"
        assert all(by_line[line] for line in bad_lines)
        manifest = json.loads((data_dir / "manifest.json").read_text())
        assert manifest["rows"]["train"] + manifest["rows"]["heldout"] <= 30


SURROGATE = '{"messages": [{"role": "user", "content": "\\ud800 lone"}, {"role": "assistant", "content": "x"}]}'


DEEP = '{"messages": ' + "[" * 3000 + "]" * 3000 + "}"


@pytest.mark.parametrize("row", [SURROGATE, DEEP], ids=["lone-surrogate", "deep-nesting"])
def test_crashing_rows_are_rejected(row: str, tmp_path: Path, tiny_qwen25: Path) -> None:
    rows = [GOOD["messages"](i) for i in range(20)] + [row]
    argv, data_dir = data_job(tmp_path, tiny_qwen25, "surrogate", ("\n".join(rows) + "\n").encode())
    result = run_batch([argv], tmp_path)[0]
    assert result["code"] == 0 and TRACEBACK not in result["stderr"], result["stderr"][-2000:]
    rejected = [json.loads(line) for line in (data_dir / "rejected.jsonl").read_text().splitlines()]
    assert any(r.get("line") == 21 and ("surrogate" in r["reason"] or "nested too deeply" in r["reason"])
               for r in rejected), rejected


@pytest.mark.slow
def test_broken_files_encodings_and_empty_inputs(tmp_path: Path, tiny_qwen25: Path) -> None:
    rows = [GOOD["messages"](i) for i in range(24)]
    text = "\n".join(rows) + "\n"
    cases = [  # (name, bytes, format, suffix, outcome: "ok" | needles of the error)
        ("bom", "\ufeff".encode() + text.encode(), "messages", "jsonl", "ok"),
        ("crlf", text.replace("\n", "\r\n").encode(), "messages", "jsonl", "ok"),
        ("latin1", text.replace("number", "n\xfamero").encode("latin-1"), "messages", "jsonl", ("not UTF-8",)),
        ("utf16", text.encode("utf-16"), "messages", "jsonl", ("not UTF-8",)),
        ("utf16-csv", "prompt,completion\nq,a\n".encode("utf-16"), "prompt_completion", "csv", ("data",)),
        ("zero-bytes", b"", "messages", "jsonl", ("no training row",)),
        ("blank-lines", b"\n\n\n", "messages", "jsonl", ("no training row",)),
        ("all-rejected", b"\n".join(r.encode() for r in BAD_ROWS[:10]) + b"\n", "messages", "jsonl", ("no training",)),
        ("mixed-formats", "\n".join(rows[:12] + [GOOD["alpaca"](i) for i in range(12)]).encode(), "messages",
         "jsonl", "ok"),
        ("csv-wrong-columns", b"a,b\n1,2\n3,4\n", "prompt_completion", "csv", ("no training row",)),
        ("csv-ragged", b"prompt,completion\nq,a,extra,more\n\"unclosed,x\n", "prompt_completion", "csv", ("data",)),
        ("parquet-garbage", b"PAR1 this is not parquet", "messages", "parquet", ("data",)),
        ("jsonl-is-json-array", json.dumps([json.loads(r) for r in rows]).encode(), "messages", "jsonl",
         ("no training row",)),
    ]
    jobs, expect = [], []
    for name, content, fmt, suffix, outcome in cases:
        argv, data_dir = data_job(tmp_path, tiny_qwen25, name, content, fmt, suffix)
        jobs.append(argv)
        expect.append((name, data_dir, outcome))
        COUNTS["data: broken file / encoding / empty"] = COUNTS.get("data: broken file / encoding / empty", 0) + 1
    results = run_batch(jobs, tmp_path)
    failures = []
    for (name, data_dir, outcome), result in zip(expect, results):
        out = result["stdout"] + result["stderr"]
        if TRACEBACK in out:
            failures.append(f"{name}: traceback\n{out[-1500:]}")
        elif outcome == "ok":
            if result["code"] != 0 or not (data_dir / "manifest.json").is_file():
                failures.append(f"{name}: expected success, exit {result['code']}: {out[-800:]}")
        elif result["code"] != 2 or not all(n in result["stderr"] for n in outcome):
            failures.append(f"{name}: expected exit 2 naming {outcome}, got {result['code']}: {out[-800:]}")
    assert not failures, "\n\n".join(failures)


PII = {"EMAIL": "jane.doe.pii@example.com", "PHONE": "+44 20 7946 0958", "CARD": "4111 1111 1111 1111",
       "IBAN": "GB82WEST12345698765432", "IP": "192.168.77.201"}


def test_pii_in_odd_places_never_survives_into_the_run_folder(tmp_path: Path, tiny_qwen25: Path) -> None:
    email, phone, card, iban, ip = PII.values()
    rows = [
        {M: [{"role": "system", "content": f"Escalate to {email}"}, {"role": "user", "content": "hi 1"},
             {"role": "assistant", "content": "ok 1"}]},
        {M: [{"role": "user", "content": f"call me\r\non {phone}\r\n"}, {"role": "assistant", "content": "ok 2"}]},
        {M: [{"role": "user", "content": f"\ufeff{email}"}, {"role": "assistant", "content": "ok 3"}]},
        {M: [{"role": "user", "content": f"carte: {card} — merci ✓"}, {"role": "assistant", "content": "ok 4"}]},
        {M: [{"role": "user", "content": "pay"}, {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "pay", "arguments": json.dumps({"iban": iban, "to": email})}}]},
             {"role": "tool", "content": json.dumps({"ip": ip})}, {"role": "assistant", "content": "ok 5"}]},
        {M: [{"role": "user", "content": f"my iban is {iban.lower()}"}, {"role": "assistant", "content": "ok 6"}]},
        {M: [{"role": "user", "content": "server?"}, {"role": "assistant", "content": f"it is {ip}"}]},
        {M: [{"role": "user", "content": f"<{email}>"}, {"role": "assistant", "content": f"mailto:{email}"}]},
    ] + [json.loads(GOOD["messages"](i)) for i in range(20)]
    content = "\n".join(json.dumps(r, ensure_ascii=(i % 2 == 0)) for i, r in enumerate(rows)).replace("\n", "\r\n")
    argv, data_dir = data_job(tmp_path, tiny_qwen25, "pii", ("\ufeff" + content + "\r\n").encode(),
                              extra="  clean: {dedup: {near: false}}\n")
    result = run_batch([argv], tmp_path)[0]
    assert result["code"] == 0, (result["stdout"] + result["stderr"])[-3000:]
    COUNTS["data: PII in odd places"] = len(PII) + 3
    leaks = []
    for path in (tmp_path / "pii" / "runs").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for kind, value in PII.items():
                for form in {value, value.lower(), value.replace(" ", "")}:
                    if form.encode() in blob or json.dumps(form).encode() in blob:
                        leaks.append(f"{kind} in {path}")
    assert not leaks, leaks
