"""Security: safe YAML, no remote code or pickle weights unless the recipe says so, custom code and templates only
from the project, secrets never written to logs, output or run records."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, chat_rows, write_jsonl, write_tiny_recipe

from tailor.errors import TailorError
from tailor.schema import ModelSettings

TRACEBACK = "Traceback (most recent call last)"


def run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **env}
    full.pop("TAILOR_RUN_LOCK", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=600)


def recipe_file(tmp_path: Path, model: Path | str, data_keys: dict | None = None) -> Path:
    data = write_jsonl(tmp_path / "data" / "chat.jsonl", chat_rows(16))
    return write_tiny_recipe(tmp_path / "sec.yaml", model, data, "sec", data_keys=data_keys,
                             training={"max_steps": 1})


# ---------------------------------------------------------------- YAML


def test_no_unsafe_yaml_load_anywhere_in_the_repository() -> None:
    unsafe = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\s*\(|Loader\s*=\s*yaml\.(Loader|FullLoader|"
                        r"UnsafeLoader)|yaml\.unsafe_load")
    offenders = []
    for path in REPO.rglob("*.py"):
        if any(part in {".venv", ".cache", "node_modules", "runs"} for part in path.relative_to(REPO).parts):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if unsafe.search(line) and "test_security" not in path.name:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_recipe_with_python_yaml_tags_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nmodel: {{name_or_path: x}}\n")
    proc = run("tailor", "check", str(evil))
    assert proc.returncode == 2 and TRACEBACK not in proc.stderr, proc.stderr
    assert f"{evil}:1: not valid YAML" in proc.stderr and not marker.exists()


# ---------------------------------------------------------------- remote code


@pytest.fixture
def custom_code_model(tmp_path: Path, tiny_qwen25: Path) -> tuple[Path, Path]:
    """A copy of the tiny model whose config asks for its own Python code (which would leave a marker file)."""
    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_qwen25, folder)
    marker = tmp_path / "remote-code-ran"
    (folder / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers.models.qwen2 import Qwen2Config\n\nclass EvilConfig(Qwen2Config):\n"
        "    model_type = 'evil'\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_remote_code_is_refused_unless_the_recipe_allows_it(custom_code_model, tmp_path: Path) -> None:
    from tailor.models import load_model, module_names

    folder, marker = custom_code_model
    settings = ModelSettings(name_or_path=str(folder))
    with pytest.raises(TailorError, match="trust_remote_code"):
        load_model(settings)
    with pytest.raises(TailorError, match="trust_remote_code"):
        module_names(settings)
    assert not marker.exists()


def test_trust_remote_code_warns_naming_the_code_and_its_source(custom_code_model, caplog) -> None:
    from tailor.models import warn_remote_code

    folder, _ = custom_code_model
    with caplog.at_level(logging.WARNING, logger="tailor.models"):
        warn_remote_code(ModelSettings(name_or_path=str(folder), trust_remote_code=True), str(folder))
        warn_remote_code(ModelSettings(name_or_path="org/model", trust_remote_code=True, revision=None), "org/model")
    assert f"local folder {folder.resolve()}: configuration_evil.py" in caplog.text
    assert "hub repository org/model (revision main, unpinned)" in caplog.text
    caplog.clear()
    warn_remote_code(ModelSettings(name_or_path=str(folder)), str(folder))
    assert not caplog.text


# ---------------------------------------------------------------- pickle weights


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle ran"))


@pytest.fixture
def pickle_model(tmp_path: Path, tiny_qwen25: Path) -> Path:
    """The tiny Qwen2.5 with its weights as pytorch_model.bin (pickle) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickle-model"
    shutil.copytree(tiny_qwen25, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_pickle_weights_are_refused_by_default_and_loaded_when_allowed(pickle_model: Path) -> None:
    from tailor.models import load_model

    with pytest.raises(TailorError, match="allow_pickle_weights: true"):
        load_model(ModelSettings(name_or_path=str(pickle_model)))
    model = load_model(ModelSettings(name_or_path=str(pickle_model), allow_pickle_weights=True))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_malicious_pickle_never_runs_and_the_cli_refuses(tmp_path: Path, pickle_model: Path) -> None:
    marker = tmp_path / "pickle-ran"
    (pickle_model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    recipe = recipe_file(tmp_path, pickle_model)
    proc = run("tailor", "check", str(recipe))
    assert proc.returncode == 2 and TRACEBACK not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert "model.allow_pickle_weights: true" in proc.stderr
    from tailor.models import load_model

    with pytest.raises(TailorError, match="pickle"):
        load_model(ModelSettings(name_or_path=str(pickle_model)))
    assert not marker.exists()


def test_load_model_asks_transformers_for_safetensors_only(pickle_model: Path, monkeypatch) -> None:
    """Defence in depth: even past tailor's own file check, from_pretrained is told use_safetensors=True."""
    import transformers

    from tailor import models

    seen = {}

    def fake(source, **kwargs):
        seen.update(kwargs)
        raise OSError("stop")

    monkeypatch.setattr(models, "check_weight_files", lambda *a: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(TailorError):
        models.load_model(ModelSettings(name_or_path=str(pickle_model)))
    assert seen["use_safetensors"] is True


# ---------------------------------------------------------------- custom code and template files


def test_template_outside_the_project_is_refused_unless_passed_on_the_command_line(tmp_path: Path,
                                                                                  tiny_qwen25: Path) -> None:
    secret = tmp_path / "elsewhere" / "notes.txt"  # any file on the machine, e.g. ~/.ssh/id_rsa
    secret.parent.mkdir()
    secret.write_text((tiny_qwen25 / "chat_template.jinja").read_text())
    sub = tmp_path / "recipes"
    sub.mkdir()
    recipe = recipe_file(sub, tiny_qwen25, data_keys={"template": "../elsewhere/notes.txt"})
    proc = run("tailor", "check", str(recipe))
    assert proc.returncode == 2 and "data.template" in proc.stderr and "outside the project" in proc.stderr, \
        proc.stderr
    proc = run("tailor", "check", str(recipe), f"data.template={secret}")
    assert proc.returncode == 0, proc.stderr


def test_custom_filter_and_metric_from_outside_the_project_are_refused() -> None:
    from data_prep.filters import load_filters
    from tailor.metrics import load_metric

    with pytest.raises(TailorError, match="outside the project"):
        load_filters(["json:dumps"])
    with pytest.raises(TailorError, match="outside the project"):
        load_metric("os.path:exists")
    assert load_filters(["filters_example:drop_refunds"]) and load_metric("eval_metric_example:mentions_number")


# ---------------------------------------------------------------- secrets


SECRETS = {"WANDB_API_KEY": "wandbsecret0123456789abcdef0123456789abcd", "HF_TOKEN": "hf_SECRETsecretSECRET123456",
           "HUGGING_FACE_HUB_TOKEN": "hf_ALSOsecretALSOsecret9876", "OPENAI_API_KEY": "sk-judgeSECRET000111222"}


def assert_no_secret(texts: dict[str, str]) -> None:
    for where, text in texts.items():
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked into {where}"


def test_secrets_never_reach_output_logs_or_the_run_folder(tmp_path: Path, tiny_qwen25: Path) -> None:
    recipe = recipe_file(tmp_path, tiny_qwen25)
    outputs = {}
    for module in (["tailor", "check"], ["data_prep"]):
        proc = run(*module, str(recipe), **SECRETS, TAILOR_LOG="DEBUG")
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[" ".join(module)] = proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / "sec"
    files = {str(p): p.read_bytes().decode("utf-8", errors="replace") for p in run_dir.rglob("*") if p.is_file()}
    assert (run_dir / "run.json").is_file() and len(files) >= 5
    assert_no_secret({**outputs, **files})
