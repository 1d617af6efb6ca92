"""The official `openai` package's Responses API against qlaud, unchanged:
`client.responses.create` and `client.responses.stream` for a GPT model
(passed through to the provider's own Responses API) and a Claude model
(translated)."""

import json
import urllib.request

import openai
import pytest

from conftest import mint

TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]
# USD per million tokens, as configured for the mock in conftest.py.
PRICES = {"gpt-test": (1.25, 10), "claude-test": (3, 15)}
MODELS = ["gpt-test", "claude-test"]


def mock_stats(mock):
    base = mock["openai_base_url"].removesuffix("/v1")
    with urllib.request.urlopen(base + "/_mock/stats") as resp:
        return json.load(resp)


def cost(model, usage):
    """The cost of the usage at the model's prices, rounded up to the µ$."""
    pin, pout = PRICES[model]
    pico = usage.input_tokens * pin * 1_000_000 + usage.output_tokens * pout * 1_000_000
    return -(-int(pico) // 1_000_000)


@pytest.mark.parametrize("model", MODELS)
def test_create_plain_text_with_cost(openai_client, mock, model):
    r = openai_client.responses.create(model=model, input="hi there", store=True)
    assert r.object == "response" and r.status == "completed"
    assert r.model == model
    assert r.output_text == "Hello from mock: hi there"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (2, 5)
    assert r.usage.total_tokens == 7
    assert r.usage.cost_micros == cost(model, r.usage)
    sent = mock_stats(mock)["last_body"]
    if model == "gpt-test":
        # The provider's own Responses API, told to keep nothing.
        assert mock_stats(mock)["last_path"] == "/v1/responses"
        assert sent["store"] is False and sent["model"] == "gpt-upstream"
    else:
        assert mock_stats(mock)["last_path"] == "/v1/messages"


@pytest.mark.parametrize("model", MODELS)
def test_raw_response_carries_the_cost_header(openai_client, model):
    raw = openai_client.responses.with_raw_response.create(model=model, input="hi there")
    r = raw.parse()
    assert int(raw.headers["qlaud-cost-micros"]) == r.usage.cost_micros > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper(openai_client, model):
    with openai_client.responses.stream(model=model, input="hi there") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello from mock: hi there"
    assert final.output_text == "Hello from mock: hi there"
    assert final.model == model
    assert final.usage.output_tokens == 5
    assert final.usage.cost_micros == cost(model, final.usage)


@pytest.mark.parametrize("model", MODELS)
def test_raw_stream_events_in_order(openai_client, model):
    events = list(openai_client.responses.create(model=model, input="hi there", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in ["response.output_item.added", "response.content_part.added",
                 "response.output_text.done", "response.content_part.done",
                 "response.output_item.done"]:
        assert kind in kinds, kind
    assert events[-1].response.usage.cost_micros > 0


@pytest.mark.parametrize("model", MODELS)
def test_function_tool_round_trip(openai_client, model):
    ask = {"role": "user", "content": [{"type": "input_text",
                                        "text": "what is the weather in Paris"}]}
    r = openai_client.responses.create(model=model, input=[ask], tools=TOOLS)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    # The documented loop: the output goes back as input, then the result.
    follow = [ask, *r.output,
              {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    r2 = openai_client.responses.create(model=model, input=follow, tools=TOOLS)
    assert r2.output_text == "The tool said: sunny"
    # The same round streamed through the helper.
    with openai_client.responses.stream(model=model, input=[ask], tools=TOOLS) as stream:
        args = "".join(e.delta for e in stream
                       if e.type == "response.function_call_arguments.delta")
        final = stream.get_final_response()
    assert json.loads(args) == {"city": "Paris"}
    streamed = [o for o in final.output if o.type == "function_call"][0]
    follow = [ask, *final.output,
              {"type": "function_call_output", "call_id": streamed.call_id, "output": "rainy"}]
    with openai_client.responses.stream(model=model, input=follow, tools=TOOLS) as stream:
        assert stream.get_final_response().output_text == "The tool said: rainy"


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_output_reaches_the_provider(openai_client, mock, model):
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    r = openai_client.responses.create(
        model=model, input="name a city", instructions="answer in JSON",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                         "strict": True}})
    assert r.status == "completed"
    sent = mock_stats(mock)["last_body"]
    if model == "gpt-test":
        assert sent["text"]["format"]["schema"] == schema
    else:
        assert sent["output_config"]["format"]["schema"] == schema
        assert sent["system"] == "answer in JSON"


def test_output_limit_is_incomplete(openai_client):
    for model in MODELS:
        r = openai_client.responses.create(model=model, input="one two three four",
                                           max_output_tokens=2)
        assert r.status == "incomplete", model
        assert r.incomplete_details.reason == "max_output_tokens"


def test_errors_are_the_clients_own_exceptions(openai_client, mock):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.responses.create(model="no-such-model", input="hi")
    assert info.value.code == "model_not_found"
    upstream = mock_stats(mock)["requests"]
    for model in MODELS:
        with pytest.raises(openai.NotFoundError) as info:
            openai_client.responses.create(model=model, input="hi",
                                           previous_response_id="resp_123")
        assert info.value.code == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError):
            openai_client.responses.create(model=model, input="hi", conversation="conv_123")
        with pytest.raises(openai.BadRequestError):
            openai_client.responses.create(model=model, input="hi",
                                           tools=[{"type": "web_search"}])
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.responses.create(model="gpt-test", input=42)
    assert info.value.body["type"] == "invalid_request_error"
    assert mock_stats(mock)["requests"] == upstream, "refused before the provider"
    with pytest.raises(openai.InternalServerError):
        openai_client.responses.create(model="gpt-error-500", input="hi")


@pytest.mark.parametrize("model", MODELS)
def test_402_once_the_cap_is_spent(qlaud, model):
    key = mint(qlaud, {"name": f"py_responses_{model}", "max_spend_usd": 0.002})
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key, max_retries=0)
    spent = 0
    with pytest.raises(openai.APIStatusError) as info:
        for _ in range(100):
            r = client.responses.create(model=model, input="hi there")
            spent += r.usage.cost_micros
    assert info.value.status_code == 402
    assert info.value.code == "spend_cap_reached"
    assert 0 < spent <= 2000
    with pytest.raises(openai.APIStatusError) as info:
        with client.responses.stream(model=model, input="hi there") as stream:
            stream.get_final_response()
    assert info.value.status_code == 402
