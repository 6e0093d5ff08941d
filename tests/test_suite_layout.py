"""The test suite's own layout: no test module imports another, and only tests/harness/ runs Slurm's commands.

What tests share lives where its name says (tests/harness/ for the components they run against, tests/helpers.py,
tests/fakes.py, tests/backends.py): a test module imported by another runs twice under two names, and what it
holds looks private to it while others lean on it. Read from the source (every import, at the top or inside a
function), like tests/test_imports.py reads pvhpc's.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Slurm's commands that ask or change the cluster; a test that needs them calls tests/harness/cluster.py.
SLURM_COMMANDS = {"squeue", "sinfo", "scontrol", "sacct", "scancel", "sbatch"}


def sources() -> list[tuple[str, ast.AST]]:
    return [(path.relative_to(TESTS.parent).as_posix(), ast.parse(path.read_text(), str(path)))
            for path in sorted(TESTS.rglob("*.py"))]


def imported_modules(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, module) of each import in ``tree``, a file of package ``package``; "from tests import x" counts as
    importing tests.x, relative imports are made absolute."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def is_test_module(module: str) -> bool:
    """tests.test_cli (or something in it), or test_cli imported by its bare name."""
    parts = module.split(".")
    return (parts[0] == "tests" and len(parts) > 1 and parts[1].startswith("test_")) or (
        len(parts) == 1 and parts[0].startswith("test_"))


def test_no_test_module_imports_another():
    offences = []
    for file, tree in sources():
        package = ".".join(Path(file).parent.parts)
        for line, module in imported_modules(tree, package):
            if is_test_module(module) and not any(o.startswith(f"{file}:{line} ") for o in offences):
                offences.append(f"{file}:{line} imports {module}")
    assert not offences, ("test modules import test modules; move what they share to tests/harness/ or "
                          f"tests/helpers.py: {offences}")


def test_the_checks_see_every_form_of_import():
    written = ("from tests.test_cli import pvhpc\nimport tests.test_cli\nfrom tests import test_cli\n"
               "from . import test_cli\nfrom .test_cli import pvhpc\ndef f():\n    from tests.test_cli import x\n")
    lines = {line for line, m in imported_modules(ast.parse(written), "tests") if is_test_module(m)}
    assert lines == {1, 2, 3, 4, 5, 7}
    assert not any(is_test_module(m) for _, m in imported_modules(
        ast.parse("from tests.helpers import wait_until\nfrom tests.harness import cluster\n"), "tests"))


def test_only_the_harness_runs_slurms_commands():
    offences = []
    for file, tree in sources():
        if file.startswith("tests/harness/"):
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"
                    and node.args and isinstance(node.args[0], ast.List) and node.args[0].elts
                    and isinstance(node.args[0].elts[0], ast.Constant)
                    and node.args[0].elts[0].value in SLURM_COMMANDS):
                offences.append(f"{file}:{node.lineno} runs {node.args[0].elts[0].value}")
    assert not offences, f"tests that run Slurm's commands themselves (use tests/harness/cluster.py): {offences}"
