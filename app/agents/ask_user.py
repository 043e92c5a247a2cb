"""The ``ask_user`` tool: the model asks the user a question and the agent parks until answered.

The agent applies the question after the step: it sets ``state.pending_question`` and stops
with ``stop_reason = "awaiting_input"``; :meth:`~app.agents.agent.Agent.answer` resumes it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.agents.tools import Tool, ToolContext, ToolError

# The tool result the model sees; the answer itself arrives as the next user message.
QUESTION_SENT = "The question was sent to the user; their answer follows as a user message."
MAX_QUESTION_CHARS = 4000


class AskUserArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS, description="The question for the user."
    )


class AskUser(Tool):
    name = "ask_user"
    description = (
        "Ask the user a question when you cannot go on without their input (a missing "
        "requirement, a choice only they can make). Your work pauses until they answer; their "
        "answer arrives as the next user message. Ask everything you need in one question."
    )
    Args = AskUserArgs

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, AskUserArgs)  # invoke() validated against Args
        if not args.question.strip():
            raise ToolError("the question is empty")
        context.questions.append(args.question)
        return QUESTION_SENT
