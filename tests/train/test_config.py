"""TrainConfig: recipe loading, command-line overrides, validation with one-line messages."""

from __future__ import annotations

import pytest

from pad.errors import PadError
from pad.train.config import TrainConfig, load_train_config, parse_overrides
from pad.train.pairs import SourceConfig


def write(tmp_path, text: str):
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_recipe_sources_and_number_coercion(tmp_path):
    recipe = write(tmp_path, """
base_model: some/model
learning_rate: 1e-4          # YAML 1.1 reads this as text
sources:
  - {kind: jsonl, path: data/mine.jsonl, principles: {humor: funny, concise: -long}, limit: 50}
  - {kind: helpsteer2, path: nvidia/HelpSteer2, principles: {concise: -verbosity}}
""")
    cfg = load_train_config(recipe)
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.sources == [
        SourceConfig(kind="jsonl", path="data/mine.jsonl", principles={"humor": "funny", "concise": "-long"},
                     limit=50),
        SourceConfig(kind="helpsteer2", path="nvidia/HelpSteer2", principles={"concise": "-verbosity"}),
    ]


def test_command_line_overrides_win(tmp_path):
    recipe = write(tmp_path, "max_steps: 10\nlora_target_modules: all-linear\n")
    args = ["--max_steps", "3", "--learning-rate=2e-5", "--lora_target_modules", "[q_proj, v_proj]", "--overwrite",
            "--max_prompt_length", "null"]
    cfg = load_train_config(recipe, parse_overrides(args))
    assert (cfg.max_steps, cfg.learning_rate, cfg.lora_target_modules, cfg.overwrite) == (
        3, 2e-5, ["q_proj", "v_proj"], True)
    assert cfg.max_prompt_length is None


@pytest.mark.parametrize(("text", "message"), [
    ("learnin_rate: 0.1\n", r"recipe.yaml: unknown field 'learnin_rate' \(did you mean 'learning_rate'\?\)"),
    ("sources: [{kind: jsonl, path: a.jsonl, principle: {a: b}}]\n",
     r"recipe.yaml: sources\[0\]: unknown field 'principle' \(did you mean 'principles'\?\)"),
    ("sources: [{kind: pku, path: a}]\n", r"sources\[0\]: source kind 'pku' is not one of"),
    ("sources: [{kind: helpsteer2, path: a, principles: {concise: -brevity}}]\n",
     r"principle 'concise' maps to unknown label '-brevity'"),
    ("beta: -1\n", r"recipe.yaml: beta must be a number > 0, got -1"),
    ("lora_r: 0\n", r"lora_r must be a whole number >= 1, got 0"),
    ("dtype: fp64\n", r"dtype must be one of .*, got 'fp64'"),
    ("template: 'no placeholders'\n", r"lacks \{principles\} and \{prompt\}"),
    ("max_prompt_length: 600\nmax_length: 512\n", r"max_prompt_length must be None or 1..511, got 600"),
    ("- a list\n", r"a recipe is a mapping"),
    ("loss_type: [sigmoid, sfd]\n", r"loss_type must be one of .*, or a list of them, got \['sigmoid', 'sfd'\]"),
    ("loss_type: [sigmoid, sft]\nloss_weights: [1.0]\n", r"loss_weights must be null or one number >= 0 per loss_type"),
    ("decode_base_sees_principles: maybe\n", r"decode_base_sees_principles must be true, false or null"),
])
def test_bad_recipes_name_file_and_field(tmp_path, text, message):
    with pytest.raises(PadError, match=message):
        load_train_config(write(tmp_path, text))


def test_bad_overrides():
    with pytest.raises(PadError, match="command line: unknown field 'stepz'"):
        load_train_config(None, parse_overrides(["--stepz", "3"]))
    with pytest.raises(PadError, match="unexpected argument 'oops'"):
        parse_overrides(["oops"])
    with pytest.raises(PadError, match="max_steps must be -1 or a whole number >= 1, got 0.5"):
        load_train_config(None, {"max_steps": "0.5"})


def test_defaults_are_valid():
    cfg = TrainConfig()
    assert cfg.prompt_budget == 384 and cfg.sources == []


def test_loss_list_reaches_trl(tmp_path):
    """[sigmoid, sft] (DPO plus the chosen answers' NLL) goes to trl.DPOConfig as its loss list and weights."""
    import torch

    from pad.train.trainer import _dpo_config

    cfg = load_train_config(write(tmp_path, "loss_type: [sigmoid, sft]\nloss_weights: [1.0, 0.5]\n"
                                            f"output_dir: {tmp_path / 'out'}\n"))
    args = _dpo_config(cfg, torch.float32, has_eval=False)
    assert (list(args.loss_type), list(args.loss_weights)) == (["sigmoid", "sft"], [1.0, 0.5])
