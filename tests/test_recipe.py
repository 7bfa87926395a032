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
    with pytest.raises(TailorError, match="command line: training.lora_alpha: unknown key. Did you mean 'peft.alpha'"):
        load_recipe(path, ["training.lora_alpha=16"])
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


# ---------------------------------------------------------------- trl's names, training.extra, removed keys


def test_trl_names_are_synonyms_in_yaml_and_on_the_command_line(tmp_path: Path) -> None:
    short = load_recipe(write(tmp_path / "short.yaml", MINIMAL + "training: {lr: 1.0e-3, epochs: 2, batch_size: 2}\n"
                              "peft: {alpha: 8, dropout: 0.1}\n"))
    path = write(tmp_path / "trl.yaml", MINIMAL.replace("name_or_path", "model_name_or_path") + textwrap.dedent("""
        training: {learning_rate: 1.0e-3, num_train_epochs: 2, per_device_train_batch_size: 2}
        peft: {lora_alpha: 8, lora_dropout: 0.1}
    """))
    trl_named = load_recipe(path)
    assert (trl_named.training.lr, trl_named.training.epochs, trl_named.peft.alpha) == (1e-3, 2, 8)
    # the resolved recipe (run folder, hashes, W&B config) is written with tailor's names only
    assert trl_named.model_dump(mode="json") == short.model_dump(mode="json")
    assert recipe_hash(trl_named) == recipe_hash(short)
    assert "learning_rate" not in trl_named.training.model_dump() and "lr" in trl_named.training.model_dump()
    # on the command line, under either name, whichever name the file used: the override wins
    assert load_recipe(path, ["training.learning_rate=5e-4"]).training.lr == 5e-4
    assert load_recipe(path, ["training.lr=5e-4", "peft.alpha=4"]).training.lr == 5e-4
    assert load_recipe(write(tmp_path / "r.yaml", MINIMAL), ["training.gradient_accumulation_steps=4",
                                                            "training.lr_scheduler_type=linear"]).training.grad_accum == 4
    # a child recipe naming the setting differently from its base replaces it
    child = write(tmp_path / "child.yaml", "base: trl.yaml\ntraining: {lr: 2.0e-3}\n")
    assert load_recipe(child).training.lr == 2e-3


def test_a_bad_value_under_a_trl_name_names_file_line_and_that_key(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL + "training:\n  learning_rate: -1\n")
    with pytest.raises(TailorError, match=r"r.yaml:8: training.learning_rate: .*greater than 0"):
        load_recipe(path)
    with pytest.raises(TailorError, match=r"command line: training.num_train_epochs: .*greater than 0"):
        load_recipe(write(tmp_path / "ok.yaml", MINIMAL), ["training.num_train_epochs=0"])


def test_both_names_of_one_setting_are_refused_naming_both(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL + "training:\n  lr: 1.0e-4\n  learning_rate: 2.0e-4\n")
    with pytest.raises(TailorError) as err:
        load_recipe(path)
    assert f"{path}:9: training.learning_rate: training.lr (at {path}:8)" in str(err.value)
    assert "give only one" in str(err.value)
    with pytest.raises(TailorError, match="peft.lora_alpha: peft.alpha"):
        load_recipe(write(tmp_path / "p.yaml", MINIMAL + "peft: {alpha: 8, lora_alpha: 16}\n"))


def test_training_extra_reaches_sft_config_last(tmp_path: Path) -> None:
    from tailor.runs import RunPaths
    from train.config import trainer_config

    path = write(tmp_path / "r.yaml", MINIMAL + "training:\n  extra: {neftune_noise_alpha: 5.0}\n")
    recipe = load_recipe(path, ["training.extra.adam_beta2=0.95"])
    assert recipe.training.extra == {"neftune_noise_alpha": 5.0, "adam_beta2": 0.95}
    args = trainer_config(recipe, RunPaths(tmp_path / "run"), use_cpu=True, precision="fp32", report_to=["none"])
    assert args.neftune_noise_alpha == 5.0 and args.adam_beta2 == 0.95 and args.learning_rate == recipe.training.lr


def test_unknown_or_tailor_set_extra_key_is_refused_with_file_line_key(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", MINIMAL + "training:\n  extra:\n    neftune_noise_alph: 5\n")
    with pytest.raises(TailorError, match=rf"{path}:9: training.extra.neftune_noise_alph: not a field of trl's "
                                          r"SFTConfig \(did you mean 'neftune_noise_alpha'\?\)"):
        load_recipe(path)
    with pytest.raises(TailorError, match=r"command line: training.extra.learning_rate: tailor sets "
                                          r"SFTConfig.learning_rate itself: use training.lr"):
        load_recipe(write(tmp_path / "ok.yaml", MINIMAL), ["training.extra.learning_rate=1e-4"])


def test_every_sft_config_argument_tailor_sets_is_refused_in_extra(tmp_path: Path) -> None:
    from tailor.runs import RunPaths
    from tailor.schema import SFT_SET_BY_TAILOR, sft_config_fields
    from train.config import common_kwargs

    recipe = load_recipe(write(tmp_path / "r.yaml", MINIMAL))
    assert set(common_kwargs(recipe, RunPaths(tmp_path), True, "fp32", ["none"])) == set(SFT_SET_BY_TAILOR)
    assert set(SFT_SET_BY_TAILOR) <= sft_config_fields()


def test_extra_is_a_training_change_for_resume(tmp_path: Path) -> None:
    from train.checkpoints import training_key

    path = write(tmp_path / "r.yaml", MINIMAL)
    assert training_key(load_recipe(path), "d") != training_key(load_recipe(path, ["training.extra.adam_beta2=0.9"]),
                                                                "d")
    assert recipe_hash(load_recipe(path)) != recipe_hash(load_recipe(path, ["training.extra.adam_beta2=0.9"]))


def test_removed_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TailorError, match=r"r.yaml:8: training.padding_free: unknown key. Did you mean "
                                          r"'training.packing'"):
        load_recipe(write(tmp_path / "r.yaml", MINIMAL + "training:\n  padding_free: true\n"))
    with pytest.raises(TailorError, match=r"tracking.backend: Input should be 'wandb' or 'trackio' \(got 'mlflow'\)"):
        load_recipe(write(tmp_path / "t.yaml", MINIMAL + "tracking:\n  backend: mlflow\n"))
