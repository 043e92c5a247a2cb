"""File tools: what they do inside the workspace, and that nothing escapes it."""

import asyncio
import os
import time
from pathlib import Path

import pytest

from app.agents.file_tools import (
    MAX_DEPTH,
    MAX_LIST_ENTRIES,
    MAX_MATCH_LINE_CHARS,
    MAX_READ_CHARS,
    MAX_SEARCH_MATCHES,
    ListFiles,
    SearchFiles,
    file_tools,
)
from app.agents.tools import Tool, ToolError
from app.agents.workspace import Workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace holding a secret."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("top secret")
    return directory


@pytest.fixture
def tools(root: Path) -> dict[str, Tool]:
    return {tool.name: tool for tool in file_tools(Workspace(root))}


async def test_write_then_read(tools: dict[str, Tool], root: Path) -> None:
    result = await tools["write_file"].invoke({"path": "a/b/c.txt", "content": "héllo\n"})

    assert result == "wrote 7 bytes to a/b/c.txt"
    assert (root / "a" / "b" / "c.txt").read_text() == "héllo\n"
    assert await tools["read_file"].invoke({"path": "a/b/c.txt"}) == "héllo\n"


async def test_write_overwrites(tools: dict[str, Tool], root: Path) -> None:
    await tools["write_file"].invoke({"path": "f.txt", "content": "long content"})
    await tools["write_file"].invoke({"path": "f.txt", "content": "short"})

    assert (root / "f.txt").read_text() == "short"


async def test_read_keeps_content_verbatim(tools: dict[str, Tool], root: Path) -> None:
    (root / "crlf.txt").write_bytes(b"one\r\ntwo\rthree\n")

    assert await tools["read_file"].invoke({"path": "crlf.txt"}) == "one\r\ntwo\rthree\n"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (2, 3, "2\n3\n"),
        (1, 1, "1\n"),
        (4, None, "4\n5"),
        (None, 2, "1\n2\n"),
        (3, 99, "3\n4\n5"),
        (5, 5, "5"),
    ],
)
async def test_read_line_range(
    tools: dict[str, Tool], root: Path, start: int | None, end: int | None, expected: str
) -> None:
    (root / "lines.txt").write_text("1\n2\n3\n4\n5")

    result = await tools["read_file"].invoke(
        {"path": "lines.txt", "start_line": start, "end_line": end}
    )

    assert result == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"path": "lines.txt", "start_line": 9}, "error: start_line 9 is past the end"),
        ({"path": "lines.txt", "start_line": 3, "end_line": 2}, "error: end_line 2 is before"),
        ({"path": "lines.txt", "start_line": 0}, "error: invalid arguments for read_file"),
        ({"path": "missing.txt"}, "error: no such file: missing.txt"),
        ({"path": "sub"}, "error: sub is a directory"),
        ({"path": "binary.bin"}, "error: binary.bin looks like a binary file"),
        ({}, "error: invalid arguments for read_file: path: Field required"),
        ({"path": "lines.txt", "mode": "r"}, "error: invalid arguments for read_file: mode"),
    ],
)
async def test_read_errors(
    tools: dict[str, Tool], root: Path, arguments: dict[str, object], message: str
) -> None:
    (root / "lines.txt").write_text("1\n2\n")
    (root / "sub").mkdir()
    (root / "binary.bin").write_bytes(b"\x89PNG\x00\x01")

    assert (await tools["read_file"].invoke(arguments)).startswith(message)


async def test_read_output_is_capped(tools: dict[str, Tool], root: Path) -> None:
    (root / "big.txt").write_text(("x" * 99 + "\n") * (MAX_READ_CHARS // 100 + 10))

    result = await tools["read_file"].invoke({"path": "big.txt"})

    assert result.startswith("x" * 99 + "\n")
    assert len(result) < MAX_READ_CHARS + 200
    assert result.endswith("read a smaller line range with start_line/end_line to see more]")
    assert "[truncated at 100000 characters" in result


async def test_read_exactly_at_cap_is_not_marked(tools: dict[str, Tool], root: Path) -> None:
    (root / "full.txt").write_text("y" * MAX_READ_CHARS)

    assert await tools["read_file"].invoke({"path": "full.txt"}) == "y" * MAX_READ_CHARS


async def test_write_errors(tools: dict[str, Tool], root: Path) -> None:
    (root / "dir").mkdir()
    (root / "file").write_text("")

    assert (await tools["write_file"].invoke({"path": "dir", "content": "x"})).startswith(
        "error: dir is a directory"
    )
    assert (await tools["write_file"].invoke({"path": ".", "content": "x"})).startswith("error:")
    assert (await tools["write_file"].invoke({"path": "file/x", "content": "x"})).startswith(
        "error: file/x: "
    )
    assert (await tools["write_file"].invoke({"path": "x"})).startswith(
        "error: invalid arguments for write_file: content: Field required"
    )


async def test_list_files(tools: dict[str, Tool], root: Path) -> None:
    (root / "b" / "c").mkdir(parents=True)
    (root / "b" / "c" / "deep.txt").write_text("")
    (root / "b" / "x.txt").write_text("")
    (root / "a.txt").write_text("")
    (root / "empty").mkdir()

    assert await tools["list_files"].invoke({}) == "\n".join(
        ["a.txt", "b/", "b/c/", "b/c/deep.txt", "b/x.txt", "empty/"]
    )
    assert await tools["list_files"].invoke({"path": "b"}) == "b/c/\nb/c/deep.txt\nb/x.txt"
    assert await tools["list_files"].invoke({"path": "empty"}) == "(empty directory)"
    assert await tools["list_files"].invoke({"path": "a.txt"}) == "error: a.txt is not a directory"
    assert await tools["list_files"].invoke({"path": "nope"}) == "error: no such directory: nope"


@pytest.mark.parametrize("limit", [3, 4, 5])
async def test_list_files_is_bounded(root: Path, limit: int) -> None:
    for name in ("a", "b/x", "b/y", "c"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).touch()
    listing = ["a", "b/", "b/x", "b/y", "c"]

    lines = (await ListFiles(Workspace(root), max_entries=limit).invoke({})).splitlines()

    if limit < len(listing):
        assert lines == [
            *listing[:limit],
            f"[truncated after {limit} entries; list a subdirectory]",
        ]
    else:
        assert lines == listing


def test_list_files_default_bound(tools: dict[str, Tool]) -> None:
    list_files = tools["list_files"]

    assert isinstance(list_files, ListFiles)
    assert list_files.max_entries == MAX_LIST_ENTRIES == 1000


@pytest.mark.parametrize("path", ["../x", "a/../../x", "a/..", "/etc/passwd", "..", "x\x00y"])
async def test_escaping_paths_are_refused(tools: dict[str, Tool], root: Path, path: str) -> None:
    (root / "a").mkdir()

    for name, arguments in [
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned"}),
        ("edit_file", {"path": path, "old_text": "a", "new_text": "b"}),
        ("list_files", {"path": path}),
        ("search_files", {"pattern": ".", "path": path}),
    ]:
        result = await tools[name].invoke(arguments)
        assert result.startswith(f"error: invalid path {path!r}"), (name, result)
    assert not (root.parent / "x").exists()


async def test_symlinked_file_pointing_outside_is_refused(
    tools: dict[str, Tool], root: Path, outside: Path
) -> None:
    (root / "link.txt").symlink_to(outside / "secret.txt")

    read = await tools["read_file"].invoke({"path": "link.txt"})
    write = await tools["write_file"].invoke({"path": "link.txt", "content": "pwned"})
    edit = await tools["edit_file"].invoke(
        {"path": "link.txt", "old_text": "top", "new_text": "pwned"}
    )
    search = await tools["search_files"].invoke({"pattern": "secret", "path": "link.txt"})
    search_all = await tools["search_files"].invoke({"pattern": "secret"})

    for result in (read, write, edit, search):
        assert result == "error: invalid path 'link.txt': it leads outside the workspace"
    assert search_all == "no matches"  # the link is skipped, not followed
    assert (outside / "secret.txt").read_text() == "top secret"


async def test_dangling_symlink_pointing_outside_is_refused(
    tools: dict[str, Tool], root: Path, outside: Path
) -> None:
    (root / "new.txt").symlink_to(outside / "created-by-agent.txt")

    result = await tools["write_file"].invoke({"path": "new.txt", "content": "pwned"})

    assert result.startswith("error: invalid path 'new.txt'")
    assert not (outside / "created-by-agent.txt").exists()


async def test_symlinked_directory_pointing_outside_is_refused(
    tools: dict[str, Tool], root: Path, outside: Path
) -> None:
    (root / "dir").symlink_to(outside, target_is_directory=True)

    read = await tools["read_file"].invoke({"path": "dir/secret.txt"})
    write = await tools["write_file"].invoke({"path": "dir/new/file.txt", "content": "pwned"})
    edit = await tools["edit_file"].invoke(
        {"path": "dir/secret.txt", "old_text": "top", "new_text": "pwned"}
    )
    listing = await tools["list_files"].invoke({"path": "dir"})
    search = await tools["search_files"].invoke({"pattern": "secret", "path": "dir"})
    root_listing = await tools["list_files"].invoke({})
    root_search = await tools["search_files"].invoke({"pattern": "secret"})

    for result in (read, write, edit, listing, search):
        assert result.startswith("error: invalid path 'dir"), result
        assert "outside the workspace" in result
    # Listed as an entry, never followed.
    assert root_listing == "dir"
    assert root_search == "no matches"
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "top secret"


async def test_symlinks_within_the_workspace_work(tools: dict[str, Tool], root: Path) -> None:
    (root / "real").mkdir()
    (root / "real" / "f.txt").write_text("inside")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)

    assert await tools["read_file"].invoke({"path": "alias/f.txt"}) == "inside"
    assert await tools["write_file"].invoke({"path": "alias/g.txt", "content": "ok"}) == (
        "wrote 2 bytes to real/g.txt"
    )


async def test_symlink_loop_is_refused(tools: dict[str, Tool], root: Path) -> None:
    (root / "loop").symlink_to(root / "loop")

    result = await tools["read_file"].invoke({"path": "loop"})

    assert result.startswith("error: invalid path 'loop'")


def test_workspace_root_under_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)

    (tmp_path / "real" / "up").symlink_to(tmp_path, target_is_directory=True)

    workspace = Workspace(tmp_path / "via")

    assert workspace.resolve("a/b") == tmp_path / "real" / "a" / "b"
    assert workspace.resolve(".") == tmp_path / "real"
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace.resolve("up/x")


def test_tool_specs_describe_arguments(tools: dict[str, Tool]) -> None:
    specs = {name: tool.spec() for name, tool in tools.items()}

    assert specs["read_file"].parameters["required"] == ["path"]
    assert set(specs["read_file"].parameters["properties"]) == {"path", "start_line", "end_line"}
    assert specs["write_file"].parameters["required"] == ["path", "content"]
    assert specs["edit_file"].parameters["required"] == ["path", "old_text", "new_text"]
    assert "required" not in specs["list_files"].parameters
    assert specs["search_files"].parameters["required"] == ["pattern"]
    assert set(specs["search_files"].parameters["properties"]) == {"pattern", "path"}
    assert all(spec.parameters["additionalProperties"] is False for spec in specs.values())
    assert all(spec.description for spec in specs.values())


def test_file_tools_are_all_five(tools: dict[str, Tool]) -> None:
    assert list(tools) == ["read_file", "write_file", "edit_file", "list_files", "search_files"]


async def test_edit_replaces_the_one_occurrence(tools: dict[str, Tool], root: Path) -> None:
    (root / "f.py").write_bytes(b"def f():\r\n    return 1\r\n\r\ndef g():\r\n    return 2\r\n")

    result = await tools["edit_file"].invoke(
        {"path": "f.py", "old_text": "def g():\r\n    return 2", "new_text": "def g():\r\n    pass"}
    )

    assert result == "edited f.py: replaced 1 occurrence at line 4"
    # Everything else byte for byte, line endings included.
    assert (root / "f.py").read_bytes() == (
        b"def f():\r\n    return 1\r\n\r\ndef g():\r\n    pass\r\n"
    )


async def test_edit_can_delete_and_handles_unicode(tools: dict[str, Tool], root: Path) -> None:
    (root / "u.txt").write_text("héllo wörld\n")

    result = await tools["edit_file"].invoke({"path": "u.txt", "old_text": "ö", "new_text": ""})

    assert result == "edited u.txt: replaced 1 occurrence at line 1"
    assert (root / "u.txt").read_text() == "héllo wrld\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"path": "f.txt", "old_text": "absent", "new_text": "x"},
            "error: old_text was not found in f.txt; it must match exactly",
        ),
        (
            {"path": "f.txt", "old_text": "same", "new_text": "x"},
            "error: old_text occurs 3 times in f.txt; include more surrounding text",
        ),
        (
            # Overlapping occurrences ("zz" twice in "zzz") are just as ambiguous.
            {"path": "f.txt", "old_text": "zz", "new_text": "x"},
            "error: old_text occurs 2 times in f.txt",
        ),
        (
            {"path": "f.txt", "old_text": "", "new_text": "x"},
            "error: old_text is empty; use write_file",
        ),
        (
            {"path": "f.txt", "old_text": "unique", "new_text": "\ud800"},
            "error: new_text is not valid Unicode text",
        ),
        ({"path": "missing.txt", "old_text": "a", "new_text": "b"}, "error: no such file"),
        ({"path": "sub", "old_text": "a", "new_text": "b"}, "error: sub is a directory"),
        (
            {"path": "binary.bin", "old_text": "PNG", "new_text": "b"},
            "error: binary.bin looks like a binary file",
        ),
        (
            {"path": "latin1.txt", "old_text": "caf", "new_text": "b"},
            "error: latin1.txt is not valid UTF-8 text",
        ),
        (
            {"path": "f.txt", "old_text": "same"},
            "error: invalid arguments for edit_file: new_text: Field required",
        ),
    ],
)
async def test_edit_errors_leave_the_file_alone(
    tools: dict[str, Tool], root: Path, arguments: dict[str, object], message: str
) -> None:
    (root / "f.txt").write_text("same same\nunique\nsame\nzzz\n")
    (root / "sub").mkdir()
    (root / "binary.bin").write_bytes(b"\x89PNG\x00\x01")
    (root / "latin1.txt").write_bytes("café".encode("latin-1"))

    assert (await tools["edit_file"].invoke(arguments)).startswith(message)

    assert (root / "f.txt").read_text() == "same same\nunique\nsame\nzzz\n"
    assert (root / "latin1.txt").read_bytes() == "café".encode("latin-1")


@pytest.fixture
def tree(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("import os\n\ndef main():\n    return 1\n")
    (root / "src" / "app.py").write_text("def app():\r\n    pass\r\n")
    (root / "README.md").write_text("# Project\nno definitions here\n")
    (root / "image.png").write_bytes(b"\x89PNG\x00def main")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("def in git\n")
    return root


async def test_search_files(tools: dict[str, Tool], tree: Path) -> None:
    result = await tools["search_files"].invoke({"pattern": r"^def \w+\(\)"})

    # Name order, depth first; binary files and .git are skipped; \r\n endings are stripped.
    assert result == "src/app.py:1: def app():\nsrc/pkg/mod.py:3: def main():"


async def test_search_files_under_a_path(tools: dict[str, Tool], tree: Path) -> None:
    assert await tools["search_files"].invoke({"pattern": "def", "path": "src/pkg"}) == (
        "src/pkg/mod.py:3: def main():"
    )
    assert await tools["search_files"].invoke({"pattern": "(?i)project", "path": "README.md"}) == (
        "README.md:1: # Project"
    )
    assert await tools["search_files"].invoke({"pattern": "absent"}) == "no matches"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pattern": "("}, "error: invalid regular expression '(': missing )"),
        ({"pattern": "x", "path": "nope"}, "error: no such file or directory: nope"),
        ({"pattern": "PNG", "path": "image.png"}, "error: image.png looks like a binary file"),
        ({"path": "src"}, "error: invalid arguments for search_files: pattern: Field required"),
    ],
)
async def test_search_errors(
    tools: dict[str, Tool], tree: Path, arguments: dict[str, object], message: str
) -> None:
    assert (await tools["search_files"].invoke(arguments)).startswith(message)


@pytest.mark.parametrize("matching", [2, 3, 4])
async def test_search_is_bounded(root: Path, matching: int) -> None:
    (root / "f.txt").write_text("".join(f"hit {i}\nmiss\n" for i in range(1, matching + 1)))

    lines = (await SearchFiles(Workspace(root), max_matches=3).invoke({"pattern": "hit"})).split(
        "\n"
    )

    expected = [f"f.txt:{2 * i - 1}: hit {i}" for i in range(1, min(matching, 3) + 1)]
    if matching > 3:
        expected.append("[stopped after 3 matches; narrow the pattern or the path to see more]")
    assert lines == expected


async def test_search_cuts_long_lines(tools: dict[str, Tool], root: Path) -> None:
    (root / "long.txt").write_text("x" * 1000 + "needle\n")

    result = await tools["search_files"].invoke({"pattern": "needle"})

    assert result == "long.txt:1: " + "x" * MAX_MATCH_LINE_CHARS + "..."
    assert MAX_SEARCH_MATCHES == 200


async def test_search_skips_symlinks_within_the_workspace(
    tools: dict[str, Tool], root: Path
) -> None:
    (root / "real").mkdir()
    (root / "real" / "f.txt").write_text("needle\n")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    (root / "f-link.txt").symlink_to(root / "real" / "f.txt")

    assert await tools["search_files"].invoke({"pattern": "needle"}) == "real/f.txt:1: needle"
    # A symlink named as the path is resolved (and confined) like any other path.
    assert await tools["search_files"].invoke({"pattern": "needle", "path": "alias"}) == (
        "real/f.txt:1: needle"
    )


async def test_a_catastrophic_pattern_cannot_stall_the_worker(root: Path) -> None:
    # With a backtracking engine, (a+)+$ against 40 a's and a b runs for hours holding the GIL.
    (root / "evil.txt").write_text("a" * 40 + "b\n" + ("a" * 5000 + "b\n") * 200)
    tools = {tool.name: tool for tool in file_tools(Workspace(root))}
    started = time.monotonic()
    result = await tools["search_files"].invoke({"pattern": "(a+)+$"})
    assert result == "no matches"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "invalid regular expression"),  # a backreference: RE2 has none
        ("(?=a)", "invalid regular expression"),  # lookaround neither
        ("x" * 1001, "at most 1000 characters"),
    ],
)
async def test_patterns_a_linear_engine_cannot_run_are_refused(
    root: Path, pattern: str, reason: str
) -> None:
    tools = {tool.name: tool for tool in file_tools(Workspace(root))}
    result = await tools["search_files"].invoke({"pattern": pattern})
    assert result.startswith("error:")
    assert reason in result


@pytest.mark.parametrize("tool", ["write_file", "read_file", "edit_file"])
async def test_a_fifo_is_refused_without_blocking(
    tools: dict[str, Tool], root: Path, tool: str
) -> None:
    os.mkfifo(root / "f")
    arguments = {"path": "f", "content": "x", "old_text": "a", "new_text": "b"}
    keys = {"write_file": ("path", "content"), "read_file": ("path",)}.get(
        tool, ("path", "old_text", "new_text")
    )

    result = await asyncio.wait_for(tools[tool].invoke({k: arguments[k] for k in keys}), 5)

    assert result.startswith("error:")


async def test_a_directory_swapped_for_a_link_after_the_check_leads_nowhere(
    root: Path, outside: Path
) -> None:
    """The race an unconfined command left running could win: the path is checked, then a
    directory on it becomes a symlink to outside before the file is opened."""
    workspace = Workspace(root)
    (root / "x").mkdir()
    (root / "x" / "secret.txt").write_text("inside\n")
    checked_read = workspace.resolve("x/secret.txt")
    checked_write = workspace.resolve("x/secret.txt")
    (root / "x" / "secret.txt").unlink()
    (root / "x").rmdir()
    (root / "x").symlink_to(outside)

    with pytest.raises(ToolError, match="outside the workspace"):
        workspace.open(checked_read)
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace.write(checked_write, b"from the tool\n")
    assert (outside / "secret.txt").read_text() == "top secret"


async def test_very_deep_directories_are_listed_and_searched_to_a_bound(
    tools: dict[str, Tool], root: Path
) -> None:
    deep = root
    for _ in range(MAX_DEPTH + 50):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "needle.txt").write_text("needle\n")
    (root / "d" / "top.txt").write_text("needle\n")

    listing = await tools["list_files"].invoke({})
    found = await tools["search_files"].invoke({"pattern": "needle"})

    assert listing.count("/") == sum(range(1, MAX_DEPTH + 1)) + 1
    assert found == "d/top.txt:1: needle"
