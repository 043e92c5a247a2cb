"""``GET /api/agents/{id}/messages``: the conversation, for the owner (and admins) only."""

from __future__ import annotations

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.users import make_account


async def test_the_conversation_is_paged_in_order_and_private(
    alice, bob, sessions, make_settings, run_worker
):
    admin = await make_account(sessions, "root@example.com", is_admin=True)
    spec = AgentTypeSpec(
        provider="scripted",
        system_prompt="be brief",
        capabilities=["files"],
        script=[
            ScriptedTurn(
                content="looking",
                tool_calls=[ScriptedToolCall(name="list_files", arguments={"path": "."})],
            ),
            ScriptedTurn(content="nothing there"),
        ],
    )
    settings = make_settings(agent_types={"lister": spec})
    async with api_client(settings) as http:
        created = await start(http, alice, "lister")
        await run_worker(settings)
        url = f"/api/agents/{created['id']}/messages"
        everything = (await http.get(url, headers=alice.headers)).json()
        second_page = (await http.get(f"{url}?after_seq=1&limit=2", headers=alice.headers)).json()
        as_admin = await http.get(url, headers=admin.headers)
        as_bob = await http.get(url, headers=bob.headers)
        too_many = await http.get(f"{url}?limit=501", headers=alice.headers)

    assert [(m["seq"], m["role"]) for m in everything] == [
        (0, "system"), (1, "user"), (2, "assistant"), (3, "tool"), (4, "assistant")
    ]  # fmt: skip
    assert everything[0]["content"] == "be brief"
    call = everything[2]["tool_calls"][0]
    assert (call["name"], call["arguments"]) == ("list_files", {"path": "."})
    assert everything[3]["tool_call_id"] == call["id"]
    assert everything[3]["name"] == "list_files"
    assert everything[3]["content"] == "(empty directory)"
    assert everything[4]["content"] == "nothing there"
    assert [m["seq"] for m in second_page] == [2, 3]
    assert as_admin.status_code == 200
    assert as_bob.status_code == 404
    assert too_many.status_code == 422
