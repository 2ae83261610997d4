"""lib/ is layered: imports only go down (data <- models <- evaluation <- training <- report <- studies), no circles."""

import ast
from pathlib import Path

import lib

LIB = Path(lib.__file__).parent
# the base (paths, fileio, config, executors, progress, the package itself) sits under every layer
# evaluation (pure metrics and statistics) sits below training because the run store scores every run it trains;
# report sits below studies because every study draws its own figures.
LAYERS = {"": 0, "data": 1, "models": 2, "evaluation": 3, "training": 4, "report": 5, "studies": 6}
# command-line entry points sit above every layer: they only call into lib, nothing in lib imports them
COMMANDS = {"lib.evaluate": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in LIB.rglob("*.py")}


def layer(module: str) -> int:
    if module in COMMANDS:
        return COMMANDS[module]
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 and parts[1] in LAYERS else 0


def lib_imports(path: Path) -> set[str]:
    """Every lib module that `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lib":
            for alias in node.names:  # `from lib.data import faces` imports a submodule, not a name
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


GRAPH = {name: {m for m in lib_imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_every_module_belongs_to_a_known_layer():
    packages = {p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {""}
    top_level = {name for name in MODULES if name.count(".") == 1 and name.split(".")[1] not in LAYERS}
    assert top_level == {"lib.paths", "lib.fileio", "lib.config", "lib.executors", "lib.progress", *COMMANDS}, \
        "only the base and the commands may live at the top of lib/"


def test_imports_only_go_down():
    upward = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
              for src, targets in GRAPH.items() for dst in targets if layer(dst) > layer(src)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_each_subpackage_says_what_it_is_for():
    for name in LAYERS:
        if name:
            doc = ast.get_docstring(ast.parse((LIB / name / "__init__.py").read_text(encoding="utf-8")))
            assert doc and len(doc.splitlines()) == 1, f"lib/{name}/__init__.py needs a one-line docstring"


def test_layering_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from lib.studies.phase2 import recommend\n")
    assert "lib.studies.phase2" in lib_imports(bad)
    assert layer("lib.studies.phase2") > layer("lib.data.cache")
