"""The README and docs/ stand on their own and stay true: every link points inside the repository (to a
file that exists, or to a section of it), no URL leaves the machine, the README stays short, the
configuration reference names exactly the JSON Schema's keys, architecture.md names every module, and
the code blocks parse (the Python ones that were README blocks run against live routers:
tests/test_cli.py, tests/test_processes.py)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_anchor(t) for t in re.findall(r"^#+ (.*)$", _prose(doc.read_text()), re.M)}


def _prose(text: str) -> str:
    """The text without its fenced code blocks (a `# comment` in one is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _blocks(doc: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", doc.read_text(), re.M | re.S)


def test_links_stay_in_the_repository():
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(text)):
            path, _, section = target.partition("#")
            if "://" in path:
                raise AssertionError(f"{doc.name}: {target} leaves the repository")
            file = (doc.parent / path) if path else doc
            assert file.exists(), f"{doc.name}: {target}"
            if section:
                assert section in _anchors(file), f"{doc.name}: no section {target}"
        outside = [u for u in re.findall(r"\b\w+://[^\s)`'\"]+", text)
                   if not re.match(r"\w+://(127\.0\.0\.1|localhost|\[::1\])", u)
                   and not u.startswith(("unix://", "redis://127", "rediss://127"))]
        assert not [u for u in outside if "." in u.split("://", 1)[1].split("/", 1)[0]], (doc.name, outside)
    assert "../" not in (ROOT / "README.md").read_text()


def test_the_quick_start_says_what_it_needs_and_the_license_is_there():
    readme = (ROOT / "README.md").read_text()
    for need in ("Python 3.11", "`venv`", "Node.js with npm", "redis-server", "scripts/run", "scripts/test"):
        assert need in readme
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 Courtyard authors")


def test_the_readme_is_short_and_points_to_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    for page in (ROOT / "docs").glob("*.md"):
        assert f"](docs/{page.name})" in readme, f"the README does not link docs/{page.name}"


def _schema_paths() -> set[str]:
    """Every key path of the config's JSON Schema: `listeners[].tls.key`, `realms[].users.<name>.role`."""
    paths: set[str] = set()

    def walk(node: object, path: str) -> None:
        if not isinstance(node, dict):
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                walk(sub, path)
        for name, sub in node.get("properties", {}).items():
            paths.add(f"{path}.{name}" if path else name)
            walk(sub, f"{path}.{name}" if path else name)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ".<name>")

    walk(json.loads((ROOT / "router/configs/courtyard.schema.json").read_text()), "")
    return paths


def test_the_configuration_reference_names_exactly_the_schemas_keys():
    text = re.sub(r"<(authid|authrole)>", "<name>", (ROOT / "docs/configuration.md").read_text())
    schema = _schema_paths()
    assert len(schema) > 100
    missing = sorted(p for p in schema if f"`{p}`" not in text)
    assert not missing, f"docs/configuration.md does not name these config keys: {missing}"
    sections = {p for p in schema if "." not in p}
    named = set()  # the keys the tables' first column names
    for row in re.findall(r"^\| (`[^|]*`(?:, `[^|]*`)*) \|", text, re.M):
        named |= set(re.findall(r"`([^`]+)`", row))
    containers = {p[:i] for p in schema for i, c in enumerate(p) if c in ".["}  # `listeners[]`, `….<name>`
    stale = sorted(k for k in named if k.split(".")[0].split("[")[0] in sections
                   and k not in schema and k not in containers and k + "[]" not in containers)
    assert not stale, f"docs/configuration.md names keys the schema does not have: {stale}"


def test_architecture_names_every_module():
    text = (ROOT / "docs/architecture.md").read_text()
    modules = sorted(p.relative_to(ROOT).as_posix() for pkg in ("router", "realms")
                     for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py")
    assert len(modules) > 50
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md has no line for {missing}"


def test_every_code_block_parses():
    """Python blocks compile and YAML blocks load; a block that configures Courtyard (a top-level key
    of the config) is a valid config for the parser, as far as it can be without its files."""
    from router.config import ConfigError, parse

    sections = {p for p in _schema_paths() if "." not in p}
    blocks = configs = 0
    for doc in DOCS:
        for code in _blocks(doc, "python"):
            ast.parse(code)
            blocks += 1
        for code in _blocks(doc, "yaml"):
            data = yaml.safe_load(code)
            blocks += 1
            if isinstance(data, dict) and set(data) <= sections and "listeners" not in data:
                try:
                    parse(data)
                    configs += 1
                except ConfigError as e:
                    raise AssertionError(f"{doc.name}: a config block does not parse: {e}\n{code}") from None
    assert blocks >= 7 and configs >= 3
