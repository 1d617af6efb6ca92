"""Search and the local embedding model through the official clients: the
`openai` client embeds with qlaud's in-process model, and the qlaud Python
SDK searches thread turns by meaning."""

import json
import time
import urllib.error
import urllib.request

import pytest

# Not `qlaud`: that name is the running server's fixture.
import qlaud as sdk

from conftest import mint


def _post(server, key, path, body):
    req = urllib.request.Request(
        server["base_url"] + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def model_ready(qlaud, user_key):
    """Waits for the model (the first start on a machine downloads it)."""
    deadline = time.time() + 900
    while True:
        status, body = _post(qlaud, user_key, "/v1/embeddings",
                             {"model": "all-minilm-l6-v2", "input": "x"})
        if status != 503:
            assert status == 200, body
            return
        assert time.time() < deadline, body
        time.sleep(0.5)


def test_the_local_model_through_the_openai_client(model_ready, openai_client):
    # The client asks for base64 by default and decodes it itself.
    out = openai_client.embeddings.create(
        model="all-minilm-l6-v2",
        input=["how do I get my money back", "refunds within 30 days", "sunny weather"],
    )
    assert out.model == "all-minilm-l6-v2"
    vecs = [d.embedding for d in out.data]
    assert [len(v) for v in vecs] == [384, 384, 384]

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b))

    assert abs(cos(vecs[0], vecs[0]) - 1) < 1e-3
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.2
    assert out.usage.prompt_tokens > 0
    floats = openai_client.embeddings.create(
        model="all-minilm-l6-v2", input="sunny weather", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, vecs[2])) < 1e-5


def test_search_through_the_python_sdk(model_ready, qlaud):
    key = mint(qlaud, {"name": "py_search"})
    with sdk.Client(api_key=key, base_url=qlaud["base_url"]) as client:
        thread = client.create_thread(model="echo")
        client.create_thread_message(
            thread["id"],
            content="Purchases can be returned within 30 days for a full reimbursement.")
        client.create_thread_message(thread["id"], content="The train leaves at noon.")
        if qlaud["store_args"][0] == "--database-url":
            # The suite's PostgreSQL has no pgvector: search says so.
            with pytest.raises(sdk.ApiError) as e:
                client.search(query="how do I get my money back")
            assert e.value.status == 503
            assert "pgvector" in str(e.value)
            return
        deadline = time.time() + 60
        while True:
            out = client.search(query="how do I get my money back", limit=1)
            if out["data"] or time.time() > deadline:
                break
            time.sleep(0.2)
        assert out["data"], out
        assert "reimbursement" in out["data"][0]["text"]
        assert -1 <= out["data"][0]["score"] <= 1
