"""What Claude Code and the official clients call besides messages and chat
completions, through the `anthropic` and `openai` packages, unchanged:
`messages.count_tokens` (plain and beta), `beta.messages.create` with
`betas=[…]` on `/v1/messages?beta=true`, and `models.retrieve` on both
clients."""

import json
import urllib.request

import anthropic
import openai
import pytest

from conftest import mint

# As Claude Code sends them: structured system blocks with cache_control, tools.
SYSTEM = [{"type": "text", "text": "You are a coding agent.",
           "cache_control": {"type": "ephemeral"}}]
TOOLS = [{"name": "Bash", "description": "Run a shell command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]
MESSAGES = [{"role": "user", "content": "list the files"}]


def mock_stats(mock):
    with urllib.request.urlopen(f"http://{mock['addr']}/_mock/stats") as resp:
        return json.load(resp)


def header(stats, name):
    return next((v for n, v in stats["last_headers"] if n == name), None)


def usage_totals(qlaud, key):
    req = urllib.request.Request(qlaud["base_url"] + "/v1/usage",
                                 headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)["totals"]


def test_count_tokens_for_claude_is_the_providers_count(anthropic_client, mock):
    r = anthropic_client.messages.count_tokens(
        model="claude-test", system=SYSTEM, tools=TOOLS, messages=MESSAGES)
    # The mock's rule: 5 system words + 3 message words + 10 for the tool.
    assert r.input_tokens == 18
    seen = mock_stats(mock)
    assert seen["last_path"] == "/v1/messages/count_tokens"
    assert seen["last_body"]["model"] == "claude-upstream"
    assert seen["last_body"]["system"] == SYSTEM and seen["last_body"]["tools"] == TOOLS


def test_count_tokens_for_gpt_is_a_local_estimate(anthropic_client, mock):
    before = mock_stats(mock)["requests"]
    short = anthropic_client.messages.count_tokens(
        model="gpt-test", system=SYSTEM, tools=TOOLS, messages=MESSAGES).input_tokens
    longer = anthropic_client.messages.count_tokens(
        model="gpt-test", system=SYSTEM, tools=TOOLS,
        messages=[{"role": "user", "content": "list the files " * 20}]).input_tokens
    assert 0 < short < longer
    assert mock_stats(mock)["requests"] == before, "no provider was asked"


# Claude Code's TypeScript client puts `?beta=true` on every beta call; this
# Python client marks them only internally, so the query is added by hand.
CLAUDE_CODE_QUERY = {"beta": "true"}


def test_beta_calls_as_claude_code_makes_them(anthropic_client, mock):
    raw = anthropic_client.beta.messages.with_raw_response.count_tokens(
        model="claude-test", system=SYSTEM, messages=MESSAGES,
        betas=["token-counting-2024-11-01"], extra_query=CLAUDE_CODE_QUERY)
    assert "beta=true" in str(raw.http_request.url)
    assert raw.parse().input_tokens == 5 + 3
    # Passed on exactly as the client sent it (this one adds its own entry).
    sent = raw.http_request.headers["anthropic-beta"]
    assert "token-counting-2024-11-01" in sent
    assert header(mock_stats(mock), "anthropic-beta") == sent

    betas = ["interleaved-thinking-2025-05-14", "context-management-2025-06-27"]
    raw = anthropic_client.beta.messages.with_raw_response.create(
        model="claude-test", max_tokens=100, system=SYSTEM, tools=TOOLS, messages=MESSAGES,
        betas=betas, extra_query=CLAUDE_CODE_QUERY)
    assert "beta=true" in str(raw.http_request.url)
    assert raw.parse().content[0].text == "Hello from mock: list the files"
    seen = mock_stats(mock)
    assert seen["last_path"] == "/v1/messages"
    assert header(seen, "anthropic-beta") == raw.http_request.headers["anthropic-beta"]
    assert all(b in header(seen, "anthropic-beta") for b in betas)


def test_counting_is_free_and_works_at_the_cap(qlaud, broke_key):
    key = mint(qlaud, {"name": "py_counter", "max_spend_usd": 1})
    client = anthropic.Anthropic(base_url=qlaud["base_url"], api_key=key, max_retries=0)
    before = usage_totals(qlaud, key)
    for model in ("claude-test", "gpt-test"):
        client.messages.count_tokens(model=model, system=SYSTEM, tools=TOOLS, messages=MESSAGES)
        client.beta.messages.count_tokens(model=model, messages=MESSAGES,
                                          extra_query=CLAUDE_CODE_QUERY)
    assert usage_totals(qlaud, key) == before

    broke = anthropic.Anthropic(base_url=qlaud["base_url"], api_key=broke_key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as info:
        broke.messages.create(model="claude-test", max_tokens=100, messages=MESSAGES)
    assert info.value.status_code == 402
    assert broke.messages.count_tokens(model="claude-test", messages=MESSAGES).input_tokens == 3
    assert broke.messages.count_tokens(model="gpt-test", messages=MESSAGES).input_tokens > 0


def test_count_tokens_errors_are_the_clients_own(qlaud, anthropic_client):
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.count_tokens(model="no-such-model", messages=MESSAGES)
    bad = anthropic.Anthropic(base_url=qlaud["base_url"], api_key="qlk_live_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="claude-test", messages=MESSAGES)


def test_models_retrieve_on_both_clients(anthropic_client, openai_client):
    claude = anthropic_client.models.retrieve("claude-test")
    assert (claude.id, claude.type) == ("claude-test", "model") and claude.display_name
    gpt = openai_client.models.retrieve("gpt-test")
    assert (gpt.id, gpt.object, gpt.owned_by) == ("gpt-test", "model", "openai")
    with pytest.raises(anthropic.NotFoundError) as a:
        anthropic_client.models.retrieve("no-such-model")
    assert a.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(openai.NotFoundError) as o:
        openai_client.models.retrieve("no-such-model")
    assert o.value.code == "model_not_found"


def test_gpt_stream_reports_input_tokens_at_message_start(anthropic_client):
    events = list(anthropic_client.messages.create(
        model="gpt-test", max_tokens=100, stream=True, system="be brief",
        messages=[{"role": "user", "content": "hi there"}]))
    start = events[0]
    assert start.type == "message_start" and start.message.usage.input_tokens > 0
    delta = [e for e in events if e.type == "message_delta"][0]
    # The provider's own count at the end (the mock's: 2 + 2 words).
    assert delta.usage.input_tokens == 4
