"""A scripted agent type that runs anywhere, with no model and no API key."""

from __future__ import annotations

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn

DEMO_AGENT = AgentTypeSpec(
    description="Writes the prompt to note.txt, reads it back and reports what it says.",
    provider="scripted",
    model="scripted",
    api_key_env=None,
    system_prompt="You are a demo agent. You keep notes in files in your workspace.",
    capabilities=["files"],
    queue="agents-default",
    max_steps=10,
    timeout=60,
    script=[
        ScriptedTurn(
            content="I will write the prompt to a note.",
            tool_calls=[
                ScriptedToolCall(
                    name="write_file", arguments={"path": "note.txt", "content": "{prompt}"}
                )
            ],
        ),
        ScriptedTurn(
            content="Now I will read the note back.",
            tool_calls=[ScriptedToolCall(name="read_file", arguments={"path": "note.txt"})],
        ),
        ScriptedTurn(content="The note in my workspace says: {last_tool_result}"),
    ],
)
