"""The shape of the code: no import cycles in keras_vit (imports inside functions count), no
module over 400 lines, and tests that use only public names and import no other test module."""

import ast
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / "keras_vit"
MAX_MODULE_LINES = 400
once = pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                          reason="reads source files only: the same on every backend")


def module_name(path, root=REPO):
    """"keras_vit.export.tflite" for keras_vit/export/tflite.py (a package: its folder)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package=PACKAGE):
    return {module_name(path, package.parent): path for path in package.rglob("*.py")}


def import_graph(package=PACKAGE):
    """{module: the package's modules it imports anywhere in its code}."""
    modules = package_modules(package)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def imported_modules(path, name, modules):
    """The `modules` that `path` (module `name`) imports anywhere in its code: `from a
    import b` counts as importing the module a.b where there is one, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def cycles(graph):
    """Each strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while not group or node not in group:
                group.add(stack.pop())
            on_stack.difference_update(group)
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


@once
def test_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.a import A\n")
    (package / "a.py").write_text("from pkg import b\nA = 1\n")
    (package / "b.py").write_text("def f():\n    from pkg.sub import c\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("from .. import a\nimport os\n")
    graph = import_graph(package)
    assert graph["pkg.sub.c"] == {"pkg.a"} and graph["pkg"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


@once
def test_keras_vit_has_no_import_cycles():
    assert cycles(import_graph()) == []


@once
def test_no_module_passes_400_lines():
    long = {name: n for name, path in package_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def _test_files():
    return sorted((REPO / "tests").glob("*.py"))


@once
def test_tests_import_no_test_module_and_no_private_name():
    test_modules = {path.stem for path in _test_files() if path.stem.startswith("test_")}
    problems = []
    for path in _test_files():
        tree = ast.parse(path.read_text(), str(path))
        ours = {}  # local name -> module, for names bound to keras_vit/recipes/benchmarks modules
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in test_modules:
                        problems.append(f"{path.name} imports {alias.name}")
                    if alias.name.split(".")[0] in ("keras_vit", "recipes", "benchmarks"):
                        ours[alias.asname or alias.name.split(".")[0]] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                root = node.module.split(".")[0]
                if node.module in test_modules:
                    problems.append(f"{path.name} imports {node.module}")
                if root in ("keras_vit", "recipes", "benchmarks"):
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            problems.append(f"{path.name} imports {node.module}.{alias.name}")
                        ours[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ours and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                problems.append(f"{path.name} uses {ours[node.value.id]}.{node.attr}")
    assert sorted(set(problems)) == []

