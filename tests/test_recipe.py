"""Recipe loading: schema validation, inheritance, overrides, and error messages that say what to fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import REPO, write
from tailor.cli import check, main as cli_main, recipe_parser
from tailor.errors import TailorError
from tailor.recipe import load_recipe, recipe_hash

MINIMAL = textwrap.dedent("""
    name: r
    model:
      name_or_path: Qwen/Qwen2.5-0.5B-Instruct
    data:
      sources:
        - path: data.jsonl
""").lstrip()


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe: Path) -> None:
    loaded = load_recipe(recipe)
    for source in loaded.data.sources:
        assert Path(source.path).is_file(), f"{recipe}: {source.path} missing"


def test_defaults_and_paths_resolve_relative_to_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "sub" / "r.yaml", MINIMAL))
    assert recipe.peft.method == "lora" and recipe.peft.target_modules == "all-linear"
    assert recipe.model.trust_remote_code is False
    assert recipe.tracking.mode == "offline"
    assert Path(recipe.data.sources[0].path).resolve() == (tmp_path / "sub" / "data.jsonl").resolve()


def test_unknown_key_names_file_line_path_and_closest_key(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL + "training:\n  lrr: 0.1\n")
    with pytest.raises(TailorError) as err:
        load_recipe(path)
    message = str(err.value)
    assert f"{path}:8" in message
    assert "training.lrr: unknown key" in message
    assert "Did you mean 'training.lr'?" in message


def test_wrong_type_is_reported_with_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL + "training:\n  batch_size: four\n")
    with pytest.raises(TailorError, match=r"r.yaml:8: training.batch_size: .*integer.*'four'"):
        load_recipe(path)


def test_nested_unknown_key_in_list_item(tmp_path: Path) -> None:
    text = MINIMAL.replace("- path: data.jsonl", "- path: data.jsonl\n      formt: alpaca")
    with pytest.raises(TailorError, match=r"data.sources\[0\].formt: unknown key. Did you mean 'data.sources\[0\].format'"):
        load_recipe(write(tmp_path / "r.yaml", text))


def test_missing_required_section(tmp_path: Path) -> None:
    with pytest.raises(TailorError, match="model: required key is missing"):
        load_recipe(write(tmp_path / "r.yaml", "name: r\ndata:\n  sources: [{path: x.jsonl}]\n"))


def test_overrides_parse_values_and_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL)
    recipe = load_recipe(path, ["training.lr=1e-4", "peft.target_modules=[q_proj, v_proj]", "training.packing=true"])
    assert recipe.training.lr == pytest.approx(1e-4)
    assert recipe.peft.target_modules == ["q_proj", "v_proj"]
    assert recipe.training.packing is True
    with pytest.raises(TailorError, match="command line: training.learning_rate: unknown key. Did you mean 'training.lr'"):
        load_recipe(path, ["training.learning_rate=1e-4"])
    with pytest.raises(TailorError, match="must look like key.path=value"):
        load_recipe(path, ["training.lr"])


def test_base_inheritance_merges_and_child_wins(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", MINIMAL + "training:\n  lr: 0.5\n  epochs: 3\n")
    child = write(tmp_path / "child" / "c.yaml", "base: ../base.yaml\nname: c\ntraining:\n  lr: 0.1\n")
    recipe = load_recipe(child)
    assert recipe.name == "c" and recipe.training.lr == 0.1 and recipe.training.epochs == 3
    # the data path stays relative to the base recipe that named it
    assert Path(recipe.data.sources[0].path).resolve() == (tmp_path / "data.jsonl").resolve()


def test_error_in_base_names_the_base_file(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", MINIMAL + "peft:\n  rank: 8\n")
    child = write(tmp_path / "c.yaml", "base: base.yaml\nname: c\n")
    with pytest.raises(TailorError, match=rf"{base}:8: peft.rank: unknown key. Did you mean 'peft.r'"):
        load_recipe(child)


def test_base_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "base: a.yaml\nname: b\n")
    with pytest.raises(TailorError, match="loops back"):
        load_recipe(tmp_path / "a.yaml")


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    with pytest.raises(TailorError, match=r"r.yaml:3: not valid YAML"):
        load_recipe(write(tmp_path / "r.yaml", "name: r\nmodel:\n  name_or_path: a: b\n"))


def test_recipe_hash_changes_with_any_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL)
    assert recipe_hash(load_recipe(path)) == recipe_hash(load_recipe(path))
    assert recipe_hash(load_recipe(path)) != recipe_hash(load_recipe(path, ["training.seed=1"]))


def test_check_reports_missing_data_file(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["check", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data.sources[0].path" in err and "does not exist" in err and "Traceback" not in err


def test_check_passes_on_complete_recipe(tmp_path: Path, capsys) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    path = write(tmp_path / "r.yaml", MINIMAL)
    check(load_recipe(path), recipe_parser("x").parse_args([str(path)]))
    assert "OK" in capsys.readouterr().out
