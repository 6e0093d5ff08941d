"""Run a Python server script with the session's secret and connect id in its own ``sys.argv``, never on its
command line.

    INTERPRETER argv_secret.py SCRIPT.py ARG... (an ARG holds ${secret} or ${connect_id})

pvhpc's supervisor (supervisor.py) runs a command this way when it passes ``${secret}`` (the ParaView Visualizer
takes its secret only from ``--authKey``) or ``${connect_id}`` (pvhpc's own server attached to a parallel
session's pvserver). The command line every user of the node sees in ``ps`` and /proc/<pid>/cmdline holds the
placeholders; the secret comes from PVHPC_SECRET, the connect id from PVHPC_CONNECT_ID, each removed from the
environment once taken so the server's own children do not inherit it (a script that takes its secret from
PVHPC_SECRET itself, and names no ``${secret}``, finds it there). The ARGs are the launcher's templates
(supervisor.expand: ``$$`` is a ``$`` of their own), filled in here once. The script runs as ``__main__``
(runpy), with wslink's exit hooks installed (wslink_exits.py), once: a script that installs them itself
(pvhpc's own server) finds them in place. When it returns, the process leaves at once with os._exit:
pvpython can crash (SIGSEGV) while tearing ParaView down, which would read as a failed session.
Standard library only (plus wslink, if the script uses it); it imports nothing from pvhpc.
"""

import os
import runpy
import sys
import traceback

import contained      # beside this file
import supervisor     # beside this file
import pvstate        # beside this file
import quickview_calls   # beside this file
import share_gate   # beside this file
import wslink_exits   # beside this file
import server_gate      # beside this file

SECRET_ENV, CONNECT_ID_ENV = "PVHPC_SECRET", "PVHPC_CONNECT_ID"


def leave(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _installed(*args, **kwargs):
    return True


def main():
    if len(sys.argv) < 2:
        print("usage: INTERPRETER argv_secret.py SCRIPT.py ARG...", file=sys.stderr)
        leave(2)
    script, templates = sys.argv[1], sys.argv[2:]
    named = {name for arg in templates for name in supervisor.placeholders(arg)}
    values = {}
    if "secret" in named:
        values["secret"] = os.environ.pop(SECRET_ENV, "")
        if not values["secret"]:
            print(f"argv_secret: no secret in {SECRET_ENV} (an empty secret is refused)", file=sys.stderr)
            leave(2)
    connect_id = os.environ.pop(CONNECT_ID_ENV, "")
    if "connect_id" in named:
        if not connect_id.isdigit():
            print(f"argv_secret: no connect id in {CONNECT_ID_ENV}", file=sys.stderr)
            leave(2)
        values["connect_id"] = connect_id
    wslink_exits.install()
    # Sharees: their keys, view-only calls, cut off when pvhpc says their grant is revoked.
    share_gate.install()
    # The ParaView state saved when the job is ended (walltime, cancel), a saved one loaded at start.
    pvstate.install()
    # Once in this process: the script imports these same modules, and a second install would hook wslink's
    # exits twice and load the state twice.
    wslink_exits.install = pvstate.install = _installed
    if contained.ROOTS_ENV in os.environ:
        # A ParaViewWeb server (the Visualizer) builds ParaView's own file listing and proxy manager, whose path
        # check is a string prefix: give it pvhpc's, which keep its clients inside the session's data roots.
        try:
            contained.install(contained.roots_from_environment(os.getcwd()))
        except ImportError:
            pass   # not a ParaView server: there is no ParaView protocol to hold in
    # pvhpc's quick view draws and turns a session with calls the Visualizer's server lacks: it gets them.
    quickview_calls.install()
    if connect_id.isdigit():
        # A parallel session: the pvserver ranks take only a client with their connect id, and a server such as
        # the Visualizer has no option for one; ParaView's own configuration carries it to its Connect().
        try:
            from paraview.modules.vtkRemotingCore import vtkRemotingCoreConfiguration
        except ImportError:
            pass
        else:
            vtkRemotingCoreConfiguration.GetInstance().SetConnectID(int(connect_id))
    # The job's Xvfb may still be starting (server_gate.py): the script may use the display from its first line.
    if not server_gate.wait():
        print("argv_secret: the session's Xvfb exited before it accepted clients", file=sys.stderr)
        leave(1)
    sys.argv = [script] + [supervisor.expand(arg, values) for arg in templates]
    # As if the script had been run itself: its own directory first on the import path.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    leave(code)


if __name__ == "__main__":
    main()
