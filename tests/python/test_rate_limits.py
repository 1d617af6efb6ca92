"""Per-key rate limits through the official clients: a 429 in each API's
own shape with the headers the clients read, and their built-in retry
succeeding once the window turns (2 s here: see conftest's qlaud.toml)."""

import time

import anthropic
import openai
import pytest

from conftest import metric, mint


def _fresh_window():
    # Start at the beginning of a 2 s window, so the test's requests fall
    # in one window.
    time.sleep(2 - (time.time() % 2) + 0.05)


def test_openai_client_retries_a_429_and_succeeds(qlaud):
    key = mint(qlaud, {"name": "py_rpm_openai", "max_requests_per_minute": 2})
    strict = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key, max_retries=0)
    patient = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key, max_retries=3)
    msgs = [{"role": "user", "content": "hi"}]
    _fresh_window()
    for _ in range(2):
        strict.chat.completions.create(model="gpt-test", messages=msgs, max_tokens=10)
    with pytest.raises(openai.RateLimitError) as e:
        strict.chat.completions.create(model="gpt-test", messages=msgs, max_tokens=10)
    assert e.value.code == "rate_limit_exceeded"
    h = e.value.response.headers
    assert 1 <= int(h["retry-after"]) <= 2
    assert h["x-ratelimit-limit-requests"] == "2"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith("s")
    before = metric(qlaud, "qlaud_rate_limited_requests_total")
    # Still in the same window: the client's retry waits as told, then
    # the next window admits it.
    reply = patient.chat.completions.create(model="gpt-test", messages=msgs, max_tokens=10)
    assert reply.choices[0].message.content
    assert metric(qlaud, "qlaud_rate_limited_requests_total") > before


def test_anthropic_client_retries_a_429_and_succeeds(qlaud):
    key = mint(qlaud, {"name": "py_rpm_anthropic", "max_requests_per_minute": 2})
    strict = anthropic.Anthropic(base_url=qlaud["base_url"], api_key=key, max_retries=0)
    patient = anthropic.Anthropic(base_url=qlaud["base_url"], api_key=key, max_retries=3)
    msgs = [{"role": "user", "content": "hi"}]
    _fresh_window()
    for _ in range(2):
        strict.messages.create(model="claude-test", max_tokens=10, messages=msgs)
    with pytest.raises(anthropic.RateLimitError) as e:
        strict.messages.create(model="claude-test", max_tokens=10, messages=msgs)
    assert e.value.body["error"]["type"] == "rate_limit_error"
    h = e.value.response.headers
    assert 1 <= int(h["retry-after"]) <= 2
    assert h["anthropic-ratelimit-requests-limit"] == "2"
    assert h["anthropic-ratelimit-requests-remaining"] == "0"
    assert h["anthropic-ratelimit-requests-reset"].endswith("Z")
    before = metric(qlaud, "qlaud_rate_limited_requests_total")
    reply = patient.messages.create(model="claude-test", max_tokens=10, messages=msgs)
    assert reply.content[0].text
    assert metric(qlaud, "qlaud_rate_limited_requests_total") > before


def test_openai_client_reads_the_budget_of_a_success(qlaud):
    key = mint(qlaud, {"name": "py_budget_openai", "max_requests_per_minute": 5,
                       "max_tokens_per_minute": 50000})
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key, max_retries=0)
    msgs = [{"role": "user", "content": "hi"}]
    _fresh_window()
    left = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=msgs, max_tokens=10)
        assert raw.parse().choices[0].message.content
        h = raw.headers
        assert h["x-ratelimit-limit-requests"] == "5"
        assert h["x-ratelimit-limit-tokens"] == "50000"
        assert h["x-ratelimit-reset-requests"].endswith("s")
        assert "anthropic-ratelimit-requests-limit" not in h
        left.append((int(h["x-ratelimit-remaining-requests"]),
                     int(h["x-ratelimit-remaining-tokens"])))
    assert [r for r, _ in left] == [4, 3]
    assert left[1][1] < left[0][1] < 50000
    # A stream carries them on its head.
    with client.chat.completions.with_streaming_response.create(
            model="gpt-test", messages=msgs, max_tokens=10, stream=True) as raw:
        assert raw.headers["x-ratelimit-remaining-requests"] == "2"
        assert any(chunk.choices for chunk in raw.parse())


def test_anthropic_client_reads_the_budget_of_a_success(qlaud):
    key = mint(qlaud, {"name": "py_budget_anthropic", "max_requests_per_minute": 5})
    client = anthropic.Anthropic(base_url=qlaud["base_url"], api_key=key, max_retries=0)
    msgs = [{"role": "user", "content": "hi"}]
    _fresh_window()
    for left in (4, 3):
        raw = client.messages.with_raw_response.create(
            model="claude-test", max_tokens=10, messages=msgs)
        assert raw.parse().content[0].text
        h = raw.headers
        assert h["anthropic-ratelimit-requests-limit"] == "5"
        assert h["anthropic-ratelimit-requests-remaining"] == str(left)
        assert h["anthropic-ratelimit-requests-reset"].endswith("Z")
        # Only the limits set: this key has no tokens limit.
        assert "anthropic-ratelimit-tokens-limit" not in h
        assert "x-ratelimit-limit-requests" not in h
    # A key without limits: no budget headers.
    free = anthropic.Anthropic(base_url=qlaud["base_url"],
                               api_key=mint(qlaud, {"name": "py_budget_free"}), max_retries=0)
    raw = free.messages.with_raw_response.create(model="claude-test", max_tokens=10, messages=msgs)
    assert not [k for k in raw.headers if k.startswith("anthropic-ratelimit")]
