"""The package's layout rules (docs/architecture.md), checked on the source text.

- no import cycle between modules of ``src/microdiff`` (every import counts: those inside
  functions and under ``if TYPE_CHECKING:`` too);
- the library never imports the training loop or a command, and training never imports a
  command; only ``cli`` (and ``__main__``) import commands;
- no file over 400 lines, no function over 60 lines unless its docstring says why
  (a line starting with ``Long:``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "microdiff"
TRAINING = {"train", "runs", "signals"}
COMMANDS = {"cli", "__main__", "demo", "predict_files", "evaluate_files", "export_bioimageio"}
ENTRY = {"cli", "__main__"}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> dict[str, Path]:
    """Dotted name below ``microdiff`` (``data.io``; a package is its ``__init__``) → file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` imports."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("microdiff"):
                    found.add(alias.name.removeprefix("microdiff").lstrip("."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("microdiff"):
                target = node.module.removeprefix("microdiff").lstrip(".")
            else:
                return
            for alias in node.names:  # `from . import metrics` imports a module
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return {m for m in found if m in known}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_import_graph_is_read() -> None:
    graph = _graph()
    assert {"diffusion", "sampling", "schedule"} <= graph["models"] | graph["diffusion"]
    assert "runs" in graph["cli"] and "data.io" in graph["data.axes"]


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_layers() -> None:
    graph = _graph()
    for name, deps in graph.items():
        top = _top(name)
        if top in ENTRY:
            continue
        reached = {_top(d) for d in deps}
        if top in COMMANDS or top == "napari":
            assert not reached & COMMANDS, f"command {name} imports another command: {reached & COMMANDS}"
        elif top in TRAINING:
            assert not reached & COMMANDS, f"training module {name} imports a command"
        else:
            bad = reached & (COMMANDS | TRAINING)
            assert not bad, f"library module {name} imports {sorted(bad)}"


def test_file_and_function_lengths() -> None:
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name}: {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                reason = any(line.strip().startswith("Long:") for line in doc.splitlines())
                assert length <= MAX_FUNCTION_LINES or reason, (
                    f"{path.name}:{node.lineno} {node.name} has {length} lines and no 'Long:' reason")
