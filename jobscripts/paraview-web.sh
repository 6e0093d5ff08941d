#!/bin/bash
# pvhpc job script: one session's server (an application of the site config), on the node Slurm picked.
#
# pvhpc renders this template: each double-braced placeholder gets a value from the
# validated site config or session request, already shell-quoted, so no value is
# ever interpreted by the shell. Scheduler options (partition, GPUs, walltime,
# job name) are passed to sbatch as arguments, never as #SBATCH lines.
#
# What it does: load the session's environment modules (Lmod or Environment Modules), start a private X server when the application renders through Xvfb,
# then hand over to pvhpc's supervisor (pvhpc/node/supervisor.py), which runs the
# application's command (a JSON list: never through a shell), sees it become ready,
# tells pvhpc the node and port, and says how it ended. Everything is cleaned up
# when the job ends or is cancelled.

set -u
# When the job started (bash 5's clock, no process started for it; empty on older bash): bench/node_startup.py.
job_start=${EPOCHREALTIME:-}
unset DISPLAY
# What the job writes (its log, the server's files, X cookies) is its user's alone: the node has other users.
umask 077

HELPER_PYTHON={{ helper_python }}
JOB_HELPER={{ job_helper }}
LAUNCHER={{ launcher }}
# Read by the launcher from its environment (and kept from the server's): its command line stays short in ps.
export PVHPC_LAUNCH_COMMAND={{ command }}
export PVHPC_LAUNCH_READY={{ ready }}
export PVHPC_LISTEN={{ server_listen }}
# Where the launcher and the job helper report: the URLs name the session, so they too travel in the environment.
export PVHPC_REPORT_URL={{ report_url }}
RENDER_MODE={{ render_mode }}
START_TIMEOUT={{ start_timeout }}
LOG_FILE={{ log_file }}
VENV={{ venv }}
export PVHPC_SECRET={{ secret }}
export PVHPC_REPORT_TOKEN={{ report_token }}
export PYTHONPATH={{ pythonpath }}${PYTHONPATH:+:$PYTHONPATH}
# For the server (pvhpc/node/pvstate.py): save its ParaView state here when Slurm ends the job; start from one.
export PVHPC_STATE_SAVE={{ state_save }} PVHPC_STATE_LOAD={{ state_load }} PVHPC_STATE_ROOTS={{ state_roots }}
# "1" in a continued session's successor job: its server starts once the job it takes over from has saved its state.
CONTINUES={{ continues }}
# What the session's clients may list and open, held by pvhpc/node/contained.py in every ParaViewWeb server.
export PVHPC_DATA_ROOTS={{ data_roots }}
# For the server (pvhpc/node/input_idle.py): stop after this long without user input (SECONDS:WARNING; empty: never).
export PVHPC_INPUT_IDLE={{ input_idle }}
# For wslink servers (pvhpc/node/wslink_exits.py): stop after this long with no client connected, whatever
# --timeout their command gave wslink (0: never). pvhpc's rule, so that a dropped view finds its server again.
export PVHPC_CLIENT_IDLE={{ idle_timeout }}
# For the launcher (pvhpc/node/watchdog.py): ask pvhpc whether the session is live every INTERVAL s, and stop the
# server when it has ended or pvhpc has not answered for GRACE s (INTERVAL:GRACE; empty: never ask).
export PVHPC_WATCHDOG={{ watchdog }}
# Environment modules, apart by spaces: the partition's, the application's, its version's (pvhpc/jobs/modules.py);
# the module system's init scripts to try and the modulefile directories to add, apart by ':'.
MODULES={{ modules }}
MODULES_INIT={{ modules_init }}
MODULE_PATHS={{ module_paths }}

if [ -n "$LOG_FILE" ]; then
    # The job's own log, where only its user can read it.
    mkdir -p -m 700 "${LOG_FILE%/*}"
    exec >>"$LOG_FILE" 2>&1
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/pvhpc-job.XXXXXXXX")   # mode 0700, as mktemp makes directories
child_pids=()

cleanup() {
    trap - EXIT TERM INT HUP
    for pid in "${child_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${child_pids[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || continue 2   # gone: its pid may be another process's by now
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

fail() {
    echo "pvhpc: $1" >&2
    "$HELPER_PYTHON" "$JOB_HELPER" report --event failed --reason "$1" --give-up-after 30
    exit 1
}

# The modules first, before anything else runs. A job's bash (sbatch --export=NONE, no login) has no module
# command: source the module system's init (staff's runtime.modules_init, else the usual places) until one defines
# it. Each name is one argument of module load; a module that does not load ends the session with the module
# system's own words. set -u is off meanwhile: module systems' init scripts read variables they may not find.
if [ -n "$MODULES" ]; then
    set +u
    read -r -a module_names <<<"$MODULES"
    IFS=: read -r -a module_inits <<<"$MODULES_INIT"
    IFS=: read -r -a module_paths <<<"$MODULE_PATHS"
    if ! type module >/dev/null 2>&1; then
        for init in "${module_inits[@]}"; do
            [ -n "$init" ] && [ -r "$init" ] || continue
            . "$init" >/dev/null 2>&1
            type module >/dev/null 2>&1 && break
        done
    fi
    type module >/dev/null 2>&1 || fail "no module system on $(hostname) to load ${module_names[*]} with (none of ${module_inits[*]} defines module): set runtime.modules_init to its bash init"
    if [ -n "${LMOD_CMD:-}" ]; then module_system=Lmod; else module_system="Environment Modules"; fi
    for dir in "${module_paths[@]}"; do
        [ -n "$dir" ] && module use "$dir"
    done
    for name in "${module_names[@]}"; do
        if module load "$name" 2>"$workdir/module.err"; then
            echo "pvhpc: loaded module $name ($module_system)"
            cat "$workdir/module.err"
        else
            cat "$workdir/module.err" >&2
            fail "module $name could not be loaded ($module_system on $(hostname)): $(tr -s ' \n' ' ' <"$workdir/module.err" | head -c 800)"
        fi
    done
    set -u
fi
if [ -n "$VENV" ]; then
    export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
fi

# A private display with its own cookie: other users on the node cannot attach to it. The cookie is on no command
# line (ps shows every process's to every user): xauth reads its commands from stdin, given by printf, a bash
# builtin; Xvfb (-auth) and its clients (XAUTHORITY) read the same file, private to the job.
# Display numbers are drawn at random from a wide range rather than taken lowest-free:
# a number another job has just given up may still be held by its dying X server.
# -displayfd: Xvfb writes the number into a pipe once it accepts clients, not merely once its socket exists;
# whoever waits for it blocks on that pipe (xvfb_fd).
# -noreset: without it the server resets when its first client disconnects, and ParaView opens
# the display more than once at start; a connection made during the reset fails.
spawn_xvfb() {
    local n
    for _ in {1..20}; do
        n=$((RANDOM % 20000 + 1000))
        [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ] && continue
        printf 'add :%s . %s\n' "$n" "$cookie" | xauth -q source -
        exec {xvfb_fd}< <(exec Xvfb ":$n" -displayfd 3 -auth "$XAUTHORITY" -nolisten tcp -noreset \
            -screen 0 1920x1080x24 3>&1 >"$workdir/xvfb.log" 2>&1)
        xvfb_pid=$!
        export DISPLAY=":$n"
        return 0
    done
    return 1
}

# Whether the Xvfb just spawned accepts clients (it is stopped if not).
xvfb_up() {
    local shown=
    read -r -t 20 -u "$xvfb_fd" shown
    exec {xvfb_fd}<&-
    unset xvfb_fd
    [ "$shown" = "${DISPLAY#:}" ] && return 0
    kill "$xvfb_pid" 2>/dev/null
    unset DISPLAY
    return 1
}

# Xvfb started and waited for, tried with up to 20 display numbers.
start_xvfb_waiting() {
    for _ in {1..20}; do
        spawn_xvfb || break
        if xvfb_up; then
            child_pids=("$xvfb_pid" "${child_pids[@]}")   # first: what the end of this script looks at
            return 0
        fi
    done
    fail "could not start Xvfb: $(tail -n 3 "$workdir/xvfb.log" | tr '\n' ' ')"
}

case "$RENDER_MODE" in
xvfb)
    if [ -n "${SRANDOM:-}" ]; then
        printf -v cookie '%08x%08x%08x%08x' "$SRANDOM" "$SRANDOM" "$SRANDOM" "$SRANDOM"   # bash 5.1: getrandom()
    else
        cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    fi
    export XAUTHORITY="$workdir/Xauthority"
    : >"$XAUTHORITY"
    # Not waited for here: the supervisor starts the server beside it (server_gate.py).
    spawn_xvfb || fail "could not start Xvfb: no free display number found"
    child_pids+=("$xvfb_pid")
    xvfb_spawned=${EPOCHREALTIME:-}
    ;;
egl | osmesa) ;; # offscreen builds of ParaView need no X server
*) fail "unknown render mode $RENDER_MODE" ;;
esac

# A successor job (pvhpc/sessions/continuation.py) serves nothing until the job it takes over from has saved its
# ParaView state: the job helper asks pvhpc (with this job's report token) until then, and the server starts from it.
if [ -n "$CONTINUES" ]; then
    echo "pvhpc: a successor job: waiting for the session's previous job to save its state"
    handed=$("$HELPER_PYTHON" -S "$JOB_HELPER" handover --timeout "$START_TIMEOUT") ||
        fail "no handover from the session's previous job (its log says why)"
    export PVHPC_STATE_LOAD="$handed"
    echo "pvhpc: taking over${handed:+ from the state $handed}"
fi

# The node's name read by a builtin, not by hostname(1) (a process); $HOSTNAME may be the submitter's, exported.
read -r node_name </proc/sys/kernel/hostname || node_name=$(hostname)
echo "pvhpc: starting the session's server on $node_name (job ${SLURM_JOB_ID:-?}, node ${SLURMD_NODENAME:-?}, render $RENDER_MODE)"
# The launcher reports ready, a start that failed (with the server's last lines) and the server's exit.
# A parallel session (ranks asked for) runs it through parallel.py, beside it, which first starts the MPI
# ParaView server over the job's nodes and stops every rank when the session ends.
export PVHPC_PARALLEL={{ parallel }}
parallel=()
if [ -n "$PVHPC_PARALLEL" ]; then
    parallel=("$(dirname "$LAUNCHER")/parallel.py")
else
    unset PVHPC_PARALLEL
fi
launch() {
    local display=()
    if [ -n "${xvfb_fd:-}" ]; then
        if [ -n "${PVHPC_PARALLEL:-}" ]; then
            # The MPI ranks may use the display from their start: Xvfb is waited for first.
            xvfb_up || { child_pids=(); start_xvfb_waiting; }
        else
            display=(--display-fd "$xvfb_fd")
        fi
    fi
    echo "pvhpc-timing: script job_start=$job_start xvfb_spawned=${xvfb_spawned:-} supervisor=${EPOCHREALTIME:-}"
    # -S: no site module (site-packages, .pth files): the supervisor and parallel.py use the standard library only,
    # and the site module is a third of Python's start.
    "$HELPER_PYTHON" -S "${parallel[@]}" "$LAUNCHER" --start-timeout "$START_TIMEOUT" --workdir "$workdir" \
        "${display[@]}" &
    launcher_pid=$!
    child_pids+=("$launcher_pid")
    if [ -n "${xvfb_fd:-}" ]; then
        exec {xvfb_fd}<&-   # the supervisor's now
        unset xvfb_fd
    fi
    wait "$launcher_pid"
}
launch
code=$?
if [ "$code" -eq 75 ] && [ "$RENDER_MODE" = xvfb ] && [ -e "$workdir/display-failed" ]; then
    # Xvfb exited before it accepted clients, and the supervisor stopped the server without a word to pvhpc (and
    # said so in that file: a server's own exit code may be 75 too): start Xvfb again, waited for this time, then
    # the server.
    rm -f "$workdir/display-failed"
    echo "pvhpc: Xvfb on $DISPLAY exited before it accepted clients: $(tail -n 3 "$workdir/xvfb.log" | tr '\n' ' ')"
    child_pids=()
    start_xvfb_waiting
    launch
    code=$?
fi
if [ "$code" -ne 0 ] && [ "$RENDER_MODE" = xvfb ] && ! kill -0 "${child_pids[0]}" 2>/dev/null; then
    echo "pvhpc: Xvfb on $DISPLAY has exited; its log:"
    cat "$workdir/xvfb.log"
fi
exit "$code"
