"""The test harness's own rules (issue 21, item 4): no test module imports another. What several test
modules share lives in tests/helpers/, so that running, moving or deleting one test module never
changes another's."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_test_module(name: str) -> bool:
    """`tests.test_x`, `tests.test_x.y` or a bare `test_x` (a relative or path-based import)."""
    parts = name.split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    return bool(parts) and parts[0].startswith("test_")


def _test_imports(path: Path) -> list[str]:
    """Every import of a test module in `path`, at any depth (inside functions too), as `line: module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: {a.name}" for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if _is_test_module(module):
                found.append(f"{node.lineno}: {'.' * node.level}{module}")
            elif module in ("", "tests"):  # from tests import test_x / from . import test_x
                found += [f"{node.lineno}: {module or '.'} import {a.name}" for a in node.names
                          if _is_test_module(a.name)]
    return found


def _harness_files() -> list[Path]:
    return [p for p in sorted(TESTS.rglob("*.py")) if "node_modules" not in p.parts]


def test_no_test_module_imports_another():
    files = _harness_files()
    assert len([p for p in files if p.name.startswith("test_")]) > 50, "the test modules were not found"
    offenders = {str(p.relative_to(TESTS.parent)): found for p in files if (found := _test_imports(p))}
    assert offenders == {}, f"import these from tests/helpers/ instead: {offenders}"


def test_the_check_sees_every_form_of_import(tmp_path):
    forms = ["from tests.test_a import x", "import tests.test_a", "from tests import test_a",
             "from .test_a import x", "from . import test_a", "def f():\n    from tests.test_a import x"]
    for form in forms:
        (tmp_path / "m.py").write_text(form + "\n")
        assert _test_imports(tmp_path / "m.py"), form
    (tmp_path / "m.py").write_text("from tests.helpers.poll import until\nimport tests.wampclient\n"
                                   "from tests import helpers\n")
    assert _test_imports(tmp_path / "m.py") == []
