"""Params files derived from a profile by a named recipe of overrides, so variants of a profile are never
hand-kept copies of it:

    python -m pipeline.profiles profiles/paper.yaml profiles/classsr_backbones.yaml fsrcnn -o params.yaml

A recipe maps dotted keys (``train_branch.branches``) to the value that replaces the whole value there
(a mapping is replaced, not merged: a backbone's constructor kwargs differ). Comments of the base file
are kept; the sections a recipe changes are validated before anything is written (the others still
name data folders that may only exist where the pipeline runs).
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
    ap.add_argument("recipes")
    ap.add_argument("name")
    ap.add_argument("-o", "--output", help="file to write (default: standard output)")
    args = ap.parse_args(argv)
    try:
        text = derive(args.base, args.recipes, args.name)
    except (ParamError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
