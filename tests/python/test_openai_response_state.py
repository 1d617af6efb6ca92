"""Response state kept by qlaud, through the official `openai` package:
`previous_response_id` chains (the mock provider receives the whole
history) for a Claude and a GPT model, streamed responses kept too,
`responses.retrieve` / `responses.delete`, `store=False`, isolation
between keys, and `client.conversations` as a view of threads."""

import json
import urllib.request

import openai
import pytest

from conftest import mint

MODELS = ["claude-test", "gpt-test"]


def last_sent(mock):
    """The conversation the provider last received, as (role, text) pairs."""
    base = mock["openai_base_url"].removesuffix("/v1")
    with urllib.request.urlopen(base + "/_mock/stats") as resp:
        body = json.load(resp)["last_body"]
    turns = body["input"] if "input" in body else body["messages"]
    out = []
    for m in turns:
        content = m["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content)
        out.append((m["role"], content))
    return out


def turns(*words):
    out = []
    for i, w in enumerate(words):
        out.append(("user", w))
        if i + 1 < len(words):
            out.append(("assistant", f"Hello from mock: {w}"))
    return out


@pytest.mark.parametrize("model", MODELS)
def test_previous_response_id_chains_three_turns(openai_client, mock, model):
    r1 = openai_client.responses.create(model=model, input="one")
    r2 = openai_client.responses.create(model=model, input="two", previous_response_id=r1.id)
    assert last_sent(mock) == turns("one", "two")
    r3 = openai_client.responses.create(model=model, input="three", previous_response_id=r2.id)
    assert last_sent(mock) == turns("one", "two", "three")
    assert r3.output_text == "Hello from mock: three"
    assert r3.previous_response_id == r2.id
    # Streamed, and kept once the stream has been read.
    with openai_client.responses.stream(model=model, input="four",
                                        previous_response_id=r3.id) as stream:
        r4 = stream.get_final_response()
    assert last_sent(mock) == turns("one", "two", "three", "four")
    r5 = openai_client.responses.create(model=model, input="five", previous_response_id=r4.id)
    assert last_sent(mock) == turns("one", "two", "three", "four", "five")
    assert r5.output_text == "Hello from mock: five"


@pytest.mark.parametrize("model", MODELS)
def test_retrieve_and_delete(openai_client, model):
    r = openai_client.responses.create(model=model, input="keep me")
    got = openai_client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    assert got.usage.cost_micros == r.usage.cost_micros > 0
    openai_client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(r.id)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_responses_are_kept(openai_client, model):
    with openai_client.responses.stream(model=model, input="streamed") as stream:
        final = stream.get_final_response()
    assert openai_client.responses.retrieve(final.id).output_text == "Hello from mock: streamed"


@pytest.mark.parametrize("model", MODELS)
def test_store_false_keeps_nothing(openai_client, model):
    r = openai_client.responses.create(model=model, input="forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.responses.create(model=model, input="x", previous_response_id=r.id)
    assert info.value.code == "previous_response_not_found"


def test_another_keys_response_is_404(qlaud, openai_client):
    r = openai_client.responses.create(model="gpt-test", input="mine")
    other = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", max_retries=0,
                          api_key=mint(qlaud, {"name": "py_other", "max_spend_usd": 1}))
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.create(model="claude-test", input="x", previous_response_id=r.id)
    assert info.value.code == "previous_response_not_found"
    assert openai_client.responses.retrieve(r.id).id == r.id


@pytest.mark.parametrize("model", MODELS)
def test_conversations(openai_client, mock, model):
    conv = openai_client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "one"},
               {"type": "message", "role": "assistant", "content": "Hello from mock: one"}],
        metadata={"topic": "demo"})
    assert conv.object == "conversation" and conv.metadata == {"topic": "demo"}
    r = openai_client.responses.create(model=model, input="two", conversation=conv.id)
    assert last_sent(mock) == turns("one", "two")
    assert r.conversation.id == conv.id
    openai_client.responses.create(model=model, input="three", conversation={"id": conv.id})
    assert last_sent(mock) == turns("one", "two", "three")
    items = openai_client.conversations.items.list(conv.id, order="asc")
    texts = [i.content[0].text for i in items.data]
    assert texts == ["one", "Hello from mock: one", "two", "Hello from mock: two", "three",
                     "Hello from mock: three"]
    added = openai_client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "four"}])
    item = openai_client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert item.content[0].text == "four"
    openai_client.conversations.items.delete(item.id, conversation_id=conv.id)
    assert len(openai_client.conversations.items.list(conv.id).data) == 6
    # The conversation is a thread.
    req = urllib.request.Request(
        str(openai_client.base_url).removesuffix("/v1/") + f"/v1/threads/{conv.id}",
        headers={"Authorization": f"Bearer {openai_client.api_key}"})
    with urllib.request.urlopen(req) as resp:
        assert json.load(resp)["metadata"] == {"topic": "demo"}
    with pytest.raises(openai.BadRequestError):
        openai_client.responses.create(model=model, input="x", conversation=conv.id,
                                       previous_response_id=r.id)
    deleted = openai_client.conversations.delete(conv.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        openai_client.conversations.retrieve(conv.id)
