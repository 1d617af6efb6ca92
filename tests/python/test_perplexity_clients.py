"""A Perplexity model behind a qlaud key, through the official clients as
their users call them, changing only the base URL and the key:
Perplexity's own `perplexityai` client (its Agent API, the Responses
shape, with web search billed per invocation) and the `openai` client
(chat completions, translated; Responses, passed through)."""

import json
import urllib.request

import openai
import pytest
from perplexity import Perplexity

from conftest import mint

# `sonar-test` in conftest.py: $1 per million tokens either way, $0.005 a
# web search.
SEARCH_MICROS = 5_000


def stats(mock):
    with urllib.request.urlopen(f"http://{mock['addr']}/_mock/stats") as resp:
        return json.load(resp)


@pytest.fixture
def key(qlaud):
    return mint(qlaud, {"name": "py_perplexity", "max_spend_usd": 1})


def test_perplexity_client_web_search_is_billed_per_invocation(qlaud, mock, key):
    client = Perplexity(api_key=key, base_url=qlaud["base_url"], max_retries=0)
    r = client.responses.create(
        model="sonar-test",
        input="what happened today",
        tools=[{"type": "web_search", "search_context_size": "high"}],
    )
    assert r.status == "completed"
    assert r.output_text == "Hello from mock: what happened today"
    assert r.output[0].type == "search_results"
    assert r.usage.tool_calls_details["web_search"].invocation == 2
    sent = stats(mock)["last_body"]
    assert stats(mock)["last_path"] == "/v1/responses"
    assert sent["model"] == "sonar-upstream" and sent["max_steps"] == 5
    raw = r.usage.model_dump()
    tokens = r.usage.input_tokens + r.usage.output_tokens
    assert raw["cost_micros"] == tokens + 2 * SEARCH_MICROS

    # Streamed: the events the client's iterator reads, the same bill.
    events = list(client.responses.create(
        model="sonar-test", input="stream it", tools=[{"type": "web_search"}], stream=True,
    ))
    done = [e for e in events if e.type == "response.completed"][0]
    u = done.response.usage
    assert u.model_dump()["cost_micros"] == u.input_tokens + u.output_tokens + 2 * SEARCH_MICROS


def test_perplexity_client_errors_keep_its_shape(qlaud, key):
    client = Perplexity(api_key=key, base_url=qlaud["base_url"], max_retries=0)
    import perplexity

    with pytest.raises(perplexity.BadRequestError) as e:
        client.responses.create(model="sonar-test", input="x", tools=[{"type": "sandbox"}])
    assert "sandbox_calls" in str(e.value)
    bad = Perplexity(api_key="qlk_live_wrong", base_url=qlaud["base_url"], max_retries=0)
    with pytest.raises(perplexity.AuthenticationError):
        bad.responses.create(model="sonar-test", input="x")


def test_openai_client_reaches_perplexity_both_ways(qlaud, mock):
    key = mint(qlaud, {"name": "py_perplexity_openai", "max_spend_usd": 1})
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key, max_retries=0)
    chat = client.chat.completions.create(
        model="sonar-test", messages=[{"role": "user", "content": "hi there"}])
    assert chat.choices[0].message.content == "Hello from mock: hi there"
    assert stats(mock)["last_path"] == "/v1/responses"
    assert chat.usage.model_dump()["cost_micros"] == chat.usage.total_tokens

    chunks = list(client.chat.completions.create(
        model="sonar-test", messages=[{"role": "user", "content": "stream"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from mock: stream"

    r = client.responses.create(model="sonar-test", input="search",
                                tools=[{"type": "web_search"}])
    assert r.output_text == "Hello from mock: search"
    assert r.usage.model_dump()["cost_micros"] == (
        r.usage.input_tokens + r.usage.output_tokens + 2 * SEARCH_MICROS)
