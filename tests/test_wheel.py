"""Installable: a wheel built from the project holds everything read at run time, and its `tailor` command works
in a fresh venv, from a folder outside the source tree, without the tree on the path.

The fresh venv gets the wheel alone (no dependencies); the dependencies come from this venv's site-packages named in
a `.pth` file. Python does not process the .pth files of a folder named that way, so the editable install's finder
there stays inactive and the source tree stays invisible (checked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tailor.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tailor", "data_prep", "train", "eval")
RUNTIME_DATA = ("tailor/arch_configs", "tailor/templates", "train/profiles",
                "eval/general_data")


def run(command: list, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(wheel, venv, env): the wheel built from a copy of the tree (the tree gets no build/ or egg-info) and a fresh
    venv with it installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist",
                 "."], src, env)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp / "dist").glob("tailor-*.whl"))
    venv = tmp / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    done = run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], tmp, env)
    assert done.returncode == 0, done.stderr
    target = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env).stdout.strip()
    Path(target, "tailor-deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    return wheel, venv, env


def test_wheel_holds_the_runtime_data_and_no_tests(installed) -> None:
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for folder in RUNTIME_DATA:
        files = {p.relative_to(REPO).as_posix() for p in (REPO / folder).glob("*") if p.is_file()}
        assert files <= names, f"missing from the wheel: {sorted(files - names)}"
    for needed in ("train/profiles/fsdp.yaml", "train/profiles/zero3.json", "tailor/arch_configs/qwen3-8b.json",
                   "eval/general_data/gsm8k.jsonl",
                   "eval/general_data/LICENSE"):
        assert needed in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    assert "tailor = tailor.cli:main" in entry_points


def test_installed_tailor_checks_a_recipe_outside_the_tree(installed, tiny_recipe, tmp_path: Path) -> None:
    _, venv, env = installed
    recipe = tiny_recipe()  # in tmp_path, outside the tree
    probe = run([venv / "bin" / "python", "-c", "import tailor, train, eval, data_prep\n"
                 "from eval.retention import available\nfrom train.launch import PROFILES\n"
                 "from tailor.lineage import code_version\n"
                 "print(*[m.__file__ for m in (tailor, train, eval, data_prep)], PROFILES, available(), sep='\\n')\n"
                 "print(code_version()['git_commit'], code_version()['tailor_version'])"], tmp_path, env)
    assert probe.returncode == 0, probe.stderr
    *files, sets, version = probe.stdout.strip().splitlines()
    assert all(Path(f).resolve().is_relative_to(venv.resolve()) for f in files), files
    assert sets == "['gsm8k']" and version.startswith("None 0.")  # no git checkout: the package version
    checked = run([venv / "bin" / "tailor", "check", recipe], tmp_path, env)
    assert checked.returncode == 0, checked.stderr
    assert f"{recipe}: OK (tiny:" in checked.stdout
    helped = run([venv / "bin" / "tailor", "--help"], tmp_path, env)
    assert helped.returncode == 0 and all(f"  {name} " in helped.stdout for name in COMMANDS)


def test_unknown_command_prints_the_usage(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["trian", "r.yaml"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "usage: tailor COMMAND" in err
    assert all(name in err for name in ("check", "data", "audit", "train", "plan", "merge", "eval", "compare"))
