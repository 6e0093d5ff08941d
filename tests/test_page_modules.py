"""The page's ES modules hold together without a browser: each import names a module and an export that exist,
no module keeps mutable state at its top level, the page's import map versions each of them, and the words the
page shows of an ended session come from the API (one copy, in pvhpc/jobs/states.py).

The page in a browser is tests/test_web_page.py's (Chromium, on the real cluster)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from pvhpc.sessions import lifecycle
from pvhpc.jobs.states import END_MESSAGES, EndReason
from pvhpc.web import pages
from pvhpc.web.views import session_json

from tests.helpers import session_record

STATIC = pages.STATIC_DIR
MODULES = sorted(p.name for p in STATIC.glob("*.js"))
IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./([^"]+)";', re.M)
EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:const|let|function|class)\s+([A-Za-z_$][\w$]*)", re.M)


def exports(name: str) -> set[str]:
    return set(EXPORT.findall((STATIC / name).read_text()))


@pytest.mark.parametrize("name", MODULES)
def test_each_import_names_a_module_and_an_export_that_exist(name):
    for names, module in IMPORT.findall((STATIC / name).read_text()):
        assert (STATIC / module).is_file(), f"{name} imports {module}, which is not in static/"
        wanted = {n.strip() for n in names.split(",") if n.strip()}
        missing = wanted - exports(module)
        assert not missing, f"{name} imports {sorted(missing)} from {module}, which does not export them"


@pytest.mark.parametrize("name", MODULES)
def test_no_module_keeps_mutable_state_at_its_top_level(name):
    """State lives in the parts (form, session panel, lists) and the store page.js passes them."""
    assert not re.findall(r"^(?:export\s+)?(?:let|var)\s", (STATIC / name).read_text(), re.M), name


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_modules_link_in_node(tmp_path):
    """Node parses each module and links its imports (named exports included); page.js, which runs the page
    at once, only parses."""
    for name in MODULES:
        shutil.copy(STATIC / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    script = "".join(f'await import("./{name}");' for name in MODULES if name != "page.js")
    linked = subprocess.run(["node", "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert linked.returncode == 0, linked.stderr
    parsed = subprocess.run(["node", "--check", "page.js"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert parsed.returncode == 0, parsed.stderr


def test_the_import_map_versions_every_module_and_comes_before_the_page_script():
    imports = json.loads(pages._module_map())["imports"]
    assert sorted(imports) == [f"./static/{name}" for name in MODULES]
    for name in MODULES:
        assert re.fullmatch(rf"\./static/{re.escape(name)}\?v=[0-9a-f]{{12}}", imports[f"./static/{name}"])
    template = (STATIC / "index.html").read_text()
    assert template.index('<script type="importmap">{{modules}}</script>') < template.index('type="module"')
    # Each is a file the /static/ route serves: one folder, no sub-folders (and so in pyproject's web/static/*).
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+\.js", name) for name in MODULES)


class NoFrontEnd:
    def session_url(self, record):
        return None


def test_an_ended_session_says_how_it_ended_once_in_the_apis_words():
    record = session_record(state="ended", end_reason=EndReason.CANCELLED.value,
                            detail=lifecycle.ended(EndReason.CANCELLED).detail)
    shown = session_json(record, NoFrontEnd())
    assert shown["end_reason_text"] == END_MESSAGES[EndReason.CANCELLED] == "cancelled by its user"
    assert shown["detail"] == "cancelled by its user"   # the page shows it once: "Cancelled by its user"
    # With more to say, the detail goes on after the words (the page's "Why" column shows the rest).
    idle = lifecycle.ended(EndReason.IDLE, "nobody used it")
    record = session_record(state="ended", end_reason=EndReason.IDLE.value, detail=idle.detail)
    shown = session_json(record, NoFrontEnd())
    assert shown["detail"] == f"{shown['end_reason_text']}: nobody used it"
    # Every way a session ends has words; a live session has none.
    assert set(END_MESSAGES) == set(EndReason)
    assert session_json(session_record(), NoFrontEnd())["end_reason_text"] is None
