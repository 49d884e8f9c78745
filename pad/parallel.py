"""Data parallel over processes: `accelerate launch -m pad.cli decode|eval ...` or `--num-processes N`.

Every process holds its own copy of the models on its own device and takes its share of the work; they
meet only at barriers and through files (each process writes its own part; the first merges them), so
one process's results never depend on the others and a run killed anywhere resumes from what is on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pad.errors import PadError


@dataclass
class World:
    """This process's place among the processes of one launch (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    _state: object = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            self._state.wait_for_everyone()

    def device(self, device: str) -> str:
        """Each process on its own GPU: a bare "cuda" (or "auto" on a GPU machine) becomes cuda:LOCAL_RANK."""
        if self.size == 1:
            return device
        from pad.models import resolve_device

        resolved = resolve_device(device)
        return f"cuda:{self.local_rank}" if resolved == "cuda" else resolved

    def share(self, items: list) -> list:
        """This process's items: every size-th one, from its rank (the split all processes agree on)."""
        return items[self.rank::self.size]


def current_world() -> World:
    """The launch this process belongs to, from the environment `accelerate launch` (torchrun) sets."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate must be told so, or each process believes it is alone (gloo on the CPU).
    gpu = torch.cuda.is_available()
    state = PartialState(cpu=not gpu, backend=None if gpu else "gloo")
    if state.num_processes <= 1:
        raise PadError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but accelerate sees one process; "
                       "start several with `accelerate launch` or --num-processes")
    return World(state.process_index, state.num_processes, state.local_process_index, state)


def relaunch(num_processes: int, command: str, argv: list[str]) -> int:
    """Run `pad COMMAND ARGV` again under `accelerate launch` with `num_processes` processes; its exit code.

    On a machine without GPUs the processes run on the CPU (gloo), each with one torch thread per core it
    gets (OMP_NUM_THREADS), unless the environment sets it already."""
    if num_processes < 1:
        raise PadError(f"--num-processes must be >= 1, got {num_processes}")
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "pad.cli", command, *argv]
    return subprocess.call(cmd, env=env)


def without_option(argv: list[str], name: str) -> list[str]:
    """argv without `--name VALUE` / `--name=VALUE`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def complete_lines(path: Path) -> list[str]:
    """The whole lines of a JSONL file another process may be appending to (a torn tail is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1
    return [line for line in data[:end].decode("utf-8").splitlines() if line.strip()]
