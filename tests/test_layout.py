"""README's layout table is the map of the tree: every part of pvhpc/ is on it, and everything on it exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def layout_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_path_on_the_map_exists():
    missing = [path for path in layout_rows() if not (ROOT / path).exists()]
    assert not missing, f"README's layout table names paths that do not exist: {missing}"


def test_every_part_of_the_package_is_on_the_map():
    rows = layout_rows()
    package = ROOT / "pvhpc"
    parts = [p for p in package.iterdir() if not p.name.startswith("__") and (p.suffix == ".py" or p.is_dir())]
    unlisted = []
    for part in parts:
        key = f"pvhpc/{part.name}" + ("/" if part.is_dir() else "")
        if key not in rows:
            unlisted.append(key)
    assert not unlisted, f"not in README's layout table: {unlisted}"


def test_each_folder_row_names_its_modules():
    """A folder's row names each module in it, and names none that it lacks."""
    problems = []
    for path, text in layout_rows().items():
        folder = ROOT / path
        if not (path.startswith("pvhpc/") and folder.is_dir()) or path == "pvhpc/share/":
            continue
        named = set(re.findall(r"`([A-Za-z0-9_]+\.py)`", text))
        present = {p.name for p in folder.glob("*.py")}
        named.discard("__init__.py")
        present.discard("__init__.py")
        if present - named:
            problems.append(f"{path}: does not name {sorted(present - named)}")
        if named - present:
            problems.append(f"{path}: names {sorted(named - present)}, which are not there")
    assert not problems, "; ".join(problems)
