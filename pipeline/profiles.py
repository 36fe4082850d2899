"""Params files derived from a profile by a named recipe of overrides, so variants of a profile are never
hand-kept copies of it:

    python -m pipeline.profiles profiles/paper.yaml profiles/classsr_backbones.yaml fsrcnn -o params.yaml
    python -m pipeline.profiles profiles/paper.yaml --smoke -o params.yaml   # the paper profile, 1 step each
    python -m pipeline.profiles profiles/paper.yaml --processes 8 -o params.yaml   # 8 GPUs, the same global batches

A recipe maps dotted keys (``train_branch.branches``) to the value that replaces the whole value there
(a mapping is replaced, not merged: a backbone's constructor kwargs differ). Comments of the base file
are kept; the sections a recipe changes are validated before anything is written (the others still
name data folders that may only exist where the pipeline runs).

``--smoke`` derives a smoke-test profile: the same models, widths, losses, schedules and data layout,
with only the step counts, batch sizes, loader workers and process counts shrunk, so the whole DAG
runs end to end in minutes (tests/test_paper_smoke.py runs the paper profile this way).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from pipeline.params import SECTIONS, ParamError, from_dict


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip (YAML 1.2, as DVC): keeps the base file's comments and layout
    yaml.width = 4096
    return yaml


def apply_overrides(params: dict, overrides: dict, where: str = "recipe") -> dict:
    """Set each dotted key of ``overrides`` in ``params`` (in place); the key must already exist there."""
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = params
        for i, key in enumerate(parents):
            if not isinstance(node, dict) or key not in node:
                raise ParamError(f"{where}: '{dotted}': no '{'.'.join(parents[:i + 1])}' in the base profile")
            node = node[key]
        if not isinstance(node, dict) or last not in node:
            raise ParamError(f"{where}: '{dotted}': no such key in the base profile")
        node[last] = value
    return params


# keys whose value is a step count (shrunk to the smoke's steps), a batch size, a loader worker count
STEP_KEYS = {"max_steps", "val_every", "ckpt_every", "log_every", "all_patches_steps"}
BATCH_KEYS, WORKER_KEYS, PROCESS_KEYS = {"batch_size"}, {"num_workers"}, {"num_processes", "num_machines"}


def shrink(node, steps: int, batch: int, section: str = ""):
    """In place: every step count to at most ``steps``, batch sizes to ``batch``, one process on one machine, no loader
    workers (data prep: one, in-process)."""
    for key, value in list(node.items()) if isinstance(node, dict) else []:
        where = section or key
        if isinstance(value, dict):
            shrink(value, steps, batch, where)
        elif key in STEP_KEYS and isinstance(value, int):
            node[key] = min(value, steps)
        elif key in BATCH_KEYS:
            node[key] = batch
        elif key in WORKER_KEYS:
            node[key] = 1 if where.startswith("prepare") else 0
        elif key in PROCESS_KEYS:
            node[key] = 1
    if isinstance(node, dict) and "neg_num" in node and "train" in node:  # CSD's negatives come from the batch
        node["neg_num"] = min(node["neg_num"], node["train"]["batch_size"])
    return node


def derive_smoke(base, steps: int = 1, batch: int = 1) -> str:
    """The YAML text of ``base`` with :func:`shrink` applied (each stage validates its section when it
    runs: the profile names data folders that exist only where it runs)."""
    yaml = _yaml()
    params = shrink(yaml.load(Path(base).read_text()), steps, batch)
    out = io.StringIO()
    yaml.dump(params, out)
    return f"# derived: python -m pipeline.profiles {base} --smoke --steps {steps} --batch {batch}\n" + out.getvalue()


def spread(node, processes: int, machines: int, where: str = "") -> list[str]:
    """In place: every launch block (a training block, or a mapping with ``num_processes``) to ``processes`` per machine on
    ``machines``, its per-process ``batch_size`` divided so that the global batch (what the papers
    state, and what CSD's negatives and PCL's discriminator see) stays the same. Returns the sections
    changed; a batch that does not divide is an error naming its key."""
    changed = []
    for key, value in list(node.items()) if isinstance(node, dict) else []:
        if isinstance(value, dict):
            changed += spread(value, processes, machines, f"{where}.{key}" if where else key)
    if isinstance(node, dict) and ("num_processes" in node or {"max_steps", "batch_size"} <= set(node)):
        old = int(node.get("num_processes", 1)) * int(node.get("num_machines", 1))
        if "batch_size" in node:
            total, n = int(node["batch_size"]) * old, processes * machines
            if total % n:
                raise ParamError(f"'{where}.batch_size': the global batch {total} does not split over {n} processes "
                                 f"({processes} x {machines} machines): choose a process count that divides it")
            node["batch_size"] = total // n
        node["num_processes"], node["num_machines"] = processes, machines
        changed.append(where.split(".")[0])
    return changed


def derive_processes(base, processes: int, machines: int = 1) -> str:
    """The YAML text of ``base`` with every stage launched on ``processes`` per machine x ``machines``
    at the same global batches (:func:`spread`), each changed section validated."""
    yaml = _yaml()
    params = yaml.load(Path(base).read_text())
    for section in sorted(set(spread(params, processes, machines)) & set(SECTIONS)):
        try:
            from_dict(SECTIONS[section], params[section], section)
        except ParamError as e:  # e.g. the profile's data or weights, which exist where it runs
            raise ParamError(f"{base} for {processes} x {machines} processes: section '{section}' does not "
                             f"validate here ({e}); derive it where the profile's data and weights are") from e
    out = io.StringIO()
    yaml.dump(params, out)
    return (f"# derived: python -m pipeline.profiles {base} --processes {processes} --machines {machines}\n"
            + out.getvalue())


def derive(base, recipes, name: str) -> str:
    """The YAML text of ``base`` with recipe ``name`` of the ``recipes`` file applied, validated."""
    yaml = _yaml()
    params = yaml.load(Path(base).read_text())
    book = yaml.load(Path(recipes).read_text())
    if name not in book:
        raise ParamError(f"{recipes}: no recipe '{name}'; recipes: {', '.join(book)}")
    overrides = dict(book[name])
    apply_overrides(params, overrides, f"{recipes}:{name}")
    for section in sorted({k.split(".")[0] for k in overrides} & set(SECTIONS)):
        from_dict(SECTIONS[section], params[section], section)
    out = io.StringIO()
    yaml.dump(params, out)
    return f"# derived: python -m pipeline.profiles {base} {recipes} {name}\n" + out.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("recipes", nargs="?")
    ap.add_argument("name", nargs="?")
    ap.add_argument("--smoke", action="store_true", help="shrink step counts, batch sizes, workers, processes")
    ap.add_argument("--steps", type=int, default=1, help="--smoke: steps per training")
    ap.add_argument("--batch", type=int, default=1, help="--smoke: batch size")
    ap.add_argument("--processes", type=int, help="processes per machine for every stage, the global batches kept")
    ap.add_argument("--machines", type=int, default=1, help="--processes: machines per stage")
    ap.add_argument("-o", "--output", help="file to write (default: standard output)")
    args = ap.parse_args(argv)
    if not args.smoke and not args.processes and not (args.recipes and args.name):
        ap.error("give a recipes file and a recipe name, --smoke, or --processes")
    try:
        if args.processes:
            text = derive_processes(args.base, args.processes, args.machines)
        elif args.smoke:
            text = derive_smoke(args.base, args.steps, args.batch)
        else:
            text = derive(args.base, args.recipes, args.name)
    except (ParamError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
