"""A throwaway Slurm cluster on this machine (``pvhpc cluster ...``, ``pvhpc demo``, the embedded defaults, the
test suite): its daemons started, waited for and stopped (``cluster.py``), its nodes hosts of their own in network
namespaces when run as root (``nodehosts.py``). Not a part of the scheduler interface: the service talks to it as
to any Slurm, through pvhpc/scheduler/."""
