"""Every stage depends on every project file whose change can change its outputs.

The code a stage runs is derived from the source: the `bert2lr` subcommand its `cmd` calls, the
module-level imports of cli.py, the imports inside that subcommand's function, and then every
project module those import, transitively (imports inside functions count: they run too). A module
that loads the compiled scorer brings its C source. `dvc.yaml` must list all of them, so that a
changed scorer or helper makes `dvc status` name every stage it can change.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "bert2lr"
# A module that loads a compiled extension depends on the extension's source.
EXTENSION_SOURCES = {"bert2lr._featurize": ["src/bert2lr/_featurize.c"]}


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "bert2lr":
        return None
    path = PACKAGE.joinpath(*parts[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(node: ast.AST, package: str = "bert2lr") -> set[str]:
    """The bert2lr modules an AST imports, at any depth (function bodies included)."""
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Import):
            names |= {a.name for a in child.names}
        elif isinstance(child, ast.ImportFrom) and child.module:
            base = child.module if child.level == 0 else f"{package}.{child.module}"
            names.add(base)
            names |= {f"{base}.{a.name}" for a in child.names}  # `from bert2lr import audit`
    return {n for n in names if n == "bert2lr" or n.startswith("bert2lr.")}


def closure(modules: set[str]) -> set[str]:
    """Project files (relative to the root) reached from these modules."""
    files, todo, seen = set(), list(modules), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        files |= set(EXTENSION_SOURCES.get(name, []))
        path = module_file(name)
        if path is None:
            continue
        files.add(path.relative_to(ROOT).as_posix())
        todo += imported_modules(ast.parse(path.read_text(encoding="utf-8")))
        if "." in name:
            todo.append(name.rsplit(".", 1)[0])  # importing a submodule runs its package's __init__
    return files


def command_code(subcommand: str) -> set[str]:
    """The project files `bert2lr <subcommand>` runs."""
    cli = ast.parse((PACKAGE / "cli.py").read_text(encoding="utf-8"))
    top = {n for stmt in cli.body if isinstance(stmt, (ast.Import, ast.ImportFrom)) for n in imported_modules(stmt)}
    functions = [f for f in cli.body if isinstance(f, ast.FunctionDef)]
    command = next((f for f in functions if f.name == subcommand or
                    any(isinstance(d, ast.Call) and d.args and getattr(d.args[0], "value", None) == subcommand
                        for d in f.decorator_list)), None)
    assert command is not None, f"cli.py has no command {subcommand!r}"
    # cli.py itself runs, but only the imports at its top and in this command's body.
    return closure(top | imported_modules(command)) | {"src/bert2lr/cli.py"}


# A foreach stage's definition is under `do`.
STAGES = {name: stage.get("do", stage) for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}


def stage_code(stage: str) -> set[str]:
    words = shlex.split(" ".join(STAGES[stage]["cmd"].split()))
    assert words[0] == "bert2lr", f"stage {stage} does not call bert2lr"
    return command_code(words[1])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_all_the_code_it_runs(stage):
    needed = stage_code(stage)
    listed = {d for d in STAGES[stage].get("deps", []) if isinstance(d, str)}
    missing = sorted(needed - listed)
    assert not missing, f"dvc.yaml: stage '{stage}' runs {missing} but does not list them in deps"


def test_the_derivation_sees_lazy_imports_and_the_c_source():
    """Guards the guard: the student stage's command imports its module inside the function."""
    code = command_code("evaluate")
    assert "src/bert2lr/stages/evaluate.py" in code and "src/bert2lr/linear.py" in code
    assert "src/bert2lr/_featurize.c" in code and "src/bert2lr/cli.py" in code


def test_stages_never_import_stages():
    """A stage shares code through the library, never through another stage's module."""
    stages = PACKAGE / "stages"
    offenders = []
    for path in sorted(stages.glob("*.py")):
        imported = imported_modules(ast.parse(path.read_text(encoding="utf-8")))
        offenders += [f"{path.name} imports {name}" for name in sorted(imported)
                      if name.startswith("bert2lr.stages.") and name != f"bert2lr.stages.{path.stem}"
                      or name == "bert2lr.stages" and path.name != "__init__.py"]
    assert len(list(stages.glob("*.py"))) > 5 and not offenders, offenders


def test_only_the_cli_imports_stages():
    """The library and serving never reach into a stage, so a stage can change without them."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "stages" or path.name == "cli.py":
            continue
        imported = imported_modules(ast.parse(path.read_text(encoding="utf-8")))
        offenders += [f"{path.relative_to(PACKAGE)} imports {n}" for n in sorted(imported)
                      if n == "bert2lr.stages" or n.startswith("bert2lr.stages.")]
    assert not offenders, offenders
