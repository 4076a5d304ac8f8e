"""The layers of docs/architecture.md, enforced on the source: no import cycles (imports inside
functions counted), no import from a layer above, no private name used outside its module, no
TensorFlow at module level in the representation layer and the Beam code, no Keras in the Beam
code, flags defined only in entry points and gin parsed only by dct_gen.cli."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("dct_gen", "beam_jobs")

# docs/architecture.md, "The layers". Entry points are layer 5.
LAYERS = {
    0: (
        "errors",
        "representation",
        "images",
        "records",
        "sequence_file",
        "pictures",
        "plots",
        "codec_files",
        "jpeg_baseline",
        "photos",
    ),
    1: ("dct_ops", "data"),
    2: ("layers", "model", "configs"),
    3: ("run_dir",),
    4: ("training", "sampling", "evaluation", "metrics", "saved_model"),
    5: ("cli", "train", "sample", "export", "evaluate", "codec", "demo"),
}
ENTRY_POINTS = {"dct_gen." + m for m in LAYERS[5] if m != "cli"} | {"beam_jobs.build_dataset"}
BEAM_LIBRARY_LAYER = 0  # beam_jobs' library modules sit beside layer 0
GIN_PARSERS = {"dct_gen.cli"}
GIN_PARSE_CALLS = {
    "parse_config",
    "parse_config_file",
    "parse_config_files_and_bindings",
    "parse_value",
}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _sources() -> dict[str, str]:
    """Module name -> source file of every module in our packages."""
    out = {}
    for package in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
            if "__pycache__" in dirpath:
                continue
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    out[_module_name(path)] = path
    return out


SOURCES = _sources()


class _Imports(ast.NodeVisitor):
    """Every import of a module, with whether it runs at import time (module level)."""

    def __init__(self, module: str):
        self.module = module
        self.package = module.rsplit(".", 1)[0] if "." in module else module
        self.depth = 0  # > 0 inside a function body
        self.found: list[tuple[str, bool, int]] = []  # (imported module, module level, line)
        self.names: list[tuple[str, str, int]] = []  # (module, imported name, line)

    def _add(self, name: str, node: ast.AST) -> None:
        self.found.append((name, self.depth == 0, node.lineno))

    def visit_FunctionDef(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.module.split(".")[: -node.level]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        self._add(source, node)
        for alias in node.names:
            self.names.append((source, alias.name, node.lineno))
            # `from dct_gen import run_dir` imports the module dct_gen.run_dir.
            if f"{source}.{alias.name}" in SOURCES:
                self._add(f"{source}.{alias.name}", node)


def _parse(module: str) -> tuple[ast.Module, _Imports]:
    with open(SOURCES[module]) as f:
        tree = ast.parse(f.read(), SOURCES[module])
    visitor = _Imports(module)
    visitor.visit(tree)
    return tree, visitor


PARSED = {m: _parse(m) for m in SOURCES}


def _ours(name: str) -> str | None:
    """The module of ours that an imported name refers to (None: not ours)."""
    while name:
        if name in SOURCES:
            return name
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return None


def _edges() -> dict[str, set[str]]:
    graph = {m: set() for m in SOURCES}
    for module, (_, imports) in PARSED.items():
        for name, _, _ in imports.found:
            target = _ours(name)
            if target and target != module and target not in PACKAGES:
                graph[module].add(target)
    return graph


def _layer(module: str) -> int:
    package, _, name = module.partition(".")
    if package == "beam_jobs":
        return 5 if module in ENTRY_POINTS else BEAM_LIBRARY_LAYER
    for layer, names in LAYERS.items():
        if name in names:
            return layer
    raise AssertionError(
        f"{module} is in no layer: add it to docs/architecture.md and to LAYERS in {__file__}"
    )


def test_every_module_has_a_layer():
    for module in SOURCES:
        if module not in PACKAGES:
            _layer(module)
    listed = {f"dct_gen.{m}" for names in LAYERS.values() for m in names}
    assert listed <= set(SOURCES), f"listed but missing: {sorted(listed - set(SOURCES))}"


def test_no_import_cycles():
    graph = _edges()
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_a_layer_above_its_own():
    bad = []
    for module, targets in _edges().items():
        if module in PACKAGES:
            continue
        for target in targets:
            if target in ENTRY_POINTS and module != target:
                bad.append(f"{module} imports the entry point {target}")
            elif _layer(target) > _layer(module):
                bad.append(
                    f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
                )
            elif module.startswith("beam_jobs.") and module not in ENTRY_POINTS:
                if target.startswith("dct_gen.") and _layer(target) != 0:
                    bad.append(f"{module} imports {target}, which is not in layer 0")
    assert not bad, "\n".join(bad)


def _module_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> module, for every `import m [as x]` and `from p import m [as x]` whose
    target is a module (ours, or a dependency's: `import keras` binds keras)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in SOURCES or node.module in PACKAGES:
                    aliases[a.asname or a.name] = full
    return aliases


def _private_uses(module: str, tree: ast.Module, imports: _Imports) -> list[str]:
    bad = []
    for source, name, line in imports.names:
        if name.startswith("_") and not name.startswith("__"):
            bad.append(f"{module}:{line}: from {source} import {name}")
        if source.startswith("keras.src") or source == "keras.src":
            bad.append(f"{module}:{line}: imports {source} (Keras internals)")
    for name, _, line in imports.found:
        if name.startswith("keras.src"):
            bad.append(f"{module}:{line}: imports {name} (Keras internals)")
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        private = attr.startswith("_") and not attr.startswith("__")
        if not (private or attr == "src"):
            continue
        # The object: a chain of names starting at an imported module (keras.src, gin.config._X).
        base, chain = node.value, []
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if not isinstance(base, ast.Name) or base.id not in aliases:
            continue
        target = aliases[base.id]
        if any(c.startswith("_") and not c.startswith("__") for c in chain):
            continue  # reported at the inner attribute
        if attr == "src" and target.split(".")[0] != "keras":
            continue
        dotted = ".".join([base.id, *reversed(chain), attr])
        bad.append(f"{module}:{node.lineno}: {dotted}")
    return bad


def _script_sources() -> dict[str, str]:
    out = {}
    for folder in ("bench", "launch"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                out[f"{folder}/{name}"] = os.path.join(ROOT, folder, name)
    return out


def test_no_private_name_is_used_outside_its_module():
    bad = []
    for module, (tree, imports) in PARSED.items():
        bad += _private_uses(module, tree, imports)
    for name, path in _script_sources().items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        visitor = _Imports(name)
        visitor.visit(tree)
        bad += _private_uses(name, tree, visitor)
    assert not bad, "private names used outside their module:\n" + "\n".join(bad)


def _heavy(name: str, packages: tuple[str, ...]) -> bool:
    return name.split(".")[0] in packages


def test_representation_layer_and_beam_code_import_no_tensorflow_at_module_level():
    bad = []
    for module, (_, imports) in PARSED.items():
        light = module.startswith("beam_jobs.") or (
            module.startswith("dct_gen.") and _layer(module) == 0
        )
        for name, module_level, line in imports.found:
            if module.startswith("beam_jobs.") and _heavy(name, ("keras",)):
                bad.append(f"{module}:{line}: imports {name} (Beam code imports no Keras)")
            if light and module_level and _heavy(name, ("tensorflow", "keras")):
                bad.append(f"{module}:{line}: imports {name} at module level")
    assert not bad, "\n".join(bad)


def test_importing_the_representation_layer_loads_no_tensorflow():
    """The same rule at run time, transitive imports included."""
    modules = [f"dct_gen.{m}" for m in LAYERS[0]] + ["beam_jobs.transforms", "beam_jobs.outputs"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        + "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _calls(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            yield name, node.lineno


def test_only_entry_points_define_flags_and_only_cli_parses_gin():
    bad = []
    for module, (tree, _) in PARSED.items():
        for name, line in _calls(tree):
            if name.startswith("DEFINE") and module not in ENTRY_POINTS:
                bad.append(f"{module}:{line}: defines a flag ({name})")
            if name in GIN_PARSE_CALLS and module not in GIN_PARSERS:
                bad.append(f"{module}:{line}: parses gin ({name})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_entry_points_are_small(module):
    """An entry point holds flags and the glue to its library, not the library itself."""
    with open(SOURCES[module]) as f:
        lines = len(f.readlines())
    assert lines <= 400, f"{module} has {lines} lines: move the work into its library"
