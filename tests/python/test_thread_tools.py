"""A three-turn thread with a registered tool, through the Python wheel: the
tool's webhook verifies every call with the official `standardwebhooks`
package and the secret `rotate_webhook_secret` returned, and answers; the
turn streams its rounds and tool events; the thread holds every message."""

import http.server
import json
import os
import subprocess
import threading

import pytest
from standardwebhooks.webhooks import Webhook

import qlaud


@pytest.fixture(scope="module")
def server(qlaud):
    """The running qlaud (named so as not to hide the `qlaud` module)."""
    return qlaud


@pytest.fixture(scope="module")
def tenant(server):
    out = subprocess.run(
        [os.environ["QLAUD_BIN"], "admin", "create-tenant", "--name", "thread-tools",
         *server["store_args"]],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def admin(server, tenant):
    with qlaud.Client(api_key=tenant["master_key"], base_url=server["base_url"],
                      max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def secret(admin):
    return admin.rotate_webhook_secret()["secret"]


@pytest.fixture(scope="module")
def tool_url(secret):
    """A tool webhook that verifies each call and answers with the weather;
    it answers 401 to a call whose signature does not verify."""
    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                call = Webhook(secret).verify(body, headers)
            except Exception:  # a bad signature: refuse, as a receiver would
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            calls.append(call)
            answer = json.dumps({"content": f"sunny in {call['input']['city']}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/weather", calls
    server.shutdown()


def text(message):
    return "".join(b.get("text", "") for b in message["content"])


@pytest.mark.parametrize("model", ["claude-test", "gpt-test"])
def test_three_turns_with_a_tool(server, admin, tool_url, model):
    url, calls = tool_url
    try:
        admin.create_tool(name="get_weather", description="The weather in a city",
                          input_schema={"type": "object",
                                        "properties": {"city": {"type": "string"}},
                                        "required": ["city"]},
                          webhook_url=url, timeout_secs=5)
    except qlaud.ConflictError:
        pass  # registered by the other model's run
    key = admin.mint_key(name=f"thread-user-{model}", max_spend_usd=1)
    user = qlaud.Client(api_key=key["secret"], base_url=server["base_url"], max_retries=0)
    thread = user.create_thread(model=model, system="be brief")

    first = user.create_thread_message(thread["id"], content="hello")
    assert text(first) == "Hello from mock: hello"

    before = len(calls)
    second = user.create_thread_message(thread["id"], content="what is the weather?",
                                        tools=["get_weather"])
    assert text(second) == "The tool said: sunny in Paris"
    assert len(calls) == before + 1
    assert calls[-1]["tool"] == "get_weather" and calls[-1]["thread_id"] == thread["id"]

    with user.create_thread_message(thread["id"], content="and again, the weather?",
                                    tools="all", stream=True) as stream:
        events = [e["type"] for e in stream]
    assert events.count("message_start") == 2
    assert events.index("tool_execution.started") < events.index("tool_execution.completed")

    messages = list(user.iter_thread_messages(thread["id"], order="asc"))
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant",
                     "user", "assistant", "user", "assistant",
                     "user", "assistant", "user", "assistant"]
    assert text(messages[-1]) == "The tool said: sunny in Paris"
    spent = sum(m["usage"]["cost_micros"] for m in messages if m["role"] == "assistant")
    assert user.get_usage()["totals"]["cost_micros"] == spent
