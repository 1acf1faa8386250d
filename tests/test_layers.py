"""The layers hold: a module imports only from its own layer or below (the pipeline, bottom to top). Every
import counts, including those inside functions."""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "randsae"

# bottom to top; a module's layer is that of its first name under randsae
LAYERS = [
    {"errors", "io", "seeding", "config", "resources", "cpu", "distributed", "tables", "runs", "settings", "hub",
     "scorer_kinds", "__init__"},
    {"data", "transforms", "metrics", "probing", "sae"},
    {"training"},
    {"lm"},
    {"autointerp"},
    {"plots"},
    {"experiments"},
    {"study"},
    {"cli", "__main__"},
]


def layer_of(name: str) -> int:
    first = name.split(".")[0]
    for index, layer in enumerate(LAYERS):
        if first in layer:
            return index
    raise AssertionError(f"randsae.{name} has no layer; add it to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports(path: Path) -> set[str]:
    """Every randsae module `path` imports (relative to randsae)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("randsae.") and name.count(".") >= 1:
                found.add(name.removeprefix("randsae."))
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(SOURCE.rglob("*.py"))}


def test_no_module_imports_a_higher_layer():
    violations = [f"randsae.{module} (layer {layer_of(module)}) imports randsae.{other} (layer {layer_of(other)})"
                  for module, names in graph().items() for other in names
                  if layer_of(other) > layer_of(module) and other.split(".")[0] != "__init__"]
    assert not violations, "\n".join(violations)


def test_the_layer_list_knows_every_module():
    for module in graph():
        layer_of(module)


@pytest.mark.parametrize("package", ["lm", "autointerp", "experiments"])
def test_the_library_packages_hold_no_command_line(package):
    for module, names in graph().items():
        if module.startswith(package):
            assert not any(n.startswith("cli") for n in names), module


def test_the_study_has_no_import_circle_and_no_long_file():
    """study/: the records and settings below the stages, the runner on top — no module reaches itself through
    its imports (function-level ones included), and none is over 400 lines."""
    every = graph()
    modules = {m: {o for o in names if o in every and o != m}
               for m, names in every.items() if m.startswith("study")}

    def reaches(target: str, start: str, seen: set[str]) -> bool:
        for other in modules.get(start, ()):
            if other == target:
                return True
            if other not in seen:
                seen.add(other)
                if reaches(target, other, seen):
                    return True
        return False

    circles = [module for module in modules if reaches(module, module, set())]
    assert not circles, circles
    long = {p.name: n for p in (SOURCE / "study").rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def edges() -> list[tuple[int, int]]:
    """(from layer, to layer) for every import across layers: the layering as the code has it."""
    return sorted({(layer_of(m), layer_of(o)) for m, names in graph().items() for o in names
                   if layer_of(m) != layer_of(o)})


if __name__ == "__main__":  # print the import graph between layers
    names = [" ".join(sorted(layer)) for layer in LAYERS]
    for low, high in edges():
        print(f"{names[low]}  →  {names[high]}")


def test_docs_layout_names_every_module():
    layout = (SOURCE.parents[1] / "docs" / "layout.md").read_text()
    missing = [str(p.relative_to(SOURCE)) for p in sorted(SOURCE.rglob("*.py"))
               if p.name != "__init__.py" and str(p.relative_to(SOURCE)) not in layout]
    assert not missing, f"docs/layout.md does not name {missing}"
