"""The scripted driver: stateless turn selection and placeholder substitution."""

import asyncio
import time

import pytest

from app.agents.drivers.scripted import ScriptedDriver
from app.agents.errors import ScriptExhausted
from app.agents.spec import ScriptedToolCall, ScriptedTurn
from app.agents.state import Message


def conversation(*messages: tuple[str, str | None]) -> list[Message]:
    return [Message(role=role, content=content) for role, content in messages]  # type: ignore[arg-type]


async def test_turn_is_chosen_by_the_number_of_assistant_messages() -> None:
    driver = ScriptedDriver([ScriptedTurn(content="zero"), ScriptedTurn(content="one")])
    history = conversation(("system", "s"), ("user", "u"))

    first = await driver.complete(history, [])
    second = await driver.complete([*history, first.message], [])
    again = await ScriptedDriver(driver.script).complete([*history, first.message], [])

    assert (first.message.content, second.message.content) == ("zero", "one")
    assert again.message == second.message
    with pytest.raises(ScriptExhausted):
        await driver.complete([*history, first.message, second.message], [])


async def test_placeholders_are_substituted_everywhere_and_only_them() -> None:
    turn = ScriptedTurn(
        content='{"json": {prompt}} {last_tool_result} {other} {0}',
        tool_calls=[
            ScriptedToolCall(
                name="t",
                arguments={"a": "{prompt}", "b": {"c": ["x{last_tool_result}y", 3, None]}},
            ),
            ScriptedToolCall(name="u"),
        ],
        input_tokens=7,
        output_tokens=2,
    )
    history = conversation(
        ("system", "sys"),
        ("user", "P {last_tool_result}"),
        ("assistant", None),
        ("tool", "old"),
        ("user", "a later user message"),
        ("assistant", "x"),
        ("tool", "R"),
    )
    driver = ScriptedDriver([ScriptedTurn(), ScriptedTurn(), turn])

    response = await driver.complete(history, [])

    message = response.message
    assert message.role == "assistant"
    # The prompt's own "{last_tool_result}" is not substituted a second time.
    assert message.content == '{"json": P {last_tool_result}} R {other} {0}'
    assert message.tool_calls[0].arguments == {
        "a": "P {last_tool_result}",
        "b": {"c": ["xRy", 3, None]},
    }
    assert [c.id for c in message.tool_calls] == ["call_2_0", "call_2_1"]
    assert message.tool_calls[1].arguments == {}
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 2)
    # The script itself is left untouched.
    assert turn.tool_calls[0].arguments["a"] == "{prompt}"


async def test_no_tool_result_yet_substitutes_empty() -> None:
    driver = ScriptedDriver([ScriptedTurn(content="[{last_tool_result}]")])

    response = await driver.complete(conversation(("user", "u")), [])

    assert response.message.content == "[]"


async def test_delay_is_cancellable() -> None:
    driver = ScriptedDriver([ScriptedTurn(content="late", delay_seconds=5)])
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await driver.complete(conversation(("user", "u")), [])

    assert time.monotonic() - started < 1
