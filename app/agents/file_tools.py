"""Tools to read, write and list files inside an agent's workspace."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.agents.tools import Tool, ToolError
from app.agents.workspace import Workspace

MAX_READ_CHARS = 100_000
MAX_LIST_ENTRIES = 1000
# A NUL byte this early almost always means a binary file; its text would be noise to the
# model, and NUL cannot be stored in PostgreSQL text or JSONB either.
BINARY_SNIFF_BYTES = 8192

_T = TypeVar("_T")


class _Args(BaseModel):
    # Unknown arguments are refused rather than ignored so the model learns the real schema.
    model_config = ConfigDict(extra="forbid")


class ReadFileArgs(_Args):
    path: str = Field(description="File path relative to the workspace root.")
    start_line: int | None = Field(
        default=None, ge=1, description="First line to return (1-based, inclusive)."
    )
    end_line: int | None = Field(
        default=None, ge=1, description="Last line to return (1-based, inclusive)."
    )


class WriteFileArgs(_Args):
    path: str = Field(description="File path relative to the workspace root.")
    content: str = Field(description="The complete new content of the file.")


class ListFilesArgs(_Args):
    path: str = Field(
        default=".", description="Directory relative to the workspace root; the root if omitted."
    )


async def _in_thread(path: str, work: Callable[[], _T]) -> _T:
    """Run blocking file work off the event loop, reporting OS failures to the model."""
    try:
        return await asyncio.to_thread(work)
    except OSError as exc:
        # strerror ("Permission denied") rather than str(exc), which names host paths.
        raise ToolError(f"{path}: {exc.strerror or type(exc).__name__}") from exc


class ReadFile(Tool):
    name = "read_file"
    description = (
        "Read a text file from the workspace, optionally only lines start_line..end_line "
        f"(1-based, inclusive). Output is capped at {MAX_READ_CHARS} characters."
    )
    Args = ReadFileArgs

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def run(self, args: BaseModel) -> str:
        assert isinstance(args, ReadFileArgs)  # invoke() validated against Args
        return await _in_thread(args.path, lambda: self._read(args))

    def _read(self, args: ReadFileArgs) -> str:
        target = self.workspace.resolve(args.path)
        if target.is_dir():
            raise ToolError(f"{args.path} is a directory; use list_files to see its content")
        if not target.is_file():
            raise ToolError(f"no such file: {args.path}")
        start = args.start_line or 1
        end = args.end_line
        if end is not None and end < start:
            raise ToolError(f"end_line {end} is before start_line {start}")
        with target.open("rb") as raw:
            if b"\x00" in raw.read(BINARY_SNIFF_BYTES):
                size = target.stat().st_size
                raise ToolError(f"{args.path} looks like a binary file ({size} bytes)")
        return _read_lines(target, args.path, start, end)


def _read_lines(target: Path, shown_path: str, start: int, end: int | None) -> str:
    """Lines ``start..end`` of a text file, never holding more than the output cap in memory."""
    chunks: list[str] = []
    size = 0
    truncated = False
    line_count = 0
    # newline="" keeps line endings exactly as stored, so a full read returns the file verbatim.
    with target.open(encoding="utf-8", errors="replace", newline="") as file:
        for line_count, line in enumerate(file, start=1):
            if line_count < start:
                continue
            if end is not None and line_count > end:
                break
            chunks.append(line)
            size += len(line)
            if size > MAX_READ_CHARS:
                truncated = True
                break
    if start > 1 and start > line_count:
        raise ToolError(f"start_line {start} is past the end of {shown_path} ({line_count} lines)")
    text = "".join(chunks)
    if truncated:
        return (
            text[:MAX_READ_CHARS] + f"\n[truncated at {MAX_READ_CHARS} characters; "
            "read a smaller line range with start_line/end_line to see more]"
        )
    return text


class WriteFile(Tool):
    name = "write_file"
    description = (
        "Create or overwrite a text file in the workspace with the given content; "
        "missing parent directories are created."
    )
    Args = WriteFileArgs

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def run(self, args: BaseModel) -> str:
        assert isinstance(args, WriteFileArgs)  # invoke() validated against Args
        return await _in_thread(args.path, lambda: self._write(args))

    def _write(self, args: WriteFileArgs) -> str:
        target = self.workspace.resolve(args.path)
        if target == self.workspace.root or target.is_dir():
            raise ToolError(f"{args.path} is a directory")
        try:
            data = args.content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ToolError(f"content is not valid Unicode text: {exc.reason}") from exc
        # The resolved parent is inside the workspace and free of symlinks, so every directory
        # created here is a real one inside the root.
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"wrote {len(data)} bytes to {self.workspace.display(target)}"


class ListFiles(Tool):
    name = "list_files"
    description = (
        "List files and directories under a workspace directory, recursively, as paths "
        f"relative to the workspace root; directories end with '/'. At most {MAX_LIST_ENTRIES} "
        "entries."
    )
    Args = ListFilesArgs

    def __init__(self, workspace: Workspace, max_entries: int = MAX_LIST_ENTRIES) -> None:
        self.workspace = workspace
        self.max_entries = max_entries

    async def run(self, args: BaseModel) -> str:
        assert isinstance(args, ListFilesArgs)  # invoke() validated against Args
        return await _in_thread(args.path, lambda: self._list(args))

    def _list(self, args: ListFilesArgs) -> str:
        top = self.workspace.resolve(args.path)
        if not top.exists():
            raise ToolError(f"no such directory: {args.path}")
        if not top.is_dir():
            raise ToolError(f"{args.path} is not a directory")
        entries: list[str] = []
        complete = self._walk(top, entries)
        if not entries:
            return "(empty directory)"
        listing = "\n".join(entries)
        if not complete:
            listing += f"\n[truncated after {self.max_entries} entries; list a subdirectory]"
        return listing

    def _walk(self, directory: Path, entries: list[str]) -> bool:
        """Append entries depth-first in name order; False when the limit cut the walk short."""
        with os.scandir(directory) as scan:
            children = sorted(scan, key=lambda entry: entry.name)
        for child in children:
            if len(entries) >= self.max_entries:
                return False
            path = Path(child.path)
            # Symlinks are listed but never followed: one pointing outside the workspace would
            # otherwise reveal what is there.
            if child.is_dir(follow_symlinks=False):
                entries.append(self.workspace.display(path) + "/")
                if not self._walk(path, entries):
                    return False
            else:
                entries.append(self.workspace.display(path))
        return True


def file_tools(workspace: Workspace) -> list[Tool]:
    """The file tools, all bound to ``workspace``."""
    return [ReadFile(workspace), WriteFile(workspace), ListFiles(workspace)]
