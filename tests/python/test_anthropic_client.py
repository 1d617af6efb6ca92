"""The official `anthropic` package against qlaud, unchanged: base_url and a
qlk key are all it is given."""

import anthropic
import pytest

from conftest import metric, mock_stats

USER = [{"role": "user", "content": "hi there"}]
TOOLS = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}]


def test_plain_message_with_cost(anthropic_client):
    m = anthropic_client.messages.create(model="claude-test", max_tokens=100, messages=USER)
    assert m.model == "claude-test"
    assert m.content[0].text == "Hello from mock: hi there"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (2, 5)
    # qlaud's extra field: 2 × $3 + 5 × $15 per million tokens.
    assert m.usage.cost_micros == 81


def test_raw_response_carries_the_cost_header(anthropic_client):
    raw = anthropic_client.messages.with_raw_response.create(
        model="claude-test", max_tokens=100, messages=USER)
    assert raw.headers["qlaud-cost-micros"] == "81"
    assert raw.parse().content[0].text.startswith("Hello from mock")


def test_streaming_helper(anthropic_client):
    with anthropic_client.messages.stream(
            model="claude-test", max_tokens=100,
            system="be brief", messages=[{"role": "user", "content": "one two three"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from mock: one two three"
    assert final.usage.output_tokens == 6
    assert final.usage.input_tokens == 5
    assert final.stop_reason == "end_turn"


def test_raw_stream_events(anthropic_client):
    events = list(anthropic_client.messages.create(
        model="claude-test", max_tokens=3, stream=True,
        messages=[{"role": "user", "content": "a b c d e"}]))
    assert events[0].type == "message_start"
    assert events[-1].type == "message_stop"
    delta = [e for e in events if e.type == "message_delta"][0]
    assert delta.delta.stop_reason == "max_tokens"


def test_tool_round_trip(anthropic_client):
    ask = {"role": "user", "content": "what is the weather in Paris"}
    m = anthropic_client.messages.create(
        model="claude-test", max_tokens=100, tools=TOOLS, messages=[ask])
    assert m.stop_reason == "tool_use"
    call = [b for b in m.content if b.type == "tool_use"][0]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    m2 = anthropic_client.messages.create(
        model="claude-test", max_tokens=100, tools=TOOLS, messages=[
            ask,
            {"role": "assistant", "content": m.content},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
        ])
    assert m2.content[0].text == "The tool said: sunny"


def test_image_input(anthropic_client):
    m = anthropic_client.messages.create(model="claude-test", max_tokens=100, messages=[{
        "role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}},
        ]}])
    assert m.content[0].text == "Hello from mock: look [image]"
    assert m.usage.input_tokens == 101


def test_gpt_through_messages(anthropic_client):
    m = anthropic_client.messages.create(model="gpt-test", max_tokens=100, messages=USER)
    assert m.model == "gpt-test"
    assert m.content[0].text == "Hello from mock: hi there"
    with anthropic_client.messages.stream(model="gpt-test", max_tokens=100, messages=USER) as s:
        assert "".join(s.text_stream) == "Hello from mock: hi there"
        assert s.get_final_message().usage.output_tokens == 5
    m = anthropic_client.messages.create(
        model="gpt-test", max_tokens=100, tools=TOOLS,
        messages=[{"role": "user", "content": "weather?"}])
    call = [b for b in m.content if b.type == "tool_use"][0]
    assert call.input == {"city": "Paris"}


def test_echo_works_offline(anthropic_client):
    m = anthropic_client.messages.create(model="echo", max_tokens=100, messages=USER)
    assert m.content[0].text == "echo: hi there"


def test_errors_are_the_clients_own_exceptions(qlaud, anthropic_client):
    bad = anthropic.Anthropic(base_url=qlaud["base_url"], api_key="qlk_live_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-test", max_tokens=10, messages=USER)
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.create(model="no-such-model", max_tokens=10, messages=USER)
    cases = [("claude-error-500", anthropic.InternalServerError),
             ("claude-error-429", anthropic.RateLimitError),
             ("claude-error-400", anthropic.BadRequestError),
             ("claude-error-529", anthropic.InternalServerError),
             ("claude-hang", anthropic.APIStatusError)]
    for model, exc in cases:
        with pytest.raises(exc) as info:
            anthropic_client.messages.create(model=model, max_tokens=10, messages=USER)
        assert info.value.body["type"] == "error", model
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic_client.messages.create(model="claude-hang", max_tokens=10, messages=USER)
    assert info.value.status_code == 504


def test_over_the_cap_is_402_and_not_retried(qlaud, mock, broke_key):
    # Default retries stay on: a 402 must not be retried (unlike a 429, or
    # an answer that says `x-should-retry: true`). qlaud counts every
    # refusal, so a retried call would show as more than one.
    client = anthropic.Anthropic(base_url=qlaud["base_url"], api_key=broke_key)
    assert client.max_retries == 2
    refusals = metric(qlaud, "qlaud_cap_refusals_total")
    upstream = mock_stats(mock)["requests"]
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-test", max_tokens=100, messages=USER)
    assert metric(qlaud, "qlaud_cap_refusals_total") == refusals + 1, "sent more than once"
    assert mock_stats(mock)["requests"] == upstream, "refused before the provider"
    assert info.value.status_code == 402
    assert info.value.body["error"]["type"] == "billing_error"
    assert info.value.body["error"]["code"] == "spend_cap_reached"
    assert "spend cap" in info.value.body["error"]["message"]
