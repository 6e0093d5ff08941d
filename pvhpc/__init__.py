"""pvhpc: ParaViewWeb sessions as Slurm jobs, for HPC centers."""

__version__ = "0.1.0"
