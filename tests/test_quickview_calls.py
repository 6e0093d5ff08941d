"""Which of the quick view's calls a ParaViewWeb server's protocols lack (pvhpc/node/quickview_calls.py): the
Visualizer's lack both, pvhpc's own server none. (Run in a real Visualizer server: tests/test_sharing_visualizer_browser.py.)"""

from __future__ import annotations

import sys

from pvhpc import paths

sys.path.insert(0, str(paths.SERVER_SCRIPT.parent))   # the node's modules import each other by file name
import quickview_calls  # noqa: E402


def exported(*uris):
    """A protocol class whose one method is registered under ``uris``, as wslink's register marks it."""
    def method(self):
        return None
    method._wslinkuris = [{"uri": uri} for uri in uris]
    return type("Protocol", (), {"method": method})()


def test_a_server_with_the_visualizers_protocols_lacks_both_calls():
    protocols = [exported("viewport.image.push"), exported("viewport.mouse.interaction"), object()]
    assert quickview_calls.missing(protocols) == ["viewport.image.render", "pvhpc.viewport.interact"]


def test_pvhpcs_own_server_lacks_none():
    assert quickview_calls.missing([exported("viewport.image.render"), exported("pvhpc.viewport.interact")]) == []
    assert quickview_calls.missing([exported("viewport.image.render")]) == ["pvhpc.viewport.interact"]


def test_without_paraview_nothing_is_hooked():
    # The service's own Python has no ParaView: install says so and changes nothing.
    try:
        import paraview  # noqa: F401
    except ImportError:
        assert quickview_calls.install() is False
