from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.executions.schemas import ChildSummary, ExecutionOut, LogEntry


class ExecutionOwner(BaseModel):
    """The user an execution belongs to."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str


class AdminExecution(ExecutionOut):
    user: ExecutionOwner
    logs_count: int = Field(description="How many log rows the execution has.")


class AdminExecutionDetail(AdminExecution):
    logs: list[LogEntry] = Field(description="The latest logs, oldest first.")
    children: list[ChildSummary] = Field(description="Subagent executions it started.")


class AdminExecutionPage(BaseModel):
    items: list[AdminExecution]
    total: int
    page: int
    per_page: int


class AdminLogPage(BaseModel):
    items: list[LogEntry] = Field(description="Logs oldest first.")
    total: int = Field(description="How many logs match the cursor and filters.")
    page: int
    per_page: int
