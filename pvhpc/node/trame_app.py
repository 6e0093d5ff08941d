"""pvhpc's trame application for ParaView, run by ``pvpython`` inside a session's Slurm job.

    pvpython argv_secret.py trame_app.py --server --host H --port P --authKey ${secret} --data DIR [--load FILE]

It runs with trame's runtime on PYTHONPATH (trame, trame-vtk, trame-vuetify and the wslink 2.x they bring, in a
directory of their own: ``pvhpc runtime install``), apart from the wslink 1.x of the Visualizer and pvhpc's own
server. It serves its own web client on its port (the front end proxies ``/session/<id>/`` to it), and that
client connects with the secret in its URL (``?secret=...``), as trame's clients do.

What a user does in it: open a file from the data directory (kept inside it by dataroots.py), add a Slice,
Contour or Clip, colour by a point or cell field with a colour map and a scalar bar, step through time steps,
reset the camera, take a screenshot (shown as a PNG to download). When Slurm ends the job, pvstate.py (installed
by argv_secret.py) saves the pipeline as a state, as for the other servers.

Only standard library, ParaView and trame; nothing from pvhpc.
"""

import base64
import collections
import os
import re
import sys
import tempfile

import pvstate   # beside this file, as dataroots
from dataroots import DataRoot, OutsideDataRoot
from paraview import simple
from trame.app import get_server
from trame.ui.vuetify3 import SinglePageLayout
from trame.widgets import html, paraview as pv_widgets, vuetify3 as v3

FILTERS = ("Slice", "Contour", "Clip")
COLOR_MAPS = ("Cool to Warm", "Viridis (matplotlib)", "Rainbow Uniform", "Inferno (matplotlib)", "Jet")
SOLID = "Solid colour"
MAX_FILES = 500
# wave_0.vtk, wave_1.vtk, ...: one entry "wave_*.vtk", opened as one reader whose files are its time steps.
SERIES_MEMBER = re.compile(r"^(?P<stem>.*?)(?P<number>\d+)(?P<ext>\.[^.]+)$")

server = get_server(client_type="vue3")
server.cli.add_argument("--data", default=os.getcwd(), help="the directory whose files users may open")
server.cli.add_argument("--load", default=None, help="a file (relative to --data) to open at start")
server.cli.add_argument("--ds-host", default=None, help="a parallel session's pvserver to attach to (its root rank)")
server.cli.add_argument("--ds-port", type=int, default=11111, help="that pvserver's port")
state, ctrl = server.state, server.controller
args, _ = server.cli.parse_known_args()
root = DataRoot(os.path.realpath(args.data), "Home")
if args.ds_host:
    # Before anything is made: readers and filters then run on the ranks (pvhpc's argv wrapper set the connect id).
    if simple.Connect(args.ds_host, args.ds_port) is None:
        sys.exit(f"could not attach to the ParaView server at {args.ds_host}:{args.ds_port}")

# A session started from a saved state loads it here, before the view is made, so that the view the page shows
# is the state's own (checked against the data roots again; a refusal ends the server saying why).
restored_from = pvstate.load_requested_or_leave()
view = simple.GetActiveViewOrCreate("RenderView")
if args.ds_host:
    view.RemoteRenderThreshold = 0   # render and composite on the ranks, where the data is
view.OrientationAxesVisibility = 1
pipeline = []   # the sources the user made, oldest first; each filter is applied to the last
# What the view shows now, per control. trame calls every listener once when it starts serving, with the values
# set below: a value already shown is not applied again (a restored state keeps its colours and time).
shown = {}


def data_files():
    """Files under the data directory, relative, hidden ones left out, numbered series as one ``stem*ext``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root.path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        series = collections.defaultdict(list)
        for name in sorted(filenames):
            m = SERIES_MEMBER.match(name)
            if not name.startswith("."):
                series[(m["stem"], m["ext"]) if m else (name, None)].append(name)
        for (stem, ext), names in sorted(series.items()):
            entry = f"{stem}*{ext}" if ext is not None and len(names) > 1 else None
            for name in [entry] if entry else names:
                found.append(os.path.relpath(os.path.join(dirpath, name), root.path))
        if len(found) >= MAX_FILES:
            return found[:MAX_FILES]
    return found


def series_files(entry):
    """The files of a listed entry, each held inside the data directory: one file, or a series in order."""
    if "*" not in entry:
        return [root.resolve(entry)]
    folder, pattern = os.path.split(entry)
    stem, ext = pattern.split("*", 1)
    directory = root.resolve(folder or ".")
    members = []
    for name in os.listdir(directory):
        m = SERIES_MEMBER.match(name)
        if m and m["stem"] == stem and m["ext"] == ext:
            members.append((int(m["number"]), root.resolve(os.path.join(folder, name))))
    return [path for _, path in sorted(members)]


def fields_of(source):
    info = source.GetDataInformation()
    fields = [SOLID]
    for prefix, arrays in (("POINTS", source.PointData), ("CELLS", source.CellData)):
        fields += [f"{prefix}:{name}" for name in arrays.keys()]
    return fields if info is not None else [SOLID]


def refresh():
    """The state the page shows, from ParaView's: pipeline, fields, time steps; then a new image."""
    names = {proxy: name for (name, _), proxy in simple.GetSources().items()}
    state.pipeline = [names.get(source, "?") for source in pipeline]
    state.fields = fields_of(pipeline[-1]) if pipeline else [SOLID]
    times = list(simple.GetTimeKeeper().TimestepValues or [])
    state.time_count = len(times)
    ctrl.view_update()


def show(source):
    for earlier in pipeline:
        simple.Hide(earlier, view)
    pipeline.append(source)
    shown.pop("colour", None)   # a new representation: no colouring applied to it yet
    simple.Show(source, view)
    simple.SetActiveSource(source)
    view.ResetCamera()
    refresh()


@state.change("file")
def open_file(file, **kwargs):
    if not file or shown.get("file") == file:
        return
    shown["file"] = file
    try:
        paths = series_files(file)
    except (OutsideDataRoot, OSError):
        state.message = f"{file} is not a file inside the data directory"
        return
    reader = simple.OpenDataFile(paths if len(paths) > 1 else paths[0]) if paths else None
    if reader is None:
        state.message = f"ParaView has no reader for {file}"
        return
    for source in reversed(pipeline):
        simple.Delete(source)
    pipeline.clear()
    simple.GetAnimationScene().UpdateAnimationUsingDataTimeSteps()
    state.message = f"opened {file}"
    state.time_index = 0
    shown.pop("time", None)
    show(reader)


def add_filter(kind):
    if not pipeline:
        state.message = "open a file first"
        return
    parent = pipeline[-1]
    made = getattr(simple, kind)(Input=parent)
    if kind in ("Slice", "Clip"):
        # Through the data's centre, facing the camera's first look (down z): a cut that shows whatever the data is.
        bounds = parent.GetDataInformation().GetBounds()
        plane = made.SliceType if kind == "Slice" else made.ClipType
        plane.Origin = [(bounds[i] + bounds[i + 1]) / 2 for i in (0, 2, 4)]
        plane.Normal = [0, 0, 1]
    if kind == "Contour":
        arrays = list(parent.PointData.keys())
        if not arrays:
            simple.Delete(made)
            state.message = "a Contour needs a point field"
            return
        low, high = parent.PointData[arrays[0]].GetRange()
        made.ContourBy = ["POINTS", arrays[0]]
        made.Isosurfaces = [(low + high) / 2]
    state.message = f"added a {kind}"
    show(made)


ctrl.add_slice = lambda: add_filter("Slice")
ctrl.add_contour = lambda: add_filter("Contour")
ctrl.add_clip = lambda: add_filter("Clip")


@state.change("color_by", "color_map")
def colour(color_by, color_map, **kwargs):
    if not pipeline or shown.get("colour") == (color_by, color_map):
        return
    shown["colour"] = (color_by, color_map)
    rep = simple.GetDisplayProperties(pipeline[-1], view)
    if not color_by or color_by == SOLID:
        if rep.LookupTable:
            rep.SetScalarBarVisibility(view, False)
        simple.ColorBy(rep, None)
    else:
        association, name = color_by.split(":", 1)
        simple.ColorBy(rep, (association, name))
        rep.RescaleTransferFunctionToDataRange(True, False)
        lut = simple.GetColorTransferFunction(name)
        lut.ApplyPreset(color_map or COLOR_MAPS[0], True)
        rep.SetScalarBarVisibility(view, True)
    ctrl.view_update()


@state.change("time_index")
def step_time(time_index, **kwargs):
    times = list(simple.GetTimeKeeper().TimestepValues or [])
    if not times:
        return
    index = max(0, min(int(time_index or 0), len(times) - 1))
    if shown.get("time") == index:
        return
    shown["time"] = index
    simple.GetAnimationScene().AnimationTime = times[index]
    view.ViewTime = times[index]
    state.time_value = times[index]
    ctrl.view_update()


def reset_camera():
    view.ResetCamera()
    ctrl.view_update()


def screenshot():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "screenshot.png")
        simple.SaveScreenshot(path, view, ImageResolution=[800, 600])
        with open(path, "rb") as f:
            state.screenshot = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    state.message = "screenshot taken"


ctrl.reset_camera = reset_camera
ctrl.screenshot = screenshot

state.trame__title = "ParaView (trame)"
state.files = data_files()
state.file = None
state.fields = [SOLID]
state.color_by = SOLID
state.color_maps = list(COLOR_MAPS)
state.color_map = COLOR_MAPS[0]
state.time_index = 0
state.time_count = 0
state.time_value = 0
state.pipeline = []
state.message = ""
state.screenshot = ""

with SinglePageLayout(server) as layout:
    layout.title.set_text("ParaView")
    with layout.toolbar:
        v3.VSpacer()
        v3.VSelect(v_model=("file",), items=("files",), label="Open a file", density="compact",
                   hide_details=True, style="max-width: 240px", classes="mx-1", id="pvhpc-file")
        v3.VBtn("Slice", click=ctrl.add_slice, id="pvhpc-slice", classes="mx-1")
        v3.VBtn("Contour", click=ctrl.add_contour, id="pvhpc-contour", classes="mx-1")
        v3.VBtn("Clip", click=ctrl.add_clip, id="pvhpc-clip", classes="mx-1")
        v3.VSelect(v_model=("color_by",), items=("fields",), label="Colour by", density="compact",
                   hide_details=True, style="max-width: 200px", classes="mx-1", id="pvhpc-color-by")
        v3.VSelect(v_model=("color_map",), items=("color_maps",), label="Colour map", density="compact",
                   hide_details=True, style="max-width: 200px", classes="mx-1", id="pvhpc-color-map")
        v3.VSlider(v_model_number=("time_index",), min=0, max=("Math.max(time_count - 1, 0)",), step=1,
                   disabled=("time_count < 2",), hide_details=True, style="max-width: 160px", classes="mx-1",
                   id="pvhpc-time")
        html.Span("t = {{ time_value }} ({{ time_index + 1 }}/{{ time_count }})", id="pvhpc-time-label")
        v3.VBtn("Next step", click="time_index = Math.min(time_index + 1, Math.max(time_count - 1, 0))",
                disabled=("time_count < 2",), id="pvhpc-next-time", classes="mx-1")
        v3.VBtn("Reset camera", click=ctrl.reset_camera, id="pvhpc-reset-camera", classes="mx-1")
        v3.VBtn("Screenshot", click=ctrl.screenshot, id="pvhpc-screenshot", classes="mx-1")
        html.A("download", v_if=("screenshot",), href=("screenshot",), download="paraview.png",
               id="pvhpc-screenshot-link")
    with layout.content:
        with v3.VContainer(fluid=True, classes="pa-0 fill-height"):
            # A fixed height: the picture keeps its size whatever the toolbar and footer show.
            with html.Div(id="pvhpc-view", style="width: 100%; height: 75vh;"):
                remote = pv_widgets.VtkRemoteView(view, interactive_ratio=1)
            ctrl.view_update = remote.update
    with layout.footer:
        html.Span("{{ message }}", id="pvhpc-message")
        v3.VSpacer()
        html.Span("{{ pipeline.join(' > ') }}", id="pvhpc-pipeline")

def chain_to(source):
    """``source`` and the sources it is made from, oldest first (a filter's first input at each step)."""
    chain = [source]
    while chain[0].GetProperty("Input") is not None:
        inputs = chain[0].Input
        parent = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        if parent is None:
            break
        chain.insert(0, parent)
    return chain


def take_up_restored(path):
    """The page's controls as the loaded state left the view: its pipeline (the chain to the last source shown),
    colouring and time step."""
    from paraview import servermanager

    visible = [s for s in simple.GetSources().values()
               if (rep := servermanager.GetRepresentation(s, view)) is not None and rep.Visibility]
    if visible:
        pipeline.extend(chain_to(visible[-1]))
        simple.SetActiveSource(pipeline[-1])
        rep = simple.GetDisplayProperties(pipeline[-1], view)
        association, name = (list(rep.ColorArrayName) + ["", ""])[:2]
        if name:
            state.color_by = f"{association}:{name}"
    times = list(simple.GetTimeKeeper().TimestepValues or [])
    if times and view.ViewTime in times:
        state.time_index = times.index(view.ViewTime)
        state.time_value = view.ViewTime
    shown.update(colour=(state.color_by, state.color_map), time=state.time_index)
    state.message = f"started from the saved state {os.path.basename(path)}"
    refresh()


if restored_from:
    take_up_restored(restored_from)
elif args.load:
    state.file = args.load
    open_file(args.load)

if __name__ == "__main__":
    server.start()
