"""What runs on compute nodes, inside a session's job, outside pvhpc's own environment.

``jobhelper.py`` runs under the node's python3 with the standard library only; ``pvweb_server.py`` runs
under ``pvpython``. Neither may import anything from pvhpc: the job scripts run them by path.
"""
