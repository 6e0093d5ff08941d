#!/bin/bash
# Run pvhpc's whole test suite on this machine, real components included:
# install what is missing, then pytest. Extra arguments go to pytest
# (e.g. -m "not cluster" for the fast tests only).
#
# The test cluster runs the newest Slurm installed (25.11, where install.sh built it from source beside the
# checkout). A whole run (no arguments) runs in two lanes at once (below); the second also runs what depends on
# Slurm's release a second time on the other Slurm here (Debian's 22.05): the scheduler backends' contract, the
# launcher's path end to end and the Slurm fault drills (their table goes to test-artifacts/drills-slurm-22.05/).
set -uo pipefail
cd "$(dirname "$0")/.."

bash install.sh || exit 1
# Everything a test needs is installed now: a test may skip for a missing tool only outside this script.
export PVHPC_TESTS_AFTER_INSTALL=1
PY=${PVHPC_PREFIX:-/opt/pvhpc}/venv/bin/python
SECOND_SLURM_TESTS=(tests/test_scheduler_backends.py tests/test_launcher_e2e.py tests/test_fault_drills.py)
# Once is enough for the drills that do not turn on what Slurm says or does: a locked or stopped database, a
# crashing server, a drained node, the service killed.
SECOND_SLURM_SKIP="not database_locked and not postgresql and not server_crash and not drained and not sigkilled"

if [ $# -gt 0 ] || [ -n "${PVHPC_TEST_SLURM:-}" ]; then
    "$PY" -m pytest --durations=25 "$@"   # the slowest tests named at the end: the suite must stay within CI's time
    rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "tests/run.sh: pytest collected no tests for these arguments"
        exit 0
    fi
    exit "$rc"
fi

# A whole run: two lanes at once, each pytest with a cluster of its own. The waits lane runs the tests that spend
# their minutes waiting for Slurm's clock (marker `waits`: walltimes of minutes, idle limits), then what depends on
# Slurm's release on the other Slurm here; the main lane runs everything else. Their waits overlap the main lane's
# work instead of adding to it: the whole suite stays within CI's time on 2 cores. No test of the waits lane uses
# the unix_users fixture (it makes and removes the same Unix users for whoever runs).
mkdir -p test-artifacts
lane_log=test-artifacts/waits-lane.log
second=$("$PY" -c 'from pvhpc.scheduler import slurm_install as s; found = s.installed(); print(found[1].version.release if len(found) > 1 else "")')
# Stopped early (Ctrl-C, CI's timeout), both lanes are stopped: SIGINT to each lane's process group first, so that
# its pytest ends its fixtures (the cluster, jobs, services; tests/conftest.py hears SIGINT even where this script
# was started with it ignored, as a background job of a shell without job control is), then SIGTERM to whatever
# is left a minute later; then the waits lane's output so far is shown.
lane=""
main=""
stopping=test-artifacts/stopping   # there while stopping: the waits lane starts nothing more
rm -f "$stopping"
stop_lanes() {
    local lanes="$main $lane" group timer
    [ -n "${lanes// /}" ] || return 0
    touch "$stopping"
    for group in $lanes; do kill -INT -- "-$group" 2>/dev/null; done
    ( sleep 60; for group in $lanes; do kill -TERM -- "-$group" 2>/dev/null; done ) &
    timer=$!
    wait $lanes 2>/dev/null
    kill "$timer" 2>/dev/null
    main="" lane=""
    rm -f "$stopping"
    echo "tests/run.sh: stopped early; the waits lane's output so far:"
    cat "$lane_log"
}
trap 'stop_lanes; exit 130' INT TERM
trap stop_lanes EXIT
set -m   # the lane in a process group of its own, to stop it whole
(
    "$PY" -m pytest -p no:cacheprovider --durations=10 -m waits
    lane_rc=$?
    [ ! -e "$stopping" ] || exit 130   # stopped early (stop_lanes): the second Slurm's run does not start
    [ "$lane_rc" -ne 5 ] || lane_rc=0
    if [ -n "$second" ]; then
        echo "tests/run.sh: again on Slurm $second: ${SECOND_SLURM_TESTS[*]}"
        "$PY" -m pytest -p no:cacheprovider --slurm "$second" -k "$SECOND_SLURM_SKIP" "${SECOND_SLURM_TESTS[@]}"
        second_rc=$?
        [ "$second_rc" -ne 5 ] || second_rc=0   # nothing left to run there is not a failure
        [ "$lane_rc" -ne 0 ] || lane_rc=$second_rc
    fi
    exit "$lane_rc"
) > "$lane_log" 2>&1 &
lane=$!
set +m
echo "tests/run.sh: the waits lane runs beside this one; its output follows this lane's ($lane_log)"

# In the background (a process group of its own too), waited for: a signal to this script is then handled at
# once, not when this lane ends.
set -m
"$PY" -m pytest --durations=25 -m "not waits" &   # the slowest tests named at the end: the suite must stay within CI's time
main=$!
set +m
wait "$main"
rc=$?
main=""
[ "$rc" -ne 5 ] || rc=0
wait "$lane"
lane_rc=$?
lane=""
echo "tests/run.sh: the waits lane:"
cat "$lane_log"
echo "tests/run.sh: main lane exit $rc, waits lane exit $lane_rc"
[ "$rc" -ne 0 ] || rc=$lane_rc
exit "$rc"
