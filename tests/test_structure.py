"""The package layout: stages import only earlier stages (no circles), and every config reference resolves."""

from __future__ import annotations

import ast
import glob
import importlib
import json
import os
import re
from typing import Dict, List, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pipeline order (scripts/<package>/__init__.py docstrings say the same); the root package holds BundleInputError
STAGES = ["scripts", "data", "preprocess", "networks", "training", "inference", "evaluation", "demo"]
APPS = ("deploy_app", "monailabel_app", "verify_bundle")  # on top of the pipeline, never imported by it


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str, name: str) -> Set[str]:
    """Every ``scripts`` module imported anywhere in the file, function-level imports included."""
    tree = ast.parse(open(path).read(), path)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "scripts")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "scripts":
                continue
            for alias in node.names:  # "from scripts.x import y" may name a module y
                sub = f"{base}.{alias.name}"
                is_module = os.path.isfile(os.path.join(ROOT, *sub.split(".")) + ".py") or os.path.isdir(
                    os.path.join(ROOT, *sub.split("."))
                )
                found.add(sub if is_module else base)
    found.discard(name)
    return found


def import_graph() -> Dict[str, Set[str]]:
    files = glob.glob(os.path.join(ROOT, "scripts", "**", "*.py"), recursive=True)
    return {_module_name(f): _imports(f, _module_name(f)) for f in files}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "scripts"


def test_no_import_cycles_among_scripts_modules():
    graph = import_graph()
    assert "scripts.inference.predict" in graph and "scripts.evaluation.evaluate" in graph
    state: Dict[str, int] = {}
    cycles: List[List[str]] = []

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt in graph and not state.get(nxt):
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_each_stage_imports_only_earlier_stages():
    order = {s: i for i, s in enumerate(STAGES)}
    bad = []
    for module, imported in import_graph().items():
        stage = _stage(module)
        for target in imported:
            other = _stage(target)
            if other in APPS and other != stage:
                bad.append(f"{module} imports the app {target}")
            elif stage in order and order[other] > order[stage]:
                bad.append(f"{module} ({stage}) imports the later stage {target}")
            elif stage in APPS and other == "demo":
                bad.append(f"{module} imports the demo {target}")
    assert not bad, "\n".join(bad)


def test_the_import_walker_sees_a_cycle(tmp_path):
    # the checker itself: a function-level import back into a module that imports it is found
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from scripts.training.kfold import fold_list\n")
    b.write_text("def f():\n    from scripts.inference import predict\n")
    assert _imports(str(a), "scripts.inference.predict") == {"scripts.training.kfold"}
    assert _imports(str(b), "scripts.training.kfold") == {"scripts.inference.predict"}


def _resolve(reference: str) -> object:
    """Import the longest module prefix of a dotted name, then walk attributes."""
    parts = reference.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(reference)


def _walk(node: object, targets: List[str], expressions: List[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            targets.append(node["_target_"])
        for value in node.values():
            _walk(value, targets, expressions)
    elif isinstance(node, list):
        for value in node:
            _walk(value, targets, expressions)
    elif isinstance(node, str) and node.startswith("$"):
        expressions.append(node)


CONFIGS = sorted(
    glob.glob(os.path.join(ROOT, "configs", "*.json")) + glob.glob(os.path.join(ROOT, "configs", "*", "*.json"))
)
MAX_TOP_LEVEL_CONFIGS = 15  # the model zoo's bundles hold at most 12


def test_configs_top_level_is_small_and_holds_no_prose():
    top = [f for f in os.listdir(os.path.join(ROOT, "configs")) if os.path.isfile(os.path.join(ROOT, "configs", f))]
    assert len(top) <= MAX_TOP_LEVEL_CONFIGS, sorted(top)
    for path in CONFIGS:
        keys = json.load(open(path)) if not path.endswith("metadata.json") else {}
        assert not [k for k in keys if k.endswith("_note")], path  # prose goes in the model card


def _macros(node) -> List[str]:
    """Every ``%file#id`` macro in a config's values."""
    if isinstance(node, dict):
        return [m for value in node.values() for m in _macros(value)]
    if isinstance(node, list):
        return [m for value in node for m in _macros(value)]
    return [node[1:]] if isinstance(node, str) and node.startswith("%") and "#" in node else []


@pytest.mark.parametrize("config", [os.path.relpath(c, os.path.join(ROOT, "configs")) for c in CONFIGS])
def test_every_config_reference_resolves(config):
    from monai.bundle import ConfigParser
    from monai.bundle.config_item import ComponentLocator

    with open(os.path.join(ROOT, "configs", config)) as f:
        content = json.load(f)
    for macro in _macros(content):  # another config's id, by path from the bundle root
        path, _, key = macro.partition("#")
        assert os.path.isfile(os.path.join(ROOT, path)), f"{config}: {macro}: no such config"
        ConfigParser(ConfigParser.load_config_file(os.path.join(ROOT, path)))[key]  # KeyError when the id is gone
    targets: List[str] = []
    expressions: List[str] = []
    _walk(content, targets, expressions)
    locator = ComponentLocator()
    unresolved = []
    for target in targets:
        if "." in target:
            try:
                _resolve(target)
            except (ImportError, AttributeError):
                unresolved.append(target)
        elif locator.get_component_module_name(target) is None:
            unresolved.append(target)
    for expression in expressions:
        for reference in re.findall(r"\bscripts(?:\.[A-Za-z_][A-Za-z0-9_]*)+", expression):
            try:
                _resolve(reference)
            except (ImportError, AttributeError):
                unresolved.append(reference)
    assert not unresolved, f"{config}: unresolved {unresolved}"


def test_reference_check_fails_on_an_old_module_path():
    with pytest.raises((ImportError, AttributeError)):
        _resolve("scripts.inference.predict_cohort")  # the pre-move path of scripts.inference.predict.predict_cohort
    assert callable(_resolve("scripts.inference.predict.predict_cohort"))


MAX_FUNCTION_LINES = 80


def long_functions(root: str, limit: int = MAX_FUNCTION_LINES) -> Dict[str, int]:
    """{"path::name": lines} of every function in ``root/scripts`` longer than ``limit`` lines."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "scripts", "**", "*.py"), recursive=True)):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found[f"{os.path.relpath(path, root)}::{node.name}"] = lines
    return found


def test_no_function_in_scripts_is_longer_than_80_lines():
    assert long_functions(ROOT) == {}


def test_the_function_length_check_sees_a_long_function(tmp_path):
    os.makedirs(tmp_path / "scripts")
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (tmp_path / "scripts" / "long.py").write_text(f"def f():\n{body}\n\n\ndef g():\n    return 1\n")
    assert long_functions(str(tmp_path)) == {"scripts/long.py::f": 86}
