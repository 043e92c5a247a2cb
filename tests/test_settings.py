from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.agents.spec import AgentTypeSpec
from app.config import Settings, describe_settings_error


def test_defaults_mirror_the_original_configuration(monkeypatch):
    monkeypatch.delenv("AGENTS_CONFIG_FILE", raising=False)
    settings = Settings()
    assert settings.tiers["free"].concurrent == 1
    assert settings.tiers["free"].per_hour == 10
    assert settings.tiers["pro"].concurrent == 5
    assert settings.tiers["pro"].per_hour == 100
    assert settings.tiers["enterprise"].concurrent == 20
    assert settings.tiers["enterprise"].per_hour == 1000
    assert settings.queues.names() == ["agents-default", "agents-long", "agents-priority"]
    assert (settings.timeouts.default, settings.timeouts.long) == (600, 1800)
    assert settings.timeouts.max_event_wait == 1800
    assert settings.limits.max_steps == 100
    assert settings.limits.max_tokens == 100_000
    assert settings.limits.chunk_size == 10
    assert settings.limits.max_chunks == 50
    types = settings.agent_types
    assert (types["code-assistant"].queue, types["code-assistant"].timeout) == (
        "agents-default",
        600,
    )
    assert types["code-assistant"].max_steps == 50
    assert (types["research"].queue, types["research"].timeout) == ("agents-long", 1800)
    assert types["research"].max_steps == 100
    assert (types["code-review"].timeout, types["code-review"].max_steps) == (300, 30)
    assert types["demo"].provider == "scripted"


def test_toml_file_overrides_and_adds_agent_types(tmp_path, monkeypatch):
    config = tmp_path / "agents.toml"
    config.write_text(
        """
[limits]
chunk_size = 5

[agent_types.code-review]
base_url = "http://127.0.0.1:9999/v1"
model = "local-model"

[agent_types.local]
provider = "openai"
base_url = "http://127.0.0.1:11434/v1"
model = "llama3"
api_key_env = ""
queue = "agents-priority"

[subagents.synthesis]
max_steps = 3
"""
    )
    monkeypatch.setenv("AGENTS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AGENTS_LIMITS__MAX_CHUNKS", "7")
    settings = Settings()
    assert settings.limits.chunk_size == 5
    assert settings.limits.max_chunks == 7
    review = settings.agent_types["code-review"]
    assert review.model == "local-model"
    assert review.max_steps == 30
    assert settings.agent_types["local"].queue == "agents-priority"
    assert "demo" in settings.agent_types
    synthesis = settings.subagents["synthesis"]
    assert synthesis.max_steps == 3
    assert synthesis.description == "Combines findings into one coherent answer."
    assert set(settings.subagents) == {"deep-research", "quick-lookup", "synthesis"}


def test_invalid_settings_name_the_key(tmp_path, monkeypatch):
    config = tmp_path / "agents.toml"
    config.write_text("[agent_types.demo]\nmax_steps = -3\n")
    monkeypatch.setenv("AGENTS_CONFIG_FILE", str(config))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "invalid setting agent_types.demo.max_steps" in describe_settings_error(caught.value)
    monkeypatch.delenv("AGENTS_CONFIG_FILE")
    monkeypatch.setenv("AGENTS_LIMITS__CHUNK_SIZE", "zero")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "limits.chunk_size" in describe_settings_error(caught.value)


def test_configuring_one_tier_keeps_the_others(monkeypatch):
    monkeypatch.delenv("AGENTS_CONFIG_FILE", raising=False)
    monkeypatch.setenv("AGENTS_TIERS__PRO__CONCURRENT", "10")
    settings = Settings()
    assert settings.tier_limits("pro").concurrent == 10
    assert settings.tier_limits("pro").per_hour == 100
    assert settings.tier_limits("free").concurrent == 1
    assert settings.tier_limits("enterprise").per_hour == 1000


def test_heartbeat_must_be_shorter_than_staleness(monkeypatch):
    monkeypatch.delenv("AGENTS_CONFIG_FILE", raising=False)
    monkeypatch.setenv("AGENTS_WORKER__HEARTBEAT_INTERVAL", "90")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "heartbeat_interval" in describe_settings_error(caught.value)


def test_agent_types_without_a_timeout_follow_the_queue_timeouts(monkeypatch):
    monkeypatch.delenv("AGENTS_CONFIG_FILE", raising=False)
    monkeypatch.setenv("AGENTS_TIMEOUTS__DEFAULT", "120")
    monkeypatch.setenv("AGENTS_TIMEOUTS__LONG", "3600")
    settings = Settings()
    assert settings.agent_types["code-assistant"].timeout == 120
    assert settings.agent_types["research"].timeout == 3600
    assert settings.agent_types["code-review"].timeout == 300  # its own
    assert settings.job_timeout() == 3600 + 60


def test_provider_keys_come_from_the_environment_and_never_print(monkeypatch):
    monkeypatch.delenv("AGENTS_CONFIG_FILE", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-settings-secret")
    monkeypatch.setenv("TEST_SUBAGENT_KEY", "sk-subagent-secret")
    monkeypatch.setenv("UNRELATED_KEY", "not-a-provider-key")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    settings = Settings(
        subagents={"helper": AgentTypeSpec(api_key_env="TEST_SUBAGENT_KEY")},
        agent_types={"claude": AgentTypeSpec(provider="anthropic")},
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-changed-later")  # read once, when built
    keys = settings.provider_keys()
    assert keys == {
        "OPENAI_API_KEY": "sk-settings-secret",
        "TEST_SUBAGENT_KEY": "sk-subagent-secret",
    }
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "sk-settings-secret" not in shown
        assert "sk-subagent-secret" not in shown
    # Copies (the CLI fills in embedded servers with model_copy) keep them.
    assert settings.model_copy(update={"redis_url": "redis://x"}).provider_keys() == keys


def _readme_webhooks_toml() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("[webhooks.ci]") :]
    return block[: block.index("```")]


def test_the_readme_webhook_example_is_valid_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTS_CONFIG_FILE", raising=False)
    config = tmp_path / "agents.toml"
    config.write_text(_readme_webhooks_toml())
    monkeypatch.setenv("AGENTS_CONFIG_FILE", str(config))
    old, new = ("whsec_" + base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2))
    monkeypatch.setenv("CI_WEBHOOK_SECRET", f"{old},{new}")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "a plain secret")
    settings = Settings()
    assert settings.webhooks["github"].agent_type == "code-review"
    assert settings.webhook_secrets("ci") == (old, new)
    assert old not in repr(settings)
    assert old not in settings.model_dump_json()


@pytest.mark.parametrize(
    ("endpoint", "secret", "complaint"),
    [
        ({"action": "event"}, None, "WEBHOOK_SECRET: not set"),
        ({"action": "event"}, "not-whsec", "must start with 'whsec_'"),
        ({"action": "start"}, "whsec_" + "A" * 40, "needs an agent_type"),
        ({"action": "start", "agent_type": "nope"}, "whsec_" + "A" * 40, "no agent type 'nope'"),
        ({"action": "event", "prompt_pointer": "no-slash"}, "whsec_" + "A" * 40, "pattern"),
    ],
)
def test_a_misconfigured_webhook_stops_the_start(monkeypatch, endpoint, secret, complaint):
    if secret is None:
        monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    else:
        monkeypatch.setenv("WEBHOOK_SECRET", secret)
    table = {"secret_env": "WEBHOOK_SECRET", "user": "ops@example.com", **endpoint}
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate({"webhooks": {"hook": table}})
    assert complaint in describe_settings_error(raised.value)


def test_the_readme_schedule_example_is_valid_configuration(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("[schedules.nightly-audit]") :]
    config = tmp_path / "agents.toml"
    config.write_text(block[: block.index("```")])
    monkeypatch.setenv("AGENTS_CONFIG_FILE", str(config))
    schedule = Settings().schedules["nightly-audit"]
    assert (schedule.cron, schedule.timezone, schedule.user) == (
        "0 3 * * *",
        "Europe/Berlin",
        "ops@example.com",
    )
