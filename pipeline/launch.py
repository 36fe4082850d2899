"""Launch a training stage with the process count and precision from its params section.

    python -m pipeline.launch pretrain_teacher stages.pretrain_teacher
    python -m pipeline.launch train_branch stages.train_branch simple   # extra args go to the stage

- 1 process: runs the stage module in this process.
- N processes with CUDA: ``accelerate launch`` with ``--num_processes N`` and the repo's
  ``configs/accelerate.yaml`` (or ``$ACCELERATE_CONFIG_FILE``, e.g. a multi-node config), so a user's
  own default accelerate config never silently changes what ``dvc repro`` does.
- N processes on CPU: ``torchrun --standalone`` with ``ACCELERATE_USE_CPU=1`` (gloo), because
  ``accelerate launch --cpu --num_processes N`` starts a single process.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

import yaml

from pipeline.params import params_path


def launch_command(section: str, module: str, args=()) -> tuple[list[str], dict]:
    raw = (yaml.safe_load(params_path().read_text()) or {}).get(section) or {}
    train = raw.get("train") or {}
    n = int(train.get("num_processes", raw.get("num_processes", 1)))
    precision = str(train.get("mixed_precision", "no"))
    env = dict(os.environ)
    import torch

    if n <= 1:
        return [], env
    if torch.cuda.is_available():
        config = env.get("ACCELERATE_CONFIG_FILE", "configs/accelerate.yaml")
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", str(n),
                "--mixed_precision", precision, "-m", module, *args], env
    env["ACCELERATE_USE_CPU"] = "1"
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m", module, *args], env


def main(argv=None):
    section, module, *args = argv or sys.argv[1:]
    cmd, env = launch_command(section, module, args)
    if not cmd:
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    print("launch:", " ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
