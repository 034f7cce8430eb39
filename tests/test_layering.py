"""The package's layers, read from its source: the core never reaches up into the commands, eval,
export, search or train; search and eval share through the data module, not through training's
internals; module-level imports form no cycle; no function of the package shadows a module."""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import alphanet_zoo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from package_dirs import module_files  # noqa: E402  (setup.cfg's package_dir, read in one place)

UPPER = ("alphanet_zoo.eval", "alphanet_zoo.export", "alphanet_zoo.search", "alphanet_zoo.train",
         "alphanet_zoo.commands")
MODULES = module_files(REPO)
#: old import paths of modules that moved, kept for users' code: each is the moved module itself, and none
#: of ours imports it (so they are not part of the core's layering)
MOVED = {"alphanet_zoo.losses": "alphanet_zoo.train.losses", "alphanet_zoo.peer_watch": "alphanet_zoo.train.peer_watch"}


def _imports_of_tree(name: str, path: Path, nodes) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m in MODULES}


def _imports(name: str, path: Path, top_level_only: bool = False) -> set[str]:
    """The alphanet_zoo modules ``name`` imports (anywhere in it, or at module level only)."""
    tree = ast.parse(path.read_text())
    return _imports_of_tree(name, path, tree.body if top_level_only else ast.walk(tree))


def _is_core(name: str) -> bool:
    return not name.startswith(UPPER) and name not in MOVED


def test_a_moved_modules_old_import_path_is_the_module_and_nothing_of_ours_uses_it():
    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    users = {name: sorted(set(MOVED) & _imports(name, path)) for name, path in MODULES.items() if name not in MOVED}
    assert {k: v for k, v in users.items() if v} == {}


def test_the_core_never_imports_commands_eval_export_search_or_train():
    offenders = {name: sorted(m for m in _imports(name, path) if m.startswith(UPPER))
                 for name, path in MODULES.items() if _is_core(name)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_search_and_eval_do_not_import_training_internals():
    offenders = {name: sorted(m for m in _imports(name, path) if m.startswith("alphanet_zoo.train"))
                 for name, path in MODULES.items() if name.startswith(("alphanet_zoo.search", "alphanet_zoo.eval"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def _find_cycle(top_level_only: bool) -> list[str] | None:
    graph = {name: _imports(name, path, top_level_only) - {name} for name, path in MODULES.items()}
    # a package's __init__ importing its own submodules is not a cycle through them
    graph = {n: {m for m in deps if not (m.startswith(n + ".") and MODULES[n].name == "__init__.py")}
             for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_module_level_imports_have_no_cycle():
    cycle = _find_cycle(top_level_only=True)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_imports_inside_functions_close_no_cycle_either():
    cycle = _find_cycle(top_level_only=False)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_version_has_a_module_of_its_own():
    # modules that need the version import it from _version, never from the package being initialised
    wrong = {name for name, path in MODULES.items() for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom) and any(a.name == "__version__" for a in node.names)
             and (node.module or "").rpartition(".")[2] != "_version"}
    assert wrong == set(), wrong
    assert alphanet_zoo.__version__ == importlib.import_module("alphanet_zoo._version").__version__


def _function_level_imports() -> list[tuple[str, str]]:
    """(module, imported module) for every import of our own modules inside a function."""
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    fake = ast.Module(body=[node], type_ignores=[])
                    found += [(name, m) for m in _imports_of_tree(name, path, fake.body)]
    return found


def test_few_imports_of_our_own_modules_hide_inside_functions():
    # function-level imports are for optional third-party packages and for keeping a heavy subpackage out
    # of `import alphanet_zoo`; our own modules are imported at module level
    found = _function_level_imports()
    assert len(found) <= 15, found


def test_only_the_commands_read_a_command_line():
    readers = sorted(name for name, path in MODULES.items() if not name.startswith("alphanet_zoo.commands")
                     and any(isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in
                             ({a.name for a in n.names} if isinstance(n, ast.Import) else {n.module})
                             for n in ast.walk(ast.parse(path.read_text()))))
    assert readers == []


def test_no_function_shadows_a_module_of_the_same_name():
    shadowing = [name for name in alphanet_zoo.__all__
                 if callable(getattr(alphanet_zoo, name)) and not isinstance(getattr(alphanet_zoo, name), type)
                 and f"alphanet_zoo.{name}" in MODULES]
    assert shadowing == []


def test_nothing_cites_a_file_outside_the_repository():
    outside = ("DESIGN" + ".md", "../" + "shared")
    for path in [*MODULES.values(), *(REPO / "tests").glob("*.py")]:
        text = path.read_text()
        assert not any(name in text for name in outside), path
    assert (REPO / "docs" / "design.md").is_file()
