"""Run a Python server script with the session's secret in its own ``sys.argv``, never on its command line.

    INTERPRETER argv_secret.py SCRIPT.py ARG... (an ARG holds ${secret})

pvhpc's launcher (launcher.py) runs a command this way when it passes ``${secret}`` (the ParaView Visualizer
takes its secret only from ``--authKey``). The command line every user of the node sees in ``ps`` and
/proc/<pid>/cmdline holds the placeholder; the secret comes from PVHPC_SECRET, which is then removed from the
environment so the server's own children do not inherit it. The script runs as ``__main__`` (runpy), with
wslink's exit hooks installed (wslink_exits.py). When it returns, the process leaves at once with os._exit:
pvpython can crash (SIGSEGV) while tearing ParaView down, which would read as a failed session.
Standard library only (plus wslink, if the script uses it); it imports nothing from pvhpc.
"""

import os
import runpy
import sys
import traceback

import contained      # beside this file
import pvstate        # beside this file
import wslink_exits   # beside this file

PLACEHOLDER = "${secret}"


def leave(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main():
    if len(sys.argv) < 2:
        print("usage: INTERPRETER argv_secret.py SCRIPT.py ARG...", file=sys.stderr)
        leave(2)
    secret = os.environ.pop("PVHPC_SECRET", "")
    if not secret:
        print("argv_secret: no secret in PVHPC_SECRET (an empty secret is refused)", file=sys.stderr)
        leave(2)
    script = sys.argv[1]
    wslink_exits.install()
    # The ParaView state saved when the job is ended (walltime, cancel), a saved one loaded at start.
    pvstate.install()
    if contained.ROOTS_ENV in os.environ:
        # A ParaViewWeb server (the Visualizer) builds ParaView's own file listing and proxy manager, whose path
        # check is a string prefix: give it pvhpc's, which keep its clients inside the session's data roots.
        try:
            contained.install(contained.roots_from_environment(os.getcwd()))
        except ImportError:
            pass   # not a ParaView server: there is no ParaView protocol to hold in
    connect_id = os.environ.pop("PVHPC_CONNECT_ID", "")
    if connect_id:
        # A parallel session: the pvserver ranks take only a client with their connect id, and a server such as
        # the Visualizer has no option for one; ParaView's own configuration carries it to its Connect().
        try:
            from paraview.modules.vtkRemotingCore import vtkRemotingCoreConfiguration
        except ImportError:
            pass
        else:
            vtkRemotingCoreConfiguration.GetInstance().SetConnectID(int(connect_id))
    sys.argv = [script] + [arg.replace(PLACEHOLDER, secret) for arg in sys.argv[2:]]
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
