"""Each stage's code deps in dvc.yaml are exactly its import closure (the files its resume fingerprint
hashes), so an edit reruns exactly the stages that run the edited code."""

import pytest
import yaml

from pipeline.imports import ROOT, closure, file_digest

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def entry_modules(cmd: str) -> list[str]:
    return [t for t in cmd.split() if t.startswith(("stages.", "pipeline."))]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_import_closure(name):
    stage = STAGES[name].get("do", STAGES[name])
    modules = entry_modules(stage["cmd"])
    listed = {d for d in stage["deps"] if d.startswith(("pipeline", "stages"))}
    wanted = set(closure(*modules))
    assert listed == wanted, (f"dvc.yaml stage {name}: missing {sorted(wanted - listed)}, not imported "
                              f"{sorted(listed - wanted)} (python -m pipeline.imports {' '.join(modules)})")


def test_an_edit_of_the_report_reruns_only_evaluate():
    users = [n for n, s in STAGES.items() if "pipeline/report.py" in s.get("do", s)["deps"]]
    assert users == ["evaluate"]
    assert not any("pipeline/train.py" in s.get("do", s)["deps"] for n, s in STAGES.items()
                   if n.startswith("prepare_"))


def test_closure_follows_lazy_relative_and_package_imports():
    files = closure("stages.distill_csd")
    # top-level, package __init__ files, and imports made inside functions
    assert {"stages/distill_csd.py", "pipeline/methods/__init__.py", "pipeline/methods/csd.py",
            "pipeline/train.py", "pipeline/imports.py"} <= set(files)
    assert "pipeline/report.py" not in files and "stages/evaluate.py" not in files


def test_pipeline_never_imports_stages():
    for f in sorted((ROOT / "pipeline").rglob("*.py")):
        module = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        assert not [p for p in closure(module) if p.startswith("stages/")], module


def test_params_knows_every_architecture_without_importing_models():
    from pipeline import models, params

    assert set(params.ARCH_NAMES) == set(models.ARCHS)
    assert not any(p.startswith("pipeline/models/") for p in closure("pipeline.params"))


def test_digest_ignores_comments_and_docstrings_not_code(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Doc."""\n\ndef loss(a, b):\n    """Mean."""\n    return abs(a - b)  # L1\n')
    before = file_digest(f)
    f.write_text('"""Other doc."""\n\n\ndef loss(a, b):\n    # why: BasicSR\n    return abs(a - b)\n')
    assert file_digest(f) == before
    f.write_text('"""Doc."""\n\ndef loss(a, b):\n    return 2 * abs(a - b)\n')
    assert file_digest(f) != before


def test_dvc_yaml_deps_exist():
    for name, s in STAGES.items():
        for d in s.get("do", s)["deps"]:
            if d.startswith(("pipeline", "stages", "assets")):
                assert (ROOT / d).exists(), (name, d)


def _direct_imports() -> dict[str, set[str]]:
    """Project module -> the project modules its import statements name (lazy imports included)."""
    from pipeline.imports import imported_names, module_file

    graph = {}
    for f in sorted(list((ROOT / "pipeline").rglob("*.py")) + list((ROOT / "stages").rglob("*.py"))):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in imported_names(f, name) if module_file(m) is not None and m != name}
    return graph


def test_no_import_cycles():
    graph, state = _direct_imports(), {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", "import cycle: " + " -> ".join(path + [node])
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])


def test_models_know_nothing_of_methods_training_or_tracking():
    for f in sorted((ROOT / "pipeline/models").glob("*.py")):
        module = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        outside = [p for p in closure(module) if not p.startswith(("pipeline/models/", "pipeline/__init__"))]
        assert outside == ["pipeline/files.py"] or not outside, (module, outside)


def test_data_and_cost_code_know_no_tracking_and_no_training():
    """Data preparation and the cost convention are plain functions; the stages open MLflow runs."""
    for f in sorted((ROOT / "pipeline/data").glob("*.py")) + [ROOT / "pipeline/cost.py"]:
        module = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files = closure(module)
        assert "pipeline/tracking.py" not in files and "pipeline/train.py" not in files, (module, files)


def test_every_function_in_pipeline_reads_in_one_screen():
    import ast

    for f in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{f.relative_to(ROOT)}:{node.lineno} {node.name} has {length} lines"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_entry_point_imports(name):
    import importlib

    stage = STAGES[name].get("do", STAGES[name])
    for module in entry_modules(stage["cmd"]):
        importlib.import_module(module)


def test_tests_and_benches_import_the_library_not_stages():
    import ast

    for f in sorted(list((ROOT / "tests").glob("*.py")) + list((ROOT / "bench").glob("*.py"))):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "stages" or n.startswith("stages.") for n in names), f.name


def test_a_method_file_reruns_only_the_stages_of_that_method():
    def users(path):
        return sorted(n for n, s in STAGES.items() if path in s.get("do", s)["deps"])

    assert users("pipeline/methods/csd.py") == ["distill_csd"]
    assert users("pipeline/methods/pcl.py") == ["distill_pcl"]
    assert users("pipeline/methods/ghost.py") == ["compose_classsr", "ghost"]
    assert users("pipeline/methods/classsr.py") == ["compose_classsr", "finetune_classsr"]


def test_evaluate_depends_on_every_model_it_scores():
    """A model evaluate scores but does not list would not rerun it (e.g. the controls' models)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    scored = (set(params["models"].values()) | set(params["classsr"].values())
              | {ref["path"] for ref in params["references"].values()})
    assert scored <= set(STAGES["evaluate"]["deps"]), scored - set(STAGES["evaluate"]["deps"])
