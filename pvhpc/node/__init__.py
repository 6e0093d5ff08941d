"""What runs on compute nodes, inside a session's job, outside pvhpc's own environment.

The job script runs these by path: ``jobhelper.py``, ``supervisor.py`` and ``parallel.py`` under the node's
python3 with the standard library only; ``pvweb_server.py`` and ``argv_secret.py`` (with ``dataroots.py`` and
``wslink_exits.py`` beside them) under ``pvpython``. None of them may import anything from pvhpc.
What installs and checks this runtime runs inside the ``pvhpc`` command: ``pvhpc/runtime.py``.
"""
