"""The quick view's mouse: one call applies the mouse events and answers with the picture they made.

Imported by pvweb_server.py under pvpython (ParaView and wslink only, never pvhpc).

ParaViewWeb's own path costs two renders a frame and usually shows the frame before: ``viewport.mouse.interaction``
renders (the interactor's camera manipulators ask for it), then ``viewport.image.render`` renders again and hands
the picture to ParaView's encoder threads, answering with whatever JPEG they last finished (``stale`` while the new
one is still being encoded: during a drag, nearly every answer; ParaView waits for its encoder only for a view's
very first picture). ``pvhpc.viewport.interact`` instead moves the camera with the interactor's renders held back
(the view's EnableRenderOnInteraction), renders once and encodes the picture itself (the same vtkJPEGWriter
ParaView's encoder uses) before it answers. It shares ParaView's mouse handler (buttons held, the
``UseInteractiveRenderingForScreenshots`` switch of a drag) and tells ParaView's image cache the view changed.

Its name does not start with ``viewport.image.``: input_idle.py counts it as user input, as it is.
"""

import base64
import time

from paraview.web import protocols as pv_protocols
from vtkmodules.vtkIOImage import vtkJPEGWriter
from wslink import register as exportRpc

METHOD = "pvhpc.viewport.interact"
JPEG_START = b"\xff\xd8"   # every JPEG's first bytes; base64 text never starts so


class RenderCount:
    """Renders of each view's render window, counted where they happen (its EndEvent): what a client's frames cost."""

    def __init__(self):
        self.windows = {}

    def of(self, view):
        window = view.GetRenderWindow()
        key = view.GetGlobalIDAsString()
        if key not in self.windows:
            self.windows[key] = 0

            def count(*_):
                self.windows[key] += 1
            window.AddObserver("EndEvent", count)
        return self.windows[key]


class ImageDelivery(pv_protocols.ParaViewWebViewPortImageDelivery):
    """ParaView's ``viewport.image.render``, its answer also saying how many renders the view has made."""

    def __init__(self, renders, **kwargs):
        super().__init__(**kwargs)
        self.renders = renders

    @exportRpc("viewport.image.render")
    def stillRender(self, options):
        reply = super().stillRender(options)
        reply["renders"] = self.renders.of(self.getView(options["view"]).SMProxy)
        return reply


def sized_view(protocol, options):
    """The view ``options`` name (``view``, -1: the active one), resized to ``options["size"]`` where that is
    another size: (the view, the size asked for, whether it was resized)."""
    view = protocol.getView(options.get("view", -1))
    size = list(options.get("size") or view.ViewSize[0:2])
    resized = size != list(view.ViewSize[0:2]) and size != [0, 0]
    if resized:
        view.ViewSize = size
    return view, size, resized


class QuickViewInteraction(pv_protocols.ParaViewWebProtocol):
    """``pvhpc.viewport.interact(events, options)``: ``events`` are ``viewport.mouse.interaction`` events (the
    latest of a drag, or a whole gesture), applied in order by ``mouse`` (ParaView's mouse handler);
    ``options`` those of ``viewport.image.render`` (view, size, quality, mtime). The answer is that of
    ``viewport.image.render`` for the picture after the events, never the one before."""

    def __init__(self, mouse, renders, **kwargs):
        super().__init__(**kwargs)
        self.mouse = mouse
        self.renders = renders
        self.mtime = 0
        self.writer = vtkJPEGWriter()
        self.writer.WriteToMemoryOn()

    @exportRpc(METHOD)
    def interact(self, events, options):
        begin = time.time()
        view, size, resized = sized_view(self, options)
        proxy = view.SMProxy
        changed = self._apply(proxy, events) or resized
        reply = {"image": None, "stale": False, "mtime": self.mtime, "size": view.ViewSize[0:2],
                 "format": "jpeg;base64", "global_id": view.GetGlobalIDAsString(),
                 "localTime": options.get("localTime", 0)}
        if changed or options.get("mtime") != self.mtime:
            reply["image"], reply["mtime"] = self._picture(proxy, options.get("quality", 100))
            reply["size"] = view.ViewSize[0:2]
        reply["workTime"] = int(round((time.time() - begin) * 1000))
        reply["renders"] = self.renders.of(proxy)
        return reply

    def _picture(self, proxy, quality):
        """(base64 JPEG, mtime) of the view rendered once now, encoded here rather than by ParaView's encoder
        threads, whose answer would be the picture before. ParaView's image cache is told the view changed, so
        ``viewport.image.render`` renders afresh too; the mtime is the encoded array's, from the same clock as
        ParaView's own answers, so the two never mistake each other's pictures for the same one."""
        image = proxy.CaptureWindow(1)
        try:
            self.writer.SetInputData(image)
            self.writer.SetQuality(int(quality))
            self.writer.Write()
            self.writer.SetInputData(None)
        finally:
            image.UnRegister(None)   # the caller owns the capture; Python's reference is a second one
        data = self.writer.GetResult()
        data.Modified()   # the writer refills one array: its time, taken anew, says which picture this is
        self.mtime = data.GetMTime()
        self.getApplication().InvalidateCache(proxy)
        return base64.b64encode(memoryview(data)).decode("ascii"), self.mtime

    def _apply(self, proxy, events):
        """Apply the events with the renders they ask for held back (the interactor renders the view through
        ParaView's interactor helper, which the view's EnableRenderOnInteraction switches off): the answer's
        render is the only one."""
        if not events:
            return False
        switch = proxy.GetProperty("EnableRenderOnInteraction")
        held = switch.GetElement(0) if switch is not None else None
        if switch is not None:
            switch.SetElement(0, 0)
        changed = False
        try:
            for event in events:
                changed = bool(self.mouse.mouseInteraction(event)) or changed
        finally:
            if switch is not None:
                switch.SetElement(0, held)
        return changed


class PushSafeImageDelivery(ImageDelivery):
    """``viewport.image.render`` for a server whose other clients take their pictures from ParaView's image push
    (the Visualizer's, ``decode=False``): ParaView's image cache then holds raw JPEG, which its
    StillRenderToString then hands back as bytes, cut at the first NUL (no JSON: "Method result cannot be
    serialized"). So this asks for the picture as the push does (StillRenderToBuffer), whole, and hands it on as
    base64 text, as the quick view wants it. Added by quickview_calls.py."""

    @exportRpc("viewport.image.render")
    def stillRender(self, options):
        begin = time.time()
        view, size, resize = sized_view(self, options)
        proxy = view.SMProxy
        app = self.getApplication()
        mtime, quality = options.get("mtime", 0), options.get("quality", 100)
        if not mtime:
            app.InvalidateCache(proxy)
        picture = app.StillRenderToBuffer(proxy, mtime, quality)
        for _ in range(10):   # the render sets the window's size: until it is the one asked for
            if not resize or list(app.GetLastStillRenderImageSize()) == size:
                break
            app.InvalidateCache(proxy)
            picture = app.StillRenderToBuffer(proxy, mtime, quality)
        # The array holds the picture as base64 text, or as raw JPEG once the application's image encoding was
        # set to none (the Visualizer's client asks for that); None where nothing changed since ``mtime``.
        data = memoryview(picture).tobytes() if picture is not None else b""
        image = base64.b64encode(data).decode("ascii") if data.startswith(JPEG_START) else data.decode("ascii")
        return {"image": image, "stale": app.GetHasImagesBeingProcessed(proxy),
                "mtime": app.GetLastStillRenderToMTime(), "size": view.ViewSize[0:2], "format": "jpeg;base64",
                "global_id": view.GetGlobalIDAsString(), "localTime": options.get("localTime", 0),
                "workTime": int(round((time.time() - begin) * 1000)), "renders": self.renders.of(proxy)}
