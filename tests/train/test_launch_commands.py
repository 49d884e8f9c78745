"""The multi-GPU and multi-node commands the READMEs give, checked without a GPU: accelerate's own parser
reads each one, and the ZeRO-3 recipe's DeepSpeed config and TRL's arguments are built from it without
launching anything."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "train" / "README.md", ROOT / "decode" / "README.md"]


def launch_commands(path: Path) -> list[list[str]]:
    """Every `accelerate launch ...` command in a README's indented code, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    cmds = []
    for line in text.splitlines():
        m = re.match(r"\s{4,}(?:\w+=\S+\s+)*accelerate launch (.*)$", line)
        if m:
            cmds.append(shlex.split(m.group(1)))
    return cmds


def parse(argv: list[str]):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(argv)
    args, defaults, mp_from_config = _validate_launch_command(args)
    return args, defaults, mp_from_config


def test_every_launch_command_parses_and_runs_a_pad_command():
    from typer.main import get_command

    from pad.cli import app

    cmds = [c for p in READMES for c in launch_commands(p)]
    assert len(cmds) >= 4, cmds
    cli = get_command(app)
    for argv in cmds:
        args, _, _ = parse(argv)
        assert args.module and args.training_script == "pad.cli", argv
        command, *rest = args.training_script_args
        assert command in ("train", "decode", "eval"), argv
        recipe = rest[rest.index("--config") + 1] if "--config" in rest else None
        if recipe is not None and not recipe.isupper():  # a recipe it names (not a placeholder) exists
            assert (ROOT / recipe).is_file(), argv
        ctx = cli.commands[command].make_context(command, list(rest), resilient_parsing=True)
        assert ctx.params is not None


def test_multi_node_commands_name_the_node_and_the_first_ones_address():
    cmds = [c for c in launch_commands(ROOT / "train" / "README.md") if "--num_machines" in c]
    assert len(cmds) == 2
    ranks = set()
    for argv in cmds:
        args, _, _ = parse(argv)
        assert args.num_machines == 2 and args.num_processes == 16 and args.use_deepspeed and args.zero_stage == 3
        assert args.main_process_ip == "10.0.0.1" and args.main_process_port == 29500
        ranks.add(args.machine_rank)
    assert ranks == {0, 1}


BUILD = r"""
import json, os, sys
import torch
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env

args, defaults, mp = _validate_launch_command(launch_command_parser().parse_args(json.loads(sys.argv[1])))
# what `accelerate launch` does before it starts DeepSpeed's launcher
fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp else [])
args.deepspeed_fields_from_accelerate_config = ",".join(fields)
_, env = prepare_deepspeed_cmd_env(args)
os.environ.update(env)
os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": sys.argv[2]})
from pad.train.config import load_train_config
from pad.train.trainer import _dpo_config
cfg = load_train_config(args.training_script_args[args.training_script_args.index("--config") + 1], {})
dpo = _dpo_config(cfg, torch.bfloat16, True)
ds = dpo.deepspeed_plugin.deepspeed_config
print(json.dumps({"stage": ds["zero_optimization"]["stage"], "zero3_init": dpo.deepspeed_plugin.zero3_init_flag,
                  "save_16bit": ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"],
                  "bf16": dpo.bf16, "micro_batch": dpo.per_device_train_batch_size, "lr": dpo.learning_rate,
                  "beta": dpo.beta, "checkpointing": dpo.gradient_checkpointing}))
"""


def test_zero3_recipe_builds_deepspeed_and_trl_arguments_without_launching():
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install 'pad-align[deepspeed]')")
    from pad.serve.server import free_port
    from pad.train.config import load_train_config

    (argv,) = [c for c in launch_commands(ROOT / "train" / "README.md")
               if "accelerate_ds_zero3.yaml" in " ".join(c) and "--num_machines" not in c]
    # its own process: TRL's arguments set up a (one-process) distributed state
    r = subprocess.run([sys.executable, "-c", BUILD, json.dumps(argv), str(free_port())], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    cfg = load_train_config(ROOT / "recipes" / "llama3-8b" / "train" / "config_paper.yaml", {})
    assert got == {"stage": 3, "zero3_init": True, "save_16bit": True, "bf16": True,
                   "micro_batch": cfg.per_device_train_batch_size, "lr": cfg.learning_rate, "beta": cfg.beta,
                   "checkpointing": cfg.gradient_checkpointing}
