"""The quick view's calls in any ParaViewWeb server of this process that lacks them (the Visualizer's).

Imported by argv_secret.py under pvpython: ParaView and wslink 1.x only, never pvhpc.

pvhpc's quick view (static/viewer.js) draws a session with ``viewport.image.render`` and moves its camera with
``pvhpc.viewport.interact`` (quickview.py). pvhpc's own server registers both; the ParaView Visualizer's server,
run unchanged, registers neither (its client takes its pictures from ``viewport.image.push``), so the quick view of
a Visualizer session failed with "Unregistered method called", for its owner and for a sharee. Its image push
cannot stand in: it publishes each picture to every client subscribed and lets a client set the view's size,
quality and observers for all of them. So the server gets the quick view's own calls, added once its class has
registered its protocols, with the mouse handler it registered (a drag in the quick view holds the same buttons
as one in the Visualizer). A server that already has them (pvhpc's) is left as it is.
"""

METHODS = ("viewport.image.render", "pvhpc.viewport.interact")


def missing(protocols):
    """Which of the quick view's calls none of ``protocols`` exports (wslink's register marks each method with
    the names it answers, ``_wslinkuris``)."""
    exported = set()
    for protocol in protocols:
        for name in dir(type(protocol)):
            for uri in getattr(getattr(type(protocol), name, None), "_wslinkuris", ()) or ():
                exported.add(uri.get("uri") if isinstance(uri, dict) else uri)
    return [m for m in METHODS if m not in exported]


def install():
    """Hook wslink's ServerProtocol so that a ParaViewWeb server built afterwards answers the quick view's calls.
    Returns False where there is nothing to hook (not pvpython, or not wslink 1.x)."""
    try:
        from paraview.web import protocols as pv_protocols
        from wslink import websocket

        # Now, while this file's directory leads the import path: the script run next puts its own first.
        import quickview   # beside this file
    except ImportError:
        return False
    server_class = getattr(websocket, "ServerProtocol", None)
    if server_class is None or getattr(server_class, "_pvhpc_quickview_calls", False):
        return server_class is not None
    original = server_class.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        protocols = list(self.getLinkProtocols())
        mice = [p for p in protocols if isinstance(p, pv_protocols.ParaViewWebMouseHandler)]
        lacking = missing(protocols)
        if not lacking or not any(isinstance(p, pv_protocols.ParaViewWebProtocol) for p in protocols):
            return   # pvhpc's own server, or not a ParaViewWeb server at all
        renders = quickview.RenderCount()
        if "viewport.image.render" in lacking:
            self.registerLinkProtocol(quickview.PushSafeImageDelivery(renders))
        if "pvhpc.viewport.interact" in lacking:
            mouse = mice[0] if mice else pv_protocols.ParaViewWebMouseHandler()
            if not mice:
                self.registerLinkProtocol(mouse)
            self.registerLinkProtocol(quickview.QuickViewInteraction(mouse, renders))

    server_class.__init__ = __init__
    server_class._pvhpc_quickview_calls = True
    return True
