"""The pure parts of bench/vs_vnc.py: counting pictures, pairing render calls, the ratios' direction, the data."""

from __future__ import annotations

import json
import math

from bench.vs_vnc import circle, first_change_after, frames_between, render_calls, speedup, sphere_vtk, wslink_summary


def test_frames_between_counts_changes_in_the_window_and_merges_a_picture_drawn_in_parts():
    changes = [0.5, 1.0, 1.005, 1.1, 1.2, 1.21, 2.5]
    assert frames_between(changes, 1.0, 2.0) == 5
    assert frames_between(changes, 1.0, 2.0, gap=0.02) == 3     # 1.005 and 1.21 finish the picture before them
    assert frames_between(changes, 3.0, 4.0) == 0


def test_first_change_after_a_moment():
    assert first_change_after([1.0, 2.0, 3.0], 2.0) == 3.0
    assert first_change_after([1.0], 1.5) is None


def test_speedup_is_above_one_where_pvhpc_does_better():
    assert speedup(20.0, 10.0, higher_is_better=True) == 2.0     # frames/s
    assert speedup(0.1, 0.2, higher_is_better=False) == 2.0     # seconds: VNC/pvhpc
    assert math.isnan(speedup(0.0, 1.0, higher_is_better=True))
    assert math.isnan(speedup(float("nan"), 1.0, higher_is_better=False))


def test_render_calls_pair_each_call_with_its_answer():
    def call(i):
        return json.dumps({"wslink": "1.0", "id": f"rpc:c0:{i}", "method": "viewport.image.render", "args": [{}]})

    def answer(i, stale, image="x" * 1000):
        return json.dumps({"wslink": "1.0", "id": f"rpc:c0:{i}",
                           "result": {"image": image, "stale": stale, "workTime": 50 + i}})

    rpcs = [(10.0, "sent", wslink_summary(call(1))), (10.1, "received", wslink_summary(answer(1, True))),
            (10.2, "sent", wslink_summary(call(2))), (10.4, "received", wslink_summary(answer(2, False, ""))),
            (12.0, "sent", wslink_summary(call(3))), (12.1, "received", wslink_summary(answer(3, False)))]
    found = render_calls(rpcs, 10.0, 11.0)
    assert found["calls"] == 2 and found["stale_share"] == 0.5 and found["images_per_s"] == 1.0
    assert round(found["round_trip_ms"]) == 150 and found["work_ms"] == 51.5 and found["image_kb"] == 1.0
    assert render_calls(rpcs, 20.0, 21.0) == {}
    assert wslink_summary("not json") == {}


def test_circle_and_the_sphere():
    x, y = circle((100, 100), 10, 15)       # a quarter turn
    assert (round(x), round(y)) == (100, 110)
    text = sphere_vtk(4)
    assert "POINTS 20 float" in text and "POLYGONS 16 80" in text and "POINT_DATA 20" in text


def test_renders_between_reads_the_desktops_render_log():
    from bench.vs_vnc import renders_between

    assert renders_between("10.0\n10.5\n11.2\n", 10.0, 11.0) == 2
    assert renders_between("", 10.0, 11.0) == 0


def test_a_round_interleaves_each_pvhpc_path_with_the_desktop():
    from bench.vs_vnc import QUICK, VISUALIZER, VNC, interleaved

    assert interleaved([QUICK, VISUALIZER, VNC]) == [QUICK, VNC, VISUALIZER, VNC]
    assert interleaved([QUICK, VNC]) == [QUICK, VNC]
    assert interleaved([VNC]) == [VNC]
    assert interleaved([QUICK]) == [QUICK]
