"""Summarise a pyinstrument session of the worker: where its time goes.

    .venv/bin/python -m bench.profile_summary bench/results/engine-<stamp>-worker.pyisession

pyinstrument samples the main thread's stack on a wall clock. Samples whose innermost Python
frame is ``asyncio.Runner.run`` are the event loop itself: waiting for I/O plus uvloop's own C
code; they are reported apart ("event loop") and the other shares are shares of the rest
("busy"). On a loaded machine wall-clock samples also include time the process was runnable but
not running, which inflates every entry alike.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

_SELF = "[self]"
_IMPORT = "_find_and_load"
_EVENT_LOOP = ("run", "asyncio/runners.py")
_IDLE_BUILTINS = {"select", "poll", "epoll.poll", "kqueue.control"}
_SKIP_INCLUSIVE = ("app/cli.py", "workers/runner.py")


def _name(frame: Any) -> str:
    return f"{frame.function}  {frame.file_path_short or '?'}:{frame.line_no or 0}"


def _package(path: str | None) -> str:
    if not path or path.startswith("<"):
        return "builtins"
    head = path.split("/", 1)[0]
    return head.removesuffix(".py")


def summarise(path: str, top: int = 20) -> dict[str, Any]:
    from pyinstrument.session import Session

    session = Session.load(path)
    root = session.root_frame(trim_stem=False)
    by_function: dict[str, float] = defaultdict(float)
    by_package: dict[str, float] = defaultdict(float)
    app_inclusive: dict[str, float] = defaultdict(float)
    event_loop = imports = 0.0

    def walk(frame: Any, owner: Any, inherited: str, app_stack: frozenset[str]) -> float:
        """Adds ``frame``'s self time; returns the time at or below it left out (loop, imports)."""
        nonlocal event_loop, imports
        if frame.function == _IMPORT:
            imports += frame.time  # start-up, not work: left out of every table
            return frame.time
        is_self = frame.function == _SELF
        subject = owner if is_self else frame  # a [self] leaf is its parent's own time
        own = frame.time if is_self else frame.time - sum(c.time for c in frame.children)
        package = _package(subject.file_path_short)
        if package == "builtins":
            package = inherited  # time in a built-in counts for the library that called it
        loop_time = 0.0
        if own > 0:
            if (subject.function, subject.file_path_short) == _EVENT_LOOP or (
                str(subject.function).split(".")[-1] in _IDLE_BUILTINS
            ):
                loop_time = own
                event_loop += own
            else:
                by_function[_name(subject)] += own
                by_package[package] += own
        name = _name(frame)
        counted = (
            not is_self
            and (frame.file_path_short or "").startswith(("app/", "workers/"))
            and not (frame.file_path_short or "").startswith(_SKIP_INCLUSIVE)
            and name not in app_stack
        )
        stack = app_stack | {name} if counted else app_stack
        for child in frame.children:
            loop_time += walk(child, frame, package, stack)
        if counted:
            app_inclusive[name] += frame.time - loop_time
        return loop_time

    if root is not None:
        walk(root, root, "builtins", frozenset())
    busy = sum(by_function.values())

    def rows(table: dict[str, float], limit: int) -> list[dict[str, Any]]:
        ordered = sorted(table.items(), key=lambda item: item[1], reverse=True)[:limit]
        return [
            {
                "name": name,
                "seconds": round(value, 3),
                "percent_of_busy": round(100 * value / busy, 1) if busy else None,
            }
            for name, value in ordered
        ]

    return {
        "recorded_seconds": round(session.duration, 3),
        "process_cpu_seconds": round(session.cpu_time, 3) if session.cpu_time else None,
        "event_loop_seconds": round(event_loop, 3),
        "import_seconds": round(imports, 3),
        "busy_seconds": round(busy, 3),
        "by_package": rows(by_package, top),
        "top_self": rows(by_function, top),
        "top_app_inclusive": rows(app_inclusive, top),
    }


def _table(title: str, rows: list[dict[str, Any]], code: bool = True) -> list[str]:
    lines = ["", title, "", "| | s | % of busy |", "|---|---:|---:|"]
    for row in rows:
        name = f"`{row['name']}`" if code else row["name"]
        lines.append(f"| {name} | {row['seconds']:.3f} | {row['percent_of_busy']} |")
    return lines


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"Worker profile (pyinstrument, wall-clock samples): {summary['recorded_seconds']} s "
        f"recorded, process CPU {summary['process_cpu_seconds']} s; event loop (waiting + "
        f"uvloop internals) {summary['event_loop_seconds']} s, imports at start-up "
        f"{summary['import_seconds']} s, busy {summary['busy_seconds']} s."
    ]
    lines += _table("Busy time by package (self time):", summary["by_package"], code=False)
    lines += _table("Top functions by self time:", summary["top_self"])
    lines += _table("Application functions by inclusive busy time:", summary["top_app_inclusive"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("session", help="a .pyisession file")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(render(summarise(args.session, args.top)))


if __name__ == "__main__":
    main()
