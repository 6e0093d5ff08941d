"""Keep a session's clients inside the data directory they were given (standard library only).

ParaView's web protocols check a requested path with ``startswith`` on a normalised
string: ``Home/../data2`` reaches a sibling whose name begins like the root's, and a
symlink under the root reaches wherever it points. Here a path counts as inside only
when its real path (symlinks resolved) lies under the root's real path, compared
component by component.

Runs under pvpython on compute nodes, imported by the session servers beside it.
"""

import os


class OutsideDataRoot(Exception):
    """A client asked for a path outside the session's data directory."""


class DataRoot:
    def __init__(self, directory: str, label: str = "Home"):
        self.path = os.path.realpath(directory)
        self.label = label    # how the file browser names the root ("Home/sub/file.vtk")

    def contains(self, real_path: str) -> bool:
        return real_path == self.path or os.path.commonpath([real_path, self.path]) == self.path

    def resolve(self, path: str) -> str:
        """The real path of ``path`` (absolute, or relative to the root), or OutsideDataRoot."""
        if not isinstance(path, str) or "\0" in path or len(path) > 4096:
            raise OutsideDataRoot("not a usable path")
        real = os.path.realpath(os.path.join(self.path, path))   # join keeps an absolute path as it is
        if not self.contains(real):
            raise OutsideDataRoot(f"{path[:200]!r} is outside the session's data directory")
        return real

    def resolve_listing(self, relative_dir: str) -> str:
        """The file browser's paths start with the root's label: ``Home``, ``Home/sub``; ``.`` is the root."""
        if relative_dir in (".", self.label, ""):
            return self.path
        prefix = self.label + "/"
        if not isinstance(relative_dir, str) or not relative_dir.startswith(prefix):
            raise OutsideDataRoot(f"{str(relative_dir)[:200]!r} is not a directory under {self.label}")
        return self.resolve(relative_dir[len(prefix):])
