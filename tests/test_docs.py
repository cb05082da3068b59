"""The README stands on its own: every link points inside the repository (to a file that exists, or
to one of its own sections), no URL leaves the machine, and the files it names as shipped exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "architecture.md"]


def _anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_links_stay_in_the_repository():
    for doc in DOCS:
        text = doc.read_text()
        anchors = {_anchor(t) for t in re.findall(r"^#+ (.*)$", text, re.M)}
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith("#"):
                assert target[1:] in anchors, f"{doc.name}: no section {target}"
            else:
                assert "://" not in target and (doc.parent / target).exists(), f"{doc.name}: {target}"
        outside = [u for u in re.findall(r"\b\w+://[^\s)`'\"]+", text)
                   if not re.match(r"\w+://(127\.0\.0\.1|localhost|\[::1\])", u)
                   and not u.startswith(("unix://", "redis://127", "rediss://127"))]
        assert not [u for u in outside if "." in u.split("://", 1)[1].split("/", 1)[0]], outside
    assert "../" not in (ROOT / "README.md").read_text()


def test_the_quick_start_says_what_it_needs_and_the_license_is_there():
    readme = (ROOT / "README.md").read_text()
    for need in ("Python 3.11", "`venv`", "Node.js with npm", "redis-server"):
        assert need in readme
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 Courtyard authors")
