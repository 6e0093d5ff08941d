"""Writes the example site config from the key declarations, so it shows every key the loader accepts:

    python -m pvhpc.config.example > docs/site.example.yaml

Each key gets its help as a comment above it. A key with a fixed default is written with that
default; a key whose default is computed when the file is read (from another key, or from the
machine) is written commented out, with an example value, and its comment says what the default
comes to. Partitions and applications are shown by example entries. An optional section (ssh:) is
written commented out as a whole. ``tests/test_config_declaration.py`` checks the file in the repository
is what this writes, and that it loads, commented-out keys included.
"""

from __future__ import annotations

import re
import sys
import textwrap
from typing import Any

import yaml

from pvhpc.config.keys import SITE
from pvhpc.config.schema import Derived, Key, Named, Section

REGENERATE = "python -m pvhpc.config.example > docs/site.example.yaml"
# A key written commented out: "# name: value" at the key's own indentation. Help lines never look like this.
COMMENTED_KEY = re.compile(r"^(\s*)# ([a-z_]+):( |$)")
WIDTH = 110
_UNSET = object()

HEADER = f"""\
# An example pvhpc site configuration: every key, what it means and its default.
# Written from the declarations in pvhpc/config/keys.py by: {REGENERATE}
# (change the declarations, not this file: tests/test_config_declaration.py fails when they differ).
#
# pvhpc serve --config site.yaml checks it all at start; an error names the file and the key.
# A key left out takes its default. A key shown commented out has a default computed when the file is
# read (its comment says from what); the value beside it is only an example."""


def render() -> str:
    lines = [HEADER]
    for section in SITE:
        lines.append("")
        lines += _comment(section.help, "")
        lines += _named(section) if isinstance(section, Named) else _section(section)
    return "\n".join(lines) + "\n"


def _section(section: Section) -> list[str]:
    mark = "# " if section.optional else ""
    lines = [f"{mark}{section.name}:"]
    for key in section.keys:
        lines += _key(key, "  ", commented=section.optional)
    return lines


def _named(section: Named) -> list[str]:
    lines = [f"{section.name}:"]
    for i, (name, written) in enumerate(section.examples.items()):
        lines.append(f"  {name}:")
        for key in section.keys:
            if i == 0:   # the first entry shows every key; the others only what they set
                lines += _key(key, "    ", written.get(key.name, _UNSET))
            elif key.name in written:
                lines.append(f"    {key.name}: {_yaml(written[key.name])}")
    return lines


def _key(key: Key, indent: str, written: Any = _UNSET, commented: bool = False) -> list[str]:
    help = key.help + "."
    if key.required:
        help += " Required."
    if isinstance(key.default, Derived):
        help += f" Default: {key.default.says}."
    lines = _comment(help, indent)
    if written is not _UNSET:
        value = written
    elif key.default is not None and not isinstance(key.default, Derived):
        value = key.default
    else:
        value, commented = key.example, True
    mark = "# " if commented else ""
    lines.append(f"{indent}{mark}{key.name}:" + ("" if value is None else f" {_yaml(value)}"))
    return lines


def _comment(text: str, indent: str) -> list[str]:
    lines = [f"{indent}# {line}" for line in textwrap.wrap(text, WIDTH - len(indent) - 2)]
    for line in lines:
        if COMMENTED_KEY.match(line):
            raise ValueError(f"help line {line.strip()!r} would read as a commented-out key: reword it")
    return lines


def _yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


if __name__ == "__main__":
    sys.stdout.write(render())
