"""The project files a stage runs: the import closure of its entry module, read from the source.

One list serves two jobs, so they cannot drift apart:
- the stage's code ``deps`` in ``dvc.yaml`` (``tests/test_stage_deps.py`` fails when they differ), so
  an edit reruns exactly the stages that import the edited file;
- the code part of the training loop's resume fingerprint (:func:`code_digest`), so a checkpoint is
  resumed only when every file that defines the stage's training is what produced it.

Every ``import`` statement counts, also those inside functions (a lazy import still runs), and a
module brings its parent packages' ``__init__.py``. The digest hashes each file's syntax tree without
docstrings: a comment or docstring edit reruns the stage (DVC hashes bytes) but resumes its finished
checkpoint, since the code would produce the same weights.

    python -m pipeline.imports stages.distill_csd     # prints the files, as dvc.yaml lists them
"""
from __future__ import annotations

import ast
import hashlib
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project root, holding pipeline/ and stages/
PACKAGES = ("pipeline", "stages")


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (a package's ``__init__.py``), or None outside the project."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _parse(path: Path) -> tuple[tuple, str]:
    """The file's import statements as (module, level, names) and the digest of its syntax tree without
    docstrings, from one parse per file content and process (the closure and the digest both need it)."""
    return _parse_source(path.read_text(), str(path))


@lru_cache(maxsize=None)
def _parse_source(source: str, filename: str) -> tuple[tuple, str]:
    tree = ast.parse(source, filename)
    imports = tuple((None, 0, tuple(a.name for a in node.names)) if isinstance(node, ast.Import)
                    else (node.module or "", node.level, tuple(a.name for a in node.names))
                    for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))
    return imports, hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()[:16]


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name an import statement of ``path`` (module ``name``) may load, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for base, level, names in _parse(path)[0]:
        if base is None:  # import a, b.c
            out.update(names)
            continue
        if level:  # relative: up (level - 1) packages from this module's package
            anchor = package.split(".")[:len(package.split(".")) - level + 1]
            base = ".".join(anchor + ([base] if base else []))
        out.add(base)
        out.update(f"{base}.{a}" for a in names)  # `from pkg import submodule`
    return out


def closure(*modules: str) -> list[str]:
    """Repo-relative paths of the project files that importing ``modules`` runs, sorted."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # a module runs its parent packages first
            name = ".".join(parts[:i])
            path = module_file(name)
            if path is None or name in seen:
                continue
            seen[name] = path
            todo.extend(imported_names(path, name))
    return sorted({p.relative_to(ROOT).as_posix() for p in seen.values()})


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def file_digest(path: Path) -> str:
    """Hash of what the file does: its syntax tree without docstrings (comments are not in the tree)."""
    return _parse(path)[1]


def code_digest(module: str) -> dict[str, str]:
    """{file: digest} over the closure of ``module``: the code part of a resume fingerprint."""
    return {f: file_digest(ROOT / f) for f in closure(module)}


def entry_module() -> str:
    """The stage module this process runs (``python -m stages.x``, torchrun ``-m``, or the launcher's
    in-process ``runpy``); ``pipeline.train`` when the loop is driven from elsewhere (tests, a notebook)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", "") or ""
    return name if module_file(name) is not None else "pipeline.train"


if __name__ == "__main__":
    for f in closure(*sys.argv[1:]):
        print(f)
