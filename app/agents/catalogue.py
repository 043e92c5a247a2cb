"""The built-in agent types and subagent specs. Settings add to them and may override their
fields (``[agent_types.NAME]``, ``[subagents.NAME]``)."""

from __future__ import annotations

from app.agents.demo import DEMO_AGENT
from app.agents.spec import AgentTypeSpec


def builtin_agent_types() -> dict[str, AgentTypeSpec]:
    """``code-assistant``, ``research``, ``code-review`` and ``demo`` (scripted, no key)."""
    return {
        "code-assistant": AgentTypeSpec(
            description="Reads, edits, builds and tests code in its workspace.",
            system_prompt="You are a careful senior software engineer working in a repository.",
            capabilities=["bash", "files", "tasks"],
            queue="agents-default",
            max_steps=50,
        ),
        "research": AgentTypeSpec(
            description="Investigates a question in depth, fanning out to subagents.",
            system_prompt=(
                "You are a meticulous researcher. Split broad questions into parts, hand them "
                "to subagents, then synthesise what they found. Cite what you find."
            ),
            capabilities=["files", "tasks", "subagents"],
            subagents=["deep-research", "quick-lookup", "synthesis"],
            queue="agents-long",
            max_steps=100,
            max_depth=3,
        ),
        "code-review": AgentTypeSpec(
            description="Reviews code and reports problems.",
            system_prompt="You are a thorough code reviewer. Report concrete problems.",
            capabilities=["files"],
            queue="agents-default",
            timeout=300,
            max_steps=30,
        ),
        "demo": DEMO_AGENT,
    }


def builtin_subagents() -> dict[str, AgentTypeSpec]:
    """``deep-research``, ``quick-lookup`` and ``synthesis``, which ``research`` starts."""
    return {
        "deep-research": AgentTypeSpec(
            description="Investigates one sub-question thoroughly and reports findings.",
            system_prompt=(
                "You research one question thoroughly, write your findings to a file in the "
                "workspace, and report what you found."
            ),
            capabilities=["files"],
            tools=["read_file", "search_files", "write_file"],
            workspace="parent",
            queue="agents-long",
            max_steps=50,
        ),
        "quick-lookup": AgentTypeSpec(
            description="Answers a narrow factual question quickly.",
            system_prompt="You answer one narrow question quickly and precisely.",
            capabilities=["files"],
            tools=["read_file", "search_files"],
            workspace="parent",
            queue="agents-default",
            max_steps=10,
        ),
        "synthesis": AgentTypeSpec(
            description="Combines findings into one coherent answer.",
            system_prompt=(
                "You combine the findings you are given, and those in the workspace's files, "
                "into one coherent answer."
            ),
            capabilities=["files"],
            tools=["read_file", "write_file"],
            workspace="parent",
            queue="agents-default",
            max_steps=10,
        ),
    }
