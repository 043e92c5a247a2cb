"""A directory an agent may read and write, and nothing outside it."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import IO, Any

from app.agents.tools import ToolError

_HAS_PROC = os.path.isdir("/proc/self/fd")


class Workspace:
    """Confines model-supplied relative paths to ``root``.

    Paths are checked after resolving every symlink, so a link inside the workspace that
    points outside it is refused. Files are then opened without following a final symlink and
    checked again through the open descriptor (its real path must be inside the root, and it
    must be a regular file), so a process that swaps a directory for a symlink between the
    check and the open (an unconfined command left running) still cannot lead a file tool out.
    """

    def __init__(self, root: Path) -> None:
        # Resolved once so the containment check compares canonical paths on both sides
        # (the root may itself live under a symlink, e.g. /tmp on macOS).
        self.root = root.resolve()

    def resolve(self, path: str) -> Path:
        """The canonical absolute path for ``path``, relative to the root, or ToolError."""
        if "\x00" in path:
            raise ToolError(f"invalid path {path!r}: contains a NUL character")
        relative = PurePosixPath(path)
        if relative.is_absolute() or Path(path).is_absolute():
            raise ToolError(f"invalid path {path!r}: paths must be relative to the workspace")
        if ".." in relative.parts:
            raise ToolError(f"invalid path {path!r}: '..' is not allowed")
        if not relative.parts:  # "" or ".": the root, resolved once already
            return self.root
        # Non-strict resolution still follows every existing symlink (dangling ones too), so
        # only the not-yet-created tail of a path to be written stays unresolved.
        try:
            resolved = (self.root / relative).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on Python < 3.13
            # The exception text names host paths, which are none of the model's business.
            raise ToolError(
                f"invalid path {path!r}: it cannot be resolved (symlink loop?)"
            ) from exc
        if not resolved.is_relative_to(self.root):
            raise ToolError(f"invalid path {path!r}: it leads outside the workspace")
        return resolved

    def open(self, target: Path, mode: str = "rb", **text: Any) -> IO[Any]:
        """Open ``target`` (a path :meth:`resolve` returned) for reading: ``mode`` ``"rb"`` or
        ``"r"`` (``text`` are :func:`open`'s text options). Refuses what is not a regular file
        inside the root, without blocking on a FIFO."""
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._check_opened(fd, target)
            os.set_blocking(fd, True)
            return os.fdopen(fd, mode, **text)
        except BaseException:
            os.close(fd)
            raise

    def write(self, target: Path, data: bytes) -> None:
        """Replace the content of ``target`` (a path :meth:`resolve` returned) with ``data``,
        creating it and its directories. What is created belongs to the root's owner: a worker
        running as root gives the workspace to the commands' user, who must be able to change
        what the file tools wrote."""
        missing = []
        parent = target.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        target.parent.mkdir(parents=True, exist_ok=True)
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._check_opened(directory, target.parent, directory=True)
            created = not os.path.lexists(target)
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(target.name, flags, 0o644, dir_fd=directory)
        finally:
            os.close(directory)
        if created:
            missing.append(target)
        with os.fdopen(fd, "wb") as file:
            self._check_opened(fd, target)
            os.set_blocking(fd, True)
            file.truncate(0)
            file.write(data)
        owner = self.root.stat()
        if os.geteuid() == 0 and owner.st_uid != 0:
            for path in missing:
                os.lchown(path, owner.st_uid, owner.st_gid)

    def _check_opened(self, fd: int, path: Path, *, directory: bool = False) -> None:
        """What ``fd`` (opened for ``path``) really is must be inside the root and a regular
        file (or a directory)."""
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
            raise ToolError(f"{self.display(path)} is not a regular file")
        real = Path(os.readlink(f"/proc/self/fd/{fd}")) if _HAS_PROC else path.resolve()
        if not real.is_relative_to(self.root):
            raise ToolError(f"{self.display(path)} leads outside the workspace")

    def display(self, path: Path) -> str:
        """``path`` as the model should see it: relative to the root, ``.`` for the root."""
        return path.relative_to(self.root).as_posix()
