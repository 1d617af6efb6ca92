"""The official `openai` package against qlaud, unchanged: base_url and a qlk
key are all it is given."""

import openai
import pytest

from conftest import metric, mock_stats

USER = [{"role": "user", "content": "hi there"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_plain_completion_with_cost(openai_client):
    r = openai_client.chat.completions.create(model="gpt-test", messages=USER)
    assert r.model == "gpt-test"
    assert r.choices[0].message.content == "Hello from mock: hi there"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, 5)
    # 2 × $1.25 + 5 × $10 per million tokens = 52.5 → 53 µ$, rounded up.
    assert r.usage.cost_micros == 53


def test_stream_with_and_without_usage(openai_client):
    chunks = list(openai_client.chat.completions.create(
        model="gpt-test", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from mock: hi there"
    assert all(c.choices for c in chunks), "no usage-only chunk unless asked"
    chunks = list(openai_client.chat.completions.create(
        model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.cost_micros == 53


def test_tool_round_trip(openai_client):
    ask = {"role": "user", "content": "what is the weather in Paris"}
    r = openai_client.chat.completions.create(model="gpt-test", messages=[ask], tools=TOOLS)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    call = msg.tool_calls[0]
    assert call.function.name == "get_weather"
    # The client echoes the assistant message back as it got it.
    r2 = openai_client.chat.completions.create(model="gpt-test", tools=TOOLS, messages=[
        ask, msg.model_dump(exclude_none=False),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert r2.choices[0].message.content == "The tool said: sunny"


def test_image_input(openai_client):
    r = openai_client.chat.completions.create(model="gpt-test", messages=[{
        "role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert r.choices[0].message.content == "Hello from mock: look [image]"


def test_claude_through_chat_completions(openai_client):
    r = openai_client.chat.completions.create(
        model="claude-test", messages=[{"role": "system", "content": "be brief"}] + USER)
    assert r.model == "claude-test"
    assert r.choices[0].message.content == "Hello from mock: hi there"
    assert r.usage.prompt_tokens == 4
    chunks = list(openai_client.chat.completions.create(
        model="claude-test", messages=USER, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from mock: hi there"
    assert chunks[-1].usage.completion_tokens == 5
    r = openai_client.chat.completions.create(
        model="claude-test", tools=TOOLS, messages=[{"role": "user", "content": "weather?"}])
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_echo_and_models(openai_client):
    r = openai_client.chat.completions.create(model="echo", messages=USER)
    assert r.choices[0].message.content == "echo: hi there"
    ids = [m.id for m in openai_client.models.list()]
    assert "claude-test" in ids and "gpt-test" in ids and "echo" in ids


def test_errors_are_the_clients_own_exceptions(qlaud, openai_client):
    bad = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key="qlk_live_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-test", messages=USER)
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(model="no-such-model", messages=USER)
    assert info.value.code == "model_not_found"
    cases = [("gpt-error-500", openai.InternalServerError),
             ("gpt-error-429", openai.RateLimitError),
             ("gpt-error-400", openai.BadRequestError)]
    for model, exc in cases:
        with pytest.raises(exc):
            openai_client.chat.completions.create(model=model, messages=USER)
    with pytest.raises(openai.APIStatusError) as info:
        openai_client.chat.completions.create(model="gpt-hang", messages=USER)
    assert info.value.status_code == 504


def test_over_the_cap_is_402_and_not_retried(qlaud, mock, broke_key):
    # Default retries stay on; qlaud counts every refusal, so a retried
    # call would show as more than one.
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=broke_key)
    assert client.max_retries == 2
    refusals = metric(qlaud, "qlaud_cap_refusals_total")
    upstream = mock_stats(mock)["requests"]
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert metric(qlaud, "qlaud_cap_refusals_total") == refusals + 1, "sent more than once"
    assert mock_stats(mock)["requests"] == upstream, "refused before the provider"
    assert info.value.status_code == 402
    assert info.value.code == "spend_cap_reached"


def test_usage_reports_the_users_spend(qlaud, openai_client, user_key):
    import json
    import urllib.request

    openai_client.chat.completions.create(model="echo", messages=USER)
    req = urllib.request.Request(qlaud["base_url"] + "/v1/usage",
                                 headers={"Authorization": "Bearer " + user_key})
    with urllib.request.urlopen(req) as resp:
        report = json.load(resp)
    assert [k["key_name"] for k in report["by_key"]] == ["py_user"]
    assert report["by_key"][0]["cost_micros"] == report["totals"]["cost_micros"] > 0


def test_embeddings_float_and_base64_billed_to_the_key(qlaud, openai_client):
    import base64
    import struct

    # The client asks for base64 by default and decodes it itself.
    r = openai_client.embeddings.create(model="embed-test", input=["one two", "three"])
    assert r.model == "embed-test"
    assert [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) == 16
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (3, 3)
    # 3 tokens × $0.02 per million = 0.06 µ$, rounded up to 1.
    assert r.usage.cost_micros == 1
    floats = openai_client.embeddings.create(
        model="embed-test", input="one two three four", encoding_format="float", dimensions=4)
    assert len(floats.data[0].embedding) == 4
    assert floats.usage.prompt_tokens == 4
    raw = openai_client.embeddings.with_raw_response.create(
        model="embed-test", input="a b", encoding_format="base64")
    assert raw.headers["qlaud-cost-micros"] == "1"
    packed = raw.http_response.json()["data"][0]["embedding"]
    assert len(struct.unpack("<16f", base64.b64decode(packed))) == 16


def test_embeddings_refuse_chat_models_and_unknown_ones(openai_client):
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.embeddings.create(model="gpt-test", input="hi")
    assert "chat model" in e.value.message
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="no-such-embedder", input="hi")
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model="embed-test", messages=USER)
