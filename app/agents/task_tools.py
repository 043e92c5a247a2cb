"""The ``task_plan`` tool: the model keeps a short plan that it sees in every request."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from app.agents.state import Task, TaskStatus
from app.agents.tools import Tool, ToolContext

MAX_TASKS = 50
MAX_TASK_TITLE_CHARS = 200

_MARKS: dict[TaskStatus, str] = {"done": "[x]", "in_progress": "[~]", "pending": "[ ]"}


class PlannedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=MAX_TASK_TITLE_CHARS)
    status: TaskStatus = Field(default="pending")


class TaskPlanArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[PlannedTask] = Field(
        max_length=MAX_TASKS,
        description="The complete plan, in order; it replaces the previous one. "
        "An empty list clears the plan.",
    )


class TaskPlan(Tool):
    name = "task_plan"
    description = (
        "Record your plan for the work as a list of tasks, each pending, in_progress or done. "
        "Every call replaces the whole plan, so send all tasks each time, with updated "
        "statuses. The current plan is shown to you at the top of the conversation."
    )
    Args = TaskPlanArgs

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, TaskPlanArgs)  # invoke() validated against Args
        context.tasks = [Task(title=task.title, status=task.status) for task in args.tasks]
        if not context.tasks:
            return "plan cleared"
        counts = {
            status: sum(1 for task in context.tasks if task.status == status)
            for status in ("done", "in_progress", "pending")
        }
        return (
            f"plan updated: {len(context.tasks)} tasks ({counts['done']} done, "
            f"{counts['in_progress']} in progress, {counts['pending']} pending)"
        )


def render_plan(tasks: Sequence[Task]) -> str:
    """The plan as the model is shown it, one ``[x]``/``[~]``/``[ ]`` line per task."""
    lines = ["Current plan ([x] done, [~] in progress, [ ] pending):"]
    lines.extend(f"{_MARKS[task.status]} {task.title}" for task in tasks)
    return "\n".join(lines)
