"""File tools: what they do inside the workspace, and that nothing escapes it."""

import os
from pathlib import Path

import pytest

from app.agents.file_tools import MAX_LIST_ENTRIES, MAX_READ_CHARS, ListFiles, file_tools
from app.agents.tools import Tool, ToolError
from app.agents.workspace import Workspace


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return workspace


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
        ("list_files", {"path": path}),
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

    assert read == "error: invalid path 'link.txt': it leads outside the workspace"
    assert write == "error: invalid path 'link.txt': it leads outside the workspace"
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
    listing = await tools["list_files"].invoke({"path": "dir"})
    root_listing = await tools["list_files"].invoke({})

    for result in (read, write, listing):
        assert result.startswith("error: invalid path 'dir"), result
        assert "outside the workspace" in result
    # Listed as an entry, never followed.
    assert root_listing == "dir"
    assert sorted(os.listdir(outside)) == ["secret.txt"]


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
    assert "required" not in specs["list_files"].parameters
    assert all(spec.parameters["additionalProperties"] is False for spec in specs.values())
    assert all(spec.description for spec in specs.values())
