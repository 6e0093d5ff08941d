#!/bin/bash
# ParaView's Qt GUI in a VNC desktop, as an Open OnDemand "interactive desktop" app starts it: the baseline
# of bench/vs_vnc.py. Submit it as the user who will connect:
#
#   sbatch --output=DIR/job.out bench/vnc_desktop.sh DIR [DATAFILE]
#
# DIR is a directory only that user can read (mode 0700). The job starts Xvnc on a display of its own with a
# random VNC password in a file only the user can read, an Xfce session (or, where Xfce is missing, a bare
# window manager), ParaView's GUI with DATAFILE opened and shown, and websockify serving noVNC's page on a
# free port. Then it writes DIR/connection (mode 0600): host, port, password, as OnDemand's connection.yml.
# Everything it started is stopped when the job ends (scancel, walltime).
#
# Needs: tigervnc-standalone-server tigervnc-tools novnc websockify xfce4 dbus-x11 paraview.
set -euo pipefail

dir=${1:?usage: vnc_desktop.sh DIR [DATAFILE]}
data=${2:-}
geometry=${VNC_GEOMETRY:-1280x800}
novnc=${NOVNC_DIR:-/usr/share/novnc}
umask 077

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

pids=()
stop_all() {
  trap - EXIT TERM INT HUP
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$dir/vnc.passwd" "$dir/connection"
}
trap stop_all EXIT
trap 'exit 143' TERM INT HUP

# The VNC password: random, in a file only this user can read (Xvnc reads it with -rfbauth).
password=$(head -c 48 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 8)
vncpasswd -f <<<"$password" >"$dir/vnc.passwd"
chmod 600 "$dir/vnc.passwd"

# Xvnc picks a free display itself (-displayfd) and listens for VNC on this node's loopback only: the browser
# reaches it through websockify.
vnc_port=$(free_port)
exec {displayfd}<> <(:)
Xvnc -displayfd "$displayfd" -rfbport "$vnc_port" -localhost -rfbauth "$dir/vnc.passwd" -SecurityTypes VncAuth \
     -geometry "$geometry" -depth 24 -AlwaysShared -desktop paraview >"$dir/xvnc.log" 2>&1 &
pids+=($!)
display=
for _ in $(seq 100); do
  read -r -t 0.1 -u "$displayfd" display && break || true
done
[[ -n "$display" ]] || { echo "Xvnc did not start: $(tail -3 "$dir/xvnc.log")" >&2; exit 1; }
export DISPLAY=":$display"
echo "Xvnc on display $DISPLAY, VNC port $vnc_port"

# The desktop: an Xfce session where installed, else a window manager alone.
export XDG_CONFIG_HOME="$dir/config" XDG_CACHE_HOME="$dir/cache" XDG_RUNTIME_DIR="$dir/runtime"
mkdir -p "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME" "$XDG_RUNTIME_DIR"
if command -v startxfce4 >/dev/null && command -v dbus-launch >/dev/null; then
  dbus-launch --exit-with-session xfce4-session >"$dir/desktop.log" 2>&1 &
elif command -v xfwm4 >/dev/null; then
  xfwm4 >"$dir/desktop.log" 2>&1 &
else
  echo "no desktop: install xfce4 (or at least xfwm4)" >&2; exit 1
fi
pids+=($!)

# ParaView's GUI with the data shown (--script runs after the window is up), without its welcome dialog (as for
# a user who has ticked "Don't show this window again").
mkdir -p "$XDG_CONFIG_HOME/ParaView"
# (The settings file's name carries ParaView's version: Debian's package's, or VNC_PARAVIEW_VERSION.)
version=${VNC_PARAVIEW_VERSION:-$(dpkg-query -W -f '${Version}' paraview 2>/dev/null | sed 's/[+~-].*//' || true)}
printf '[General]\nGeneralSettings.ShowWelcomeDialog=false\n' >"$XDG_CONFIG_HOME/ParaView/ParaView${version}.ini"
# It also notes the time of each render in DIR/renders.log: what bench/vs_vnc.py counts ParaView's own frames by.
script="$dir/show.py"
quote() { python3 -c 'import sys; print(repr(sys.argv[1]))' "$1"; }
{
  echo 'import time'
  echo 'from paraview.simple import *'
  if [[ -n "$data" ]]; then echo "Show(OpenDataFile($(quote "$data")))"; else echo 'Show(Cone())'; fi
  echo 'ResetCamera()'
  echo "_renders = open($(quote "$dir/renders.log"), 'a', buffering=1)"
  echo 'GetActiveView().GetRenderWindow().AddObserver("EndEvent", lambda *_: _renders.write("%.4f\n" % time.time()))'
  echo 'Render()'
} >"$script"
paraview --script="$script" >"$dir/paraview.log" 2>&1 &
pids+=($!)

# noVNC's page and its websocket, as OnDemand's job does with websockify.
web_port=$(free_port)
websockify --web "$novnc" "$web_port" "localhost:$vnc_port" >"$dir/websockify.log" 2>&1 &
pids+=($!)

printf 'host=%s\nport=%s\npassword=%s\ndisplay=%s\n' "${SLURMD_NODENAME:-$(hostname)}" "$web_port" "$password" \
  "$display" >"$dir/connection.new"
mv "$dir/connection.new" "$dir/connection"
echo "noVNC at http://${SLURMD_NODENAME:-$(hostname)}:$web_port/vnc.html"
wait -n "${pids[@]}" || true
echo "a part of the desktop ended; stopping the rest"
