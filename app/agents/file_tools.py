"""Tools to read, write, edit, list and search files inside an agent's workspace."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import re2
from pydantic import BaseModel, ConfigDict, Field

from app.agents.tools import Tool, ToolContext, ToolError
from app.agents.workspace import Workspace

MAX_READ_CHARS = 100_000
MAX_LIST_ENTRIES = 1000
# Directory levels below the starting one that list_files and search_files descend into.
MAX_DEPTH = 64
# A NUL byte this early almost always means a binary file; its text would be noise to the
# model, and NUL cannot be stored in PostgreSQL text or JSONB either.
BINARY_SNIFF_BYTES = 8192
# edit_file reads the whole file into memory: larger files are for write_file or bash.
MAX_EDIT_BYTES = 10_000_000
MAX_SEARCH_MATCHES = 200
MAX_MATCH_LINE_CHARS = 300
# search_files skips larger files (logs, dumps) rather than spending its time in them.
MAX_SEARCH_FILE_BYTES = 10_000_000
MAX_SEARCH_FILES = 20_000
MAX_PATTERN_CHARS = 1000
# RE2 matches in time linear in the text, whatever the pattern (no backtracking); patterns that
# would need more memory than this to compile are refused.
_RE2_MAX_MEM = 8 << 20
# Version-control internals: never what the model is looking for, often large.
SKIPPED_DIRECTORIES = frozenset({".git", ".hg", ".svn"})

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


class EditFileArgs(_Args):
    path: str = Field(description="File path relative to the workspace root.")
    old_text: str = Field(
        description="The exact text to replace; it must occur exactly once in the file."
    )
    new_text: str = Field(description="The text to put in its place.")


class SearchFilesArgs(_Args):
    pattern: str = Field(
        max_length=MAX_PATTERN_CHARS,
        description="A regular expression in RE2 syntax (like Python's, without backreferences "
        "or lookaround), matched against each line.",
    )
    path: str = Field(
        default=".",
        description="File or directory to search, relative to the workspace root; "
        "the root if omitted.",
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

    async def run(self, args: BaseModel, context: ToolContext) -> str:
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
        if _is_binary(self.workspace, target):
            size = target.stat().st_size
            raise ToolError(f"{args.path} looks like a binary file ({size} bytes)")
        return _read_lines(self.workspace, target, args.path, start, end)


def _is_binary(workspace: Workspace, target: Path) -> bool:
    with workspace.open(target, "rb") as raw:
        return b"\x00" in raw.read(BINARY_SNIFF_BYTES)


def _read_lines(
    workspace: Workspace, target: Path, shown_path: str, start: int, end: int | None
) -> str:
    """Lines ``start..end`` of a text file, never holding more than the output cap in memory."""
    chunks: list[str] = []
    size = 0
    truncated = False
    line_count = 0
    # newline="" keeps line endings exactly as stored, so a full read returns the file verbatim.
    with workspace.open(target, "r", encoding="utf-8", errors="replace", newline="") as file:
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

    async def run(self, args: BaseModel, context: ToolContext) -> str:
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
        self.workspace.write(target, data)
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

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, ListFilesArgs)  # invoke() validated against Args
        return await _in_thread(args.path, lambda: self._list(args))

    def _list(self, args: ListFilesArgs) -> str:
        top = self.workspace.resolve(args.path)
        if not top.exists():
            raise ToolError(f"no such directory: {args.path}")
        if not top.is_dir():
            raise ToolError(f"{args.path} is not a directory")
        entries: list[str] = []
        complete = self._walk(top, entries, MAX_DEPTH)
        if not entries:
            return "(empty directory)"
        listing = "\n".join(entries)
        if not complete:
            listing += f"\n[truncated after {self.max_entries} entries; list a subdirectory]"
        return listing

    def _walk(self, directory: Path, entries: list[str], depth: int) -> bool:
        """Append entries depth-first in name order, ``depth`` levels down at most; False when
        the limit cut the walk short."""
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
                if depth > 1 and not self._walk(path, entries, depth - 1):
                    return False
            else:
                entries.append(self.workspace.display(path))
        return True


class EditFile(Tool):
    name = "edit_file"
    description = (
        "Replace old_text with new_text in a text file of the workspace. old_text must match "
        "the file exactly (whitespace and line endings included) and occur exactly once: "
        "include enough surrounding lines to make it unique."
    )
    Args = EditFileArgs

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, EditFileArgs)  # invoke() validated against Args
        return await _in_thread(args.path, lambda: self._edit(args))

    def _edit(self, args: EditFileArgs) -> str:
        if not args.old_text:
            raise ToolError("old_text is empty; use write_file to create or replace a whole file")
        target = self.workspace.resolve(args.path)
        if target.is_dir():
            raise ToolError(f"{args.path} is a directory")
        if not target.is_file():
            raise ToolError(f"no such file: {args.path}")
        size = target.stat().st_size
        if size > MAX_EDIT_BYTES:
            raise ToolError(f"{args.path} is too large to edit ({size} bytes)")
        with self.workspace.open(target, "rb") as file:
            data = file.read(MAX_EDIT_BYTES + 1)
        if len(data) > MAX_EDIT_BYTES:
            raise ToolError(f"{args.path} is too large to edit ({len(data)}+ bytes)")
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise ToolError(f"{args.path} looks like a binary file ({size} bytes)")
        try:
            # Strict decoding: rewriting a file read with replacement characters would
            # silently corrupt every byte that was not UTF-8.
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolError(f"{args.path} is not valid UTF-8 text") from exc
        offset = _only_occurrence(text, args.old_text, args.path)
        line = text.count("\n", 0, offset) + 1
        edited = text[:offset] + args.new_text + text[offset + len(args.old_text) :]
        try:
            encoded = edited.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON can carry lone surrogates
            raise ToolError(f"new_text is not valid Unicode text: {exc.reason}") from exc
        self.workspace.write(target, encoded)
        return f"edited {self.workspace.display(target)}: replaced 1 occurrence at line {line}"


def _only_occurrence(text: str, old_text: str, shown_path: str) -> int:
    """The offset of the one occurrence of ``old_text``, or ToolError saying how many."""
    offset = text.find(old_text)
    if offset < 0:
        raise ToolError(
            f"old_text was not found in {shown_path}; it must match exactly, "
            "whitespace and line endings included (read_file shows the current content)"
        )
    if text.find(old_text, offset + 1) >= 0:
        # count() finds non-overlapping occurrences only: "aa" is once in "aaa", yet ambiguous.
        count = max(text.count(old_text), 2)
        raise ToolError(
            f"old_text occurs {count} times in {shown_path}; include more surrounding "
            "text so that it occurs exactly once"
        )
    return offset


class SearchFiles(Tool):
    name = "search_files"
    description = (
        "Search the text files under a workspace directory (or one file) for lines matching a "
        "regular expression (RE2 syntax: no backreferences or lookaround). Each match is "
        "reported as 'path:line: text'. At most "
        f"{MAX_SEARCH_MATCHES} matches; lines are cut at {MAX_MATCH_LINE_CHARS} characters; "
        "binary files, symlinks and .git directories are skipped."
    )
    Args = SearchFilesArgs

    def __init__(self, workspace: Workspace, max_matches: int = MAX_SEARCH_MATCHES) -> None:
        self.workspace = workspace
        self.max_matches = max_matches

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, SearchFilesArgs)  # invoke() validated against Args
        regex = _compile(args.pattern)
        return await _in_thread(args.path, lambda: self._search(regex, args.path))

    def _search(self, regex: _Regex, path: str) -> str:
        top = self.workspace.resolve(path)
        matches: list[str] = []
        if top.is_file():
            if _is_binary(self.workspace, top):
                raise ToolError(f"{path} looks like a binary file")
            complete = self._search_file(regex, top, matches)
        elif top.is_dir():
            complete = self._search_directory(regex, top, matches)
        else:
            raise ToolError(f"no such file or directory: {path}")
        if not matches:
            return "no matches"
        result = "\n".join(matches)
        if not complete:
            result += (
                f"\n[stopped after {self.max_matches} matches; "
                "narrow the pattern or the path to see more]"
            )
        return result

    def _search_directory(
        self,
        regex: _Regex,
        directory: Path,
        matches: list[str],
        scanned: list[int] | None = None,
        depth: int = 0,
    ) -> bool:
        """Search depth-first in name order (at most ``MAX_DEPTH`` levels down); False when the
        match or file limit cut it short."""
        scanned = [0] if scanned is None else scanned
        try:
            with os.scandir(directory) as scan:
                children = sorted(scan, key=lambda entry: entry.name)
        except OSError:
            return True  # unreadable directory: nothing to find there
        for child in children:
            # Symlinks are never followed: one pointing outside would reveal what is there,
            # and ones pointing inside lead to files searched anyway.
            if child.is_symlink():
                continue
            path = Path(child.path)
            if child.is_dir(follow_symlinks=False):
                if child.name in SKIPPED_DIRECTORIES or depth + 1 >= MAX_DEPTH:
                    continue
                if not self._search_directory(regex, path, matches, scanned, depth + 1):
                    return False
            elif child.is_file(follow_symlinks=False):
                scanned[0] += 1
                if scanned[0] > MAX_SEARCH_FILES:
                    return False
                try:
                    too_big = child.stat().st_size > MAX_SEARCH_FILE_BYTES
                    if too_big or _is_binary(self.workspace, path):
                        continue
                    if not self._search_file(regex, path, matches):
                        return False
                except OSError:
                    continue  # unreadable file: skipped like a binary one
        return True

    def _search_file(self, regex: _Regex, path: Path, matches: list[str]) -> bool:
        shown = self.workspace.display(path)
        opened = self.workspace.open(path, "r", encoding="utf-8", errors="replace", newline="")
        with opened as file:
            for number, line in enumerate(file, start=1):
                text = line.rstrip("\r\n")
                if regex.search(text) is None:
                    continue
                if len(matches) >= self.max_matches:
                    return False
                if len(text) > MAX_MATCH_LINE_CHARS:
                    text = text[:MAX_MATCH_LINE_CHARS] + "..."
                # A NUL past the binary sniff cannot go into PostgreSQL text.
                matches.append(f"{shown}:{number}: {text.replace(chr(0), chr(0xFFFD))}")
        return True


class _Regex(Protocol):
    def search(self, text: str) -> object: ...


def _compile(pattern: str) -> _Regex:
    """``pattern`` compiled by RE2: a search takes time linear in the line, so no pattern can
    stall the worker (Python's ``re`` backtracks: ``(a+)+$`` on 40 a's runs for hours)."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    try:
        regex: _Regex = re2.compile(pattern, options)
    except re2.error as exc:
        reason = str(exc)
        if reason.startswith(("b'", 'b"')):
            reason = reason[2:-1]
        raise ToolError(f"invalid regular expression {pattern!r}: {reason}") from None
    return regex


def file_tools(workspace: Workspace) -> list[Tool]:
    """The file tools, all bound to ``workspace``."""
    return [
        ReadFile(workspace),
        WriteFile(workspace),
        EditFile(workspace),
        ListFiles(workspace),
        SearchFiles(workspace),
    ]
