"""API tokens a user manages: created (shown once), listed, revoked, expiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tests.fixtures.processes import agents, service_env


async def test_a_user_manages_their_tokens(client, alice, bob):
    created = await client.post(
        "/api/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    laptop = {"Authorization": f"Bearer {body['token']}"}
    assert (await client.get("/api/me", headers=laptop)).json()["email"] == "alice@example.com"
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    listed = (await client.get("/api/tokens", headers=alice.headers)).json()
    assert [t["name"] for t in listed] == ["test", "laptop"]
    assert all("token" not in t for t in listed)
    assert (
        await client.delete(f"/api/tokens/{body['id']}", headers=bob.headers)
    ).status_code == 404
    assert (
        await client.delete(f"/api/tokens/{body['id']}", headers=alice.headers)
    ).status_code == 204
    assert (await client.get("/api/me", headers=laptop)).status_code == 401  # revoked: at once
    assert (await client.get("/api/me", headers=alice.headers)).status_code == 200


async def test_an_expired_token_is_refused(client, alice, db):
    created = (
        await client.post("/api/tokens", json={"name": "short"}, headers=alice.headers)
    ).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert (await client.get("/api/me", headers=headers)).status_code == 200
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": created["id"]},
        )
    assert (await client.get("/api/me", headers=headers)).status_code == 401


async def test_the_revoke_token_command(settings, tmp_path, client, alice):
    env = service_env(settings, tmp_path)
    result = agents("revoke-token", "--email", "alice@example.com", "--name", "test", env=env)
    assert result.returncode == 0, result.stderr
    assert "revoked 1 token" in result.stdout
    assert (await client.get("/api/me", headers=alice.headers)).status_code == 401
