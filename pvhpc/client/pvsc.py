"""A ParaView server-configuration file (``.pvsc``) for a pvhpc site: one entry in the desktop ParaView's
"Connect" dialog per desktop application and partition. Choosing one asks for what the partition lets the user
choose (nodes, ranks, walltime, account, the local port), then ParaView runs ``pvhpc connect --new ...``, which
submits the session, waits for it and carries ParaView's connection to it (docs/desktop.md).

Built from what the service's API answers (``GET /api/v1/applications`` and ``/partitions``), so that
``pvhpc pvsc`` on a user's machine and the service's own page write the same file. It names the service's URL and
nothing secret: the ``pvhpc`` it runs finds the user's token where it always does (PVHPC_TOKEN, the client config).

How ParaView reads it (5.11, pqServerLauncher): the ``<Options>`` become a dialog; each ``$NAME$`` in an argument
is replaced by the value chosen (or by one of ParaView's own variables, such as ``$PV_SERVER_PORT$``); the
arguments are joined by spaces and split again, so every argument here is one word and each option is written
``--name=$VALUE$`` (an empty value stays an argument of its own). ParaView waits ``delay`` seconds, reports a
command that already failed (its error goes to ParaView's output window), then tries the connection every second
for the Server's ``timeout`` seconds (-1: until the user cancels), while the session waits in Slurm's queue.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

# Seconds ParaView waits after starting the command before it connects: enough for ``pvhpc connect`` to refuse
# bad input (ParaView then says the command failed), short beside a job's start.
COMMAND_DELAY = 5
DEFAULT_LOCAL_PORT = 11111


def server_name(application: dict, partition: dict) -> str:
    return f"pvhpc {application['name']} on {partition['name']}"


def server_configuration(applications: list[dict], partitions: list[dict], service_url: str,
                         executable: str = "pvhpc", local_port: int = DEFAULT_LOCAL_PORT) -> str:
    """The .pvsc text for every desktop application (``"desktop": true``) on each partition it runs on.

    ``applications`` and ``partitions`` are the lists the API answers; ``executable`` is how the user's machine
    names the pvhpc command. Raises ValueError when the service offers no desktop application."""
    by_name = {p["name"]: p for p in partitions}
    root = ET.Element("Servers")
    for app in applications:
        if not app.get("desktop"):
            continue
        for partition_name in app["partitions"]:
            partition = by_name.get(partition_name)
            if partition is not None:
                root.append(_server(app, partition, service_url, executable, local_port))
    if not len(root):
        raise ValueError("the service offers no application for the desktop ParaView (none says \"desktop\": "
                         "true in GET /api/v1/applications)")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _server(app: dict, partition: dict, service_url: str, executable: str, local_port: int) -> ET.Element:
    server = ET.Element("Server", name=server_name(app, partition), resource=f"cs://localhost:{local_port}",
                        timeout="-1")
    startup = ET.SubElement(server, "CommandStartup")
    options = ET.SubElement(startup, "Options")
    arguments = ["connect", "--new", app["name"], f"--url={service_url}", f"--partition={partition['name']}",
                 "--port=$PV_SERVER_PORT$"]

    _option(options, "PV_SERVER_PORT", "Port on this computer", "Range",
            type="int", min="1024", max="65535", step="1", default=str(local_port))
    parallel = partition.get("parallel") if app.get("parallel") else None
    if parallel:
        _option(options, "SESSION_NODES", "Nodes", "Range",
                type="int", min="1", max=str(parallel["max_nodes"]), step="1", default="1")
        _option(options, "SESSION_RANKS", "ParaView server ranks", "Range",
                type="int", min="1", max=str(parallel["max_ranks"]), step="1", default="1")
        arguments += ["--nodes=$SESSION_NODES$", "--ranks=$SESSION_RANKS$"]
    walltime = partition.get("walltime") or {}
    _option(options, "SESSION_WALLTIME", f"Walltime (HH:MM:SS, at most {walltime.get('max', '?')})", "String",
            default=str(walltime.get("default", "")))
    arguments.append("--walltime=$SESSION_WALLTIME$")
    accounts = partition.get("accounts") or []
    if accounts:
        option = _option(options, "SESSION_ACCOUNT", "Account", "Enumeration", default=accounts[0])
        for account in accounts:
            ET.SubElement(option[0], "Entry", value=account, label=account)
        arguments.append("--account=$SESSION_ACCOUNT$")

    command = ET.SubElement(startup, "Command", exec=executable, process_wait="0", delay=str(COMMAND_DELAY))
    listed = ET.SubElement(command, "Arguments")
    for argument in arguments:
        ET.SubElement(listed, "Argument", value=argument)
    return server


def _option(options: ET.Element, name: str, label: str, kind: str, **attributes: str) -> ET.Element:
    option = ET.SubElement(options, "Option", name=name, label=label)
    ET.SubElement(option, kind, **attributes)
    return option
