"""pvhpc's ParaViewWeb server application, run by ``pvpython`` inside a session's Slurm job.

This file runs on compute nodes under ParaView's Python: it imports only the
standard library, ParaView and wslink, never pvhpc itself.

It serves the standard ParaView web protocols (view port, image delivery, mouse
interaction, proxy manager, file listing of one data directory) and pvhpc's quick view's own mouse call
(quickview.py: the events and the picture they made, rendered once), with every path a
client names held inside that directory (dataroots.py: real paths, not prefixes). The secret
comes from ``--authKey`` or, so that it does not show in ``ps``, from the
environment variable PVHPC_SECRET; there is no default secret. With ``--port 0``
the kernel picks a free port, so two sessions on one node never race for one.
Once the server listens it prints ``pvhpc-server: ready port=N`` and, with
``--ready-file``, writes the port there (atomically) for the job script. Just before, it prints when each step
of its start happened (``pvhpc-timing: server``, epoch seconds), for bench/node_startup.py. Where the job's Xvfb
starts beside it, it waits for the display (server_gate.py) only once ParaView is imported.
"""

import time

MOMENTS = {"started": time.time()}   # the interpreter's own start is behind this already

import argparse
import os
import sys

import contained                                  # beside this file too
import pvstate
import quickview
import share_gate   # beside this file
import wslink_exits
import server_gate
from dataroots import DataRoot, OutsideDataRoot   # beside this file: the job runs it by path

READY_LINE = "pvhpc-server: ready port={port}"
TIMING_LINE = "pvhpc-timing: server {moments}"


def parse_args(argv=None):
    from wslink import server

    parser = argparse.ArgumentParser(
        prog="pvhpc_pvweb_server",
        description="ParaViewWeb server for a pvhpc session",
    )
    server.add_arguments(parser)
    # wslink's own default secret is public knowledge; refuse to run without one given.
    parser.set_defaults(authKey=None)
    parser.add_argument("--data", dest="data", default=None, help="directory whose files clients may list and open")
    parser.add_argument("--ready-file", default=None, help="write the listening port to this file once ready")
    parser.add_argument("--load", default=None, help="file (relative to --data) to open at start")
    # A parallel session: the data and the rendering live in a separate MPI pvserver (pvhpc/node/parallel.py).
    parser.add_argument("--ds-host", default=None, help="attach to the pvserver listening on this host ...")
    parser.add_argument("--ds-port", type=int, default=0, help="... and port before serving")
    parser.add_argument("--connect-id", type=int, default=0, help="the pvserver's --connect-id")
    parser.add_argument("--ranks", type=int, default=0, help="the pvserver's MPI ranks: refuse to serve with fewer")
    args = parser.parse_args(argv)
    if (args.ds_host is None) != (not args.ds_port):
        parser.error("--ds-host and --ds-port go together")

    # Taken out of the environment: nothing the server starts inherits it.
    from_env = os.environ.pop("PVHPC_SECRET", None)
    secret = args.authKey if args.authKey is not None else from_env
    if not secret:
        parser.error("no secret: pass --authKey or set PVHPC_SECRET (an empty secret is refused)")
    args.authKey = secret
    if args.data is None:
        args.data = os.getcwd()
    if not os.path.isdir(args.data):
        parser.error(f"--data {args.data!r} is not an existing directory")
    args.data = os.path.realpath(args.data)
    if args.load:
        try:
            target = DataRoot(args.data).resolve(args.load)
        except OutsideDataRoot:
            target = None
        if target is None or not os.path.isfile(target):
            parser.error(f"--load {args.load!r} is not a file inside --data")
        args.load = target
    return args


def make_protocol(args):
    from paraview.web import pv_wslink
    from paraview.web import protocols as pv_protocols

    root = DataRoot(args.data, "Home")
    contained.install(contained.roots_from_environment(root.path))
    FileListing, ProxyManager = pv_protocols.ParaViewWebFileListing, pv_protocols.ParaViewWebProxyManager

    class SessionServer(pv_wslink.PVServerProtocol):
        def initialize(self):
            self.registerVtkWebProtocol(
                FileListing(root.path, root.label, r"^\.|~$|^\$", r"[0-9]+\.[0-9]+\.|[0-9]+\.")
            )
            self.registerVtkWebProtocol(
                ProxyManager(baseDir=root.path, fileToLoad=args.load, allowUnconfiguredReaders=True)
            )
            self.registerVtkWebProtocol(pv_protocols.ParaViewWebColorManager())
            mouse, renders = pv_protocols.ParaViewWebMouseHandler(), quickview.RenderCount()
            self.registerVtkWebProtocol(mouse)
            self.registerVtkWebProtocol(pv_protocols.ParaViewWebViewPort())
            self.registerVtkWebProtocol(quickview.ImageDelivery(renders))
            # The quick view's mouse: the events and the picture they make in one call, rendered once.
            self.registerVtkWebProtocol(quickview.QuickViewInteraction(mouse, renders))
            self.registerVtkWebProtocol(pv_protocols.ParaViewWebPublishImageDelivery(decode=False))
            self.registerVtkWebProtocol(pv_protocols.ParaViewWebViewPortGeometryDelivery())
            self.registerVtkWebProtocol(pv_protocols.ParaViewWebTimeHandler())
            self.updateSecret(args.authKey)

        def port_callback(self, port):
            # Called by wslink once the socket listens: the one moment "ready" is true.
            if args.ready_file:
                tmp = args.ready_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(f"{port}\n")
                os.replace(tmp, args.ready_file)
            MOMENTS["listening"] = time.time()
            print(TIMING_LINE.format(moments=" ".join(f"{k}={v:.6f}" for k, v in MOMENTS.items())), flush=True)
            print(READY_LINE.format(port=port), flush=True)

    return SessionServer


def attach_pvserver(args):
    """Connect to the session's MPI pvserver; only once every rank is in is the session worth serving.

    ParaView's Connect returns once the server's root rank has accepted; the ranks are one MPI job, so the
    root only listens once all of them have started, and the connection reports how many there are."""
    from paraview import simple
    from paraview.modules.vtkRemotingCore import vtkRemotingCoreConfiguration

    if args.connect_id:
        vtkRemotingCoreConfiguration.GetInstance().SetConnectID(args.connect_id)
    connection = simple.Connect(args.ds_host, args.ds_port)
    if connection is None:
        print(f"pvhpc-server: could not connect to the ParaView server at {args.ds_host}:{args.ds_port}",
              file=sys.stderr)
        leave(1)
    ranks = connection.GetNumberOfDataPartitions()
    if args.ranks and ranks != args.ranks:
        print(f"pvhpc-server: the ParaView server at {args.ds_host}:{args.ds_port} has {ranks} ranks, "
              f"not {args.ranks}", file=sys.stderr)
        leave(1)
    # Render where the data is, composited across the ranks (IceT), whatever the geometry's size: the
    # web server gets images, never the distributed geometry.
    simple.GetSettingsProxy("RenderViewSettings").RemoteRenderThreshold = 0
    print(f"pvhpc-server: connected to the ParaView server at {args.ds_host}:{args.ds_port} "
          f"({ranks} ranks)", flush=True)


def leave(code):
    """Leave at once, output flushed: pvpython crashes (SIGSEGV) while it tears ParaView down at interpreter
    exit, which pvhpc would read as a failed session; nothing is left to clean up once wslink has stopped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as e:
        leave(e.code if isinstance(e.code, int) else 2)
    from wslink import server
    from paraview.web import pv_wslink  # noqa: F401  most of the start, and it needs no display yet

    MOMENTS["imported"] = time.time()
    if not server_gate.wait(moments=MOMENTS):
        print("pvhpc-server: the session's Xvfb exited before it accepted clients", file=sys.stderr)
        leave(1)
    MOMENTS["display"] = time.time()
    if args.ds_host is not None:
        attach_pvserver(args)
    # Whether it stopped because its client asked or because it was idle, for the launcher to report.
    wslink_exits.install()
    # Sharees: their keys, view-only calls, cut off when pvhpc says their grant is revoked.
    share_gate.install()
    # The state saved when the job is ended (walltime, cancel, idle), a saved one loaded before serving.
    pvstate.install()
    server.start_webserver(options=args, protocol=make_protocol(args))
    leave(0)


if __name__ == "__main__":
    main()
