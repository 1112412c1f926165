"""The layers of probekit, as docs/architecture.md draws them, checked on the source.

Every ``import`` of a probekit module by another (at module level or inside a function; not
those under ``if TYPE_CHECKING:``, which never run) must point down the list of layers, never
form a cycle, and never take a private name. The few upward imports are the façade methods of
the result objects (``Report.to_markdown()`` and friends), listed here by name.
"""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "probekit"

# from the bottom up; a module may import from its own layer or any layer below
LAYERS = [
    {"version", "errors", "arrays", "files", "accelerators", "ranks"},
    {"validate", "labels", "data", "splits"},
    {"neighbours"},
    {"probes", "probes.metrics", "probes.lbfgs", "probes.standard", "probes.logistic",
     "probes.logistic_torch", "probes.linear", "probes.knn", "probes.tagging",
     "probes.multilabel",
     "geometry", "geometry.clusters", "geometry.spectrum", "geometry.pairwise",
     "geometry.graph", "geometry.cka", "geometry.projection"},
    {"report"},
    {"dual", "dual.common", "dual.classes", "dual.tags", "layers", "compare", "demo"},
    {"render", "render.text", "render.plots", "render.html"},
    {"cli", "cli_tuning", "cli_options", "__main__", "__init__"},
]
# the result objects' convenience methods call up into the views (lazily, inside the method)
FACADES = {("report", "render.text"), ("report", "compare"), ("layers", "render.text")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(probekit module, names)`` of every import that can run (TYPE_CHECKING blocks
    skipped)."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "probekit"):
            target = node.module.removeprefix("probekit").lstrip(".")
            names = [alias.name for alias in node.names]
            if not target:  # from probekit import x: x may be a submodule or a name
                for name in names:
                    found.append((name if (SOURCE / name).exists()
                                  or (SOURCE / f"{name}.py").exists() else "__init__", [name]))
                continue
            found.append((target, names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("probekit."):
                    found.append((alias.name.removeprefix("probekit."), []))
    return found


def layer(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if module in members:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the picture in "
                         "docs/architecture.md")


MODULES = {module_name(path): path for path in SOURCE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers_and_take_no_private_names(module):
    for target, names in imports(MODULES[module]):
        if target == module:
            continue
        assert (module, target) in FACADES or layer(target) <= layer(module), \
            f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        private = [name for name in names if name.startswith("_") and name != "__version__"]
        assert not private, f"{module} imports private names {private} from {target}"


def test_no_import_cycle():
    graph = {module: {target for target, _ in imports(path) if target != module}
             for module, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", " -> ".join(trail + [module])
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target in MODULES:
                visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_only_the_tuning_commands_import_tuner():
    users = [module for module, path in MODULES.items()
             if "import tuner" in path.read_text() or "from tuner" in path.read_text()]
    assert users in ([], ["cli_tuning"]), users
