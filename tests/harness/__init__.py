"""The real components tests run against, one module each, started and stopped the same way.

``daemon.Daemon`` is the shape they share: a program started with its output
in a log file, ready once a probe passes, stopped with SIGTERM and then SIGKILL.
Each module says only what is its own: the command line, the config files and
the readiness probe (``service``, ``apache``, ``sshd``). The Slurm cluster and
PostgreSQL come with their own start and stop tools (``pvhpc cluster``,
``pg_ctl``), which ``cluster`` and ``postgres`` drive instead. ``conftest.py``
turns these into fixtures; nothing here knows about pytest's fixtures.

Beside them, what tests build in their own process and share: pvhpc's application with a stand-in scheduler
(``inprocess``), the built-in proxy alone before a websocket stand-in (``builtin_proxy``), and the fault
drills' service and audit (``drills``). ``cluster`` is the one place tests run Slurm's commands.
"""
