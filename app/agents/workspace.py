"""A directory an agent may read and write, and nothing outside it."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from app.agents.tools import ToolError


class Workspace:
    """Confines model-supplied relative paths to ``root``.

    Paths are checked after resolving every symlink, so a link inside the workspace that
    points outside it is refused. The check and the later file operation are not atomic: a
    process swapping in a symlink in between could still escape. The agent's own commands
    (bash) can create symlinks but cannot run while a file tool does: tools run one at a time
    and a sandboxed command's processes die with it.
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

    def write(self, target: Path, data: bytes) -> None:
        """Write ``data`` to ``target`` (a path :meth:`resolve` returned), creating its
        directories. What is created belongs to the root's owner: a worker running as root
        gives the workspace to the sandbox's user, whose commands must be able to change
        what the file tools wrote."""
        missing = []
        parent = target.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            missing.append(target)
        target.write_bytes(data)
        owner = self.root.stat()
        if os.geteuid() == 0 and owner.st_uid != 0:
            for path in missing:
                os.lchown(path, owner.st_uid, owner.st_gid)

    def display(self, path: Path) -> str:
        """``path`` as the model should see it: relative to the root, ``.`` for the root."""
        return path.relative_to(self.root).as_posix()
