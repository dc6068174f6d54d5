"""The code's layout as the pipeline depends on it: dvc.yaml's deps cover the code each stage runs, every stage package
has its `stage.py` entry point, every project error derives from `SanetError`, packages re-export nothing.

A stage's code is the import closure inside `sanet/` of what its command runs: the CLI's own module-level and
start-up imports, the imports of its `cmd_<stage>` function, and, transitively, every import of every module
reached (at module level or inside a function, since a function-level import runs when the stage calls it; imports
under `if TYPE_CHECKING:` never run and are left out). Importing `sanet.x.y` also runs `sanet/__init__.py` and
`sanet/x/__init__.py`. A dep that names a folder covers the files in it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

import sanet
from sanet.infra.errors import SanetError

REPO = Path(sanet.__file__).resolve().parents[1]
PACKAGE = REPO / "sanet"
STAGE_PACKAGES = {
    "data": "run_synth",
    "masks": "run_masks",
    "train": "run_train",
    "evaluation": "run_evaluate",
    "report": "run_report",
    "registry": "run_register",
    "hpo": "run_hpo",
}


def _module_file(module: str) -> Path | None:
    """The file of a `sanet` module (`sanet.x.y` -> sanet/x/y.py or sanet/x/y/__init__.py), None outside sanet."""
    parts = module.split(".")
    if parts[0] != "sanet":
        return None
    base = REPO.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(nodes: list[ast.stmt]) -> set[str]:
    """The `sanet` modules the statements import (any depth, TYPE_CHECKING blocks excluded), with their packages."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "sanet")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("sanet"):
            found.add(node.module)
            for alias in node.names:  # `from sanet.report import paper_results`: a submodule
                if _module_file(f"{node.module}.{alias.name}") is not None:
                    found.add(f"{node.module}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    for node in nodes:
        visit(node)
    with_packages = set(found)
    for module in found:
        parts = module.split(".")
        with_packages.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {m for m in with_packages if _module_file(m) is not None}


@cache
def _tree(module: str) -> ast.Module:
    path = _module_file(module)
    assert path is not None, module
    return ast.parse(path.read_text(), filename=str(path))


def closure(seeds: set[str]) -> set[str]:
    """Every `sanet` module that importing `seeds` (and running their functions) can import."""
    done: set[str] = set()
    todo = list(seeds)
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        todo.extend(_imports(_tree(module).body) - done)
    return done


def stage_code(command: str) -> set[Path]:
    """The files of `sanet <command>`'s import closure, relative to the repository."""
    cli = _tree("sanet.cli")
    start_up = [n for n in cli.body if not (isinstance(n, ast.FunctionDef) and n.name.startswith("cmd_"))]
    (handler,) = [n for n in cli.body if isinstance(n, ast.FunctionDef) and n.name == f"cmd_{command}"]
    seeds = _imports(start_up) | _imports([handler])  # not sanet.cli itself: its other commands do not run
    files = {_module_file(m) for m in closure(seeds) | {"sanet.cli"}}
    return {path.relative_to(REPO) for path in files if path is not None}


def _dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages, `foreach` and `matrix` stages as one entry each (their deps do not depend on the item)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _command(stage: dict) -> str:
    match = re.match(r"\s*sanet\s+([a-z][a-z-]*)", stage["cmd"])
    assert match, f"the stage runs no sanet command: {stage['cmd']!r}"
    return match.group(1).replace("-", "_")


def _dep_paths(stage: dict) -> list[Path]:
    return [Path(next(iter(dep)) if isinstance(dep, dict) else dep) for dep in stage["deps"]]


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


@pytest.mark.parametrize("name", sorted(_dvc_stages()))
def test_dvc_deps_cover_the_code_each_stage_runs(name: str) -> None:
    stage = _dvc_stages()[name]
    deps = _dep_paths(stage)
    code = stage_code(_command(stage))
    assert Path("sanet/cli.py") in code and Path("sanet/config.py") in code  # the closure reaches the basics
    missing = sorted(str(path) for path in code if not _covered(path, deps))
    assert not missing, f"dvc.yaml stage {name!r} runs code its deps do not list: {missing}"


@pytest.mark.parametrize("name", sorted(_dvc_stages()))
def test_dvc_code_deps_exist_and_are_run_by_the_stage(name: str) -> None:
    """No dep names a file that is gone, and no code dep is one the stage never imports (a stale entry)."""
    stage = _dvc_stages()[name]
    code = stage_code(_command(stage))
    for dep in _dep_paths(stage):
        if dep.parts[0] != "sanet":
            continue
        assert (REPO / dep).exists(), f"dvc.yaml stage {name!r} lists {dep}, which does not exist"
        assert any(path == dep or dep in path.parents for path in code), (
            f"dvc.yaml stage {name!r} lists {dep}, which the stage does not import"
        )


def test_the_closure_sees_function_level_imports_and_skips_type_checking_ones() -> None:
    code = stage_code("evaluate")
    assert Path("sanet/engine/checkpoint.py") in code  # imported inside run_evaluate
    assert Path("sanet/contracts/parts.py") in code
    assert Path("sanet/cluster/steps.py") not in code
    assert not any(path.parts[:2] == ("sanet", "registry") for path in code)


@pytest.mark.parametrize(("package", "entry"), sorted(STAGE_PACKAGES.items()))
def test_every_stage_package_has_a_stage_module_with_its_entry_point(package: str, entry: str) -> None:
    module = importlib.import_module(f"sanet.{package}.stage")
    assert inspect.isfunction(getattr(module, entry, None)), f"sanet/{package}/stage.py defines no {entry}"
    assert entry in module.__all__


def _all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sanet.__path__, "sanet."))


def test_every_project_error_derives_from_sanet_error() -> None:
    errors = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                errors.append(value)
    assert len(errors) >= 20
    strays = [f"{e.__module__}.{e.__qualname__}" for e in errors if not issubclass(e, SanetError)]
    assert not strays, f"errors outside the SanetError hierarchy: {strays}"
    names = [e.__name__ for e in errors]
    assert len(names) == len(set(names)), "two project errors share a name"


def test_packages_reexport_nothing() -> None:
    """A package's __init__ holds its docstring only: names are imported from the module that defines them."""
    for init in sorted(PACKAGE.rglob("__init__.py")):
        tree = ast.parse(init.read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        if init == PACKAGE / "__init__.py":  # the package root sets the no-telemetry environment
            continue
        assert not body, f"{init.relative_to(REPO)} holds code or imports"


def test_no_two_modules_share_a_store_name() -> None:
    stems = [path.stem for path in PACKAGE.rglob("*.py")]
    assert not [stem for stem in stems if stem in ("store", "stores", "storage")]
