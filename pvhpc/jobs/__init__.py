"""The ground floor: the words every other part of pvhpc shares, importing nothing above it.

What a session and its job are made of, written once: ids and host names (``ids.py``), a session's states and
why it ended, with their words (``states.py``), what a job reports back (``reports.py``), and the job grammar
staff write in the config and pvhpc fills in per session: an application's command and its ``${...}``
placeholders (``command.py``), the MPI launch of a parallel session (``mpi.py``), the job script template
(``template.py``) and walltimes (``durations.py``). The config, the sessions, the scheduler and the front ends
stand on it; it imports only the standard library and ``pvhpc.errors`` / ``pvhpc.paths``.
"""
