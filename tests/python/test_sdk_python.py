"""The `qlaud` wheel (pyo3 over the Rust SDK), installed into the test venv
by the test command, against the real binary: every operation on both
clients, typed errors, streams, pagination, the GIL, Ctrl-C, fork, and the
typing promises (stubs match the module; the examples pass mypy --strict)."""

import asyncio
import hashlib
import hmac
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

import qlaud
from conftest import mock_stats

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = json.loads((ROOT / "openapi" / "qlaud.json").read_text())
OPERATIONS = sorted(op["operationId"] for item in SPEC["paths"].values() for op in item.values())
EXAMPLES = ROOT / "sdk-python" / "examples"


@pytest.fixture(scope="module")
def server(qlaud):
    """The running qlaud (named so as not to hide the `qlaud` module)."""
    return qlaud


@pytest.fixture(scope="module")
def tenant(server):
    """A tenant of its own, so billing settings here touch no other test."""
    out = subprocess.run(
        [os.environ["QLAUD_BIN"], "admin", "create-tenant", "--name", "python-sdk",
         *server["store_args"]],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def admin(server, tenant):
    with qlaud_client(server, tenant["master_key"]) as client:
        yield client


def qlaud_client(server, key, **kw):
    return qlaud.Client(api_key=key, base_url=server["base_url"], **kw)


@pytest.fixture
def silent_server():
    """A TCP server that accepts and never answers: a hung call."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted = threading.Event()
    conns = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conns.append(conn)
            accepted.set()

    threading.Thread(target=serve, daemon=True).start()
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{sock.getsockname()[1]}",
                                accepted=accepted, conns=conns)
    sock.close()
    for c in conns:
        c.close()


def test_every_operation_is_a_method_of_both_clients():
    stub = (ROOT / "sdk-python/python/qlaud/_qlaud.pyi").read_text()
    for op in OPERATIONS:
        assert callable(getattr(qlaud.Client, op, None)), f"Client lacks {op}"
        assert callable(getattr(qlaud.AsyncClient, op, None)), f"AsyncClient lacks {op}"
        assert f"    def {op}(" in stub and f"    async def {op}(" in stub, op


def test_keys_from_mint_to_revoke(admin, server):
    key = admin.mint_key(name="alice", max_spend_usd=2.5, period="daily", metadata={"plan": "pro"})
    assert key["secret"].startswith("qlk_live_") and key["max_spend_micros"] == 2_500_000
    assert key["period"] == "daily" and key["metadata"] == {"plan": "pro"}
    got = admin.get_key(key["id"])
    assert "secret" not in got and got["name"] == "alice"
    assert any(k["id"] == key["id"] for k in admin.list_keys(limit=100)["items"])
    updated = admin.update_key(key["id"], max_spend_usd=7, name="alice2")
    assert updated["max_spend_micros"] == 7_000_000 and updated["name"] == "alice2"
    removed = admin.update_key(key["id"], remove_max_spend=True)
    assert removed["max_spend_micros"] is None
    rotated = admin.rotate_key(key["id"])
    assert rotated["id"] == key["id"] and rotated["secret"] != key["secret"]
    with pytest.raises(qlaud.AuthenticationError):
        qlaud_client(server, key["secret"], max_retries=0).list_models()
    assert admin.revoke_key(key["id"]) is None
    assert admin.get_key(key["id"])["status"] == "revoked"
    assert admin.list_key_billing_events(key["id"]) == []


def test_money_can_be_given_exactly_as_decimal(admin):
    from decimal import Decimal
    key = admin.mint_key(name="exact", max_spend_usd=Decimal("4.99"))
    assert key["max_spend_micros"] == 4_990_000
    key = admin.update_key(key["id"], max_spend_usd=Decimal("0.000001"))
    assert key["max_spend_micros"] == 1
    with pytest.raises(qlaud.BadRequestError, match="decimal|micro|precision|places"):
        admin.mint_key(name="too_fine", max_spend_usd=Decimal("0.0000001"))
    with pytest.raises(ValueError):
        admin.mint_key(name="nan", max_spend_usd=Decimal("NaN"))


def test_iter_keys_walks_every_page(admin):
    minted = {admin.mint_key(name=f"page{i}")["id"] for i in range(7)}
    seen = [k["id"] for k in admin.iter_keys(limit=2)]
    assert minted <= set(seen) and len(seen) == len(set(seen))


def test_threads_from_create_to_delete(admin, server):
    user = admin.mint_key(name="py-threads")
    other = admin.mint_key(name="py-threads-other")
    with qlaud_client(server, user["secret"]) as client:
        thread = client.create_thread(
            metadata={"topic": "refunds"}, system="Be brief.", model="echo", truncation="auto")
        assert thread["id"].startswith("thr_") and thread["object"] == "thread"
        assert thread["key_id"] == user["id"] and thread["truncation"] == "auto"
        assert client.get_thread(thread["id"])["system"] == "Be brief."
        updated = client.update_thread(thread["id"], metadata={"topic": "billing"}, system="")
        assert updated["metadata"] == {"topic": "billing"} and updated["system"] is None
        assert updated["model"] == "echo"
        more = [client.create_thread()["id"] for _ in range(3)]
        newest_first = [t["id"] for t in client.iter_threads(limit=2)]
        assert sorted(newest_first) == sorted([thread["id"], *more])
        assert [t["id"] for t in client.iter_threads(order="asc", limit=3)] == newest_first[::-1]
        page = client.list_thread_messages(thread["id"], order="asc")
        assert page["items"] == [] and page["next_page"] is None
        with pytest.raises(qlaud.BadRequestError, match="unknown model"):
            client.create_thread(model="no-such-model")
        with pytest.raises(qlaud.BadRequestError):
            client.list_threads(limit=101)
        # Another key's thread is not found, exactly like a missing one.
        with qlaud_client(server, other["secret"]) as stranger:
            with pytest.raises(qlaud.NotFoundError):
                stranger.get_thread(thread["id"])
            with pytest.raises(qlaud.NotFoundError):
                stranger.delete_thread(thread["id"])
        # The tenant's admin key sees the user's threads.
        assert len(list(admin.iter_threads(key_id=user["id"]))) == 4
        deleted = client.delete_thread(thread["id"])
        assert deleted == {"id": thread["id"], "object": "thread.deleted", "deleted": True}
        with pytest.raises(qlaud.NotFoundError):
            client.get_thread(thread["id"])


def test_tools_from_register_to_delete(admin, server):
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}},
              "required": ["order_id"]}
    tool = admin.create_tool(name="lookup_order", description="Looks an order up.",
                             input_schema=schema, webhook_url="http://127.0.0.1:9/hook")
    assert tool["id"].startswith("tool_") and tool["object"] == "tool"
    assert tool["input_schema"] == schema and tool["timeout_secs"] == 30
    assert admin.get_tool(tool["id"])["name"] == "lookup_order"
    more = [admin.create_tool(name=f"tool_{i}", description="d", input_schema={"type": "object"},
                              webhook_url="https://example.com/hook", timeout_secs=300)["id"]
            for i in range(3)]
    newest_first = [t["id"] for t in admin.iter_tools(limit=2)]
    assert newest_first == [*more[::-1], tool["id"]]
    with pytest.raises(qlaud.ConflictError):
        admin.create_tool(name="lookup_order", description="again",
                          input_schema={"type": "object"}, webhook_url="https://example.com/h")
    with pytest.raises(qlaud.BadRequestError, match="JSON Schema"):
        admin.create_tool(name="bad_schema", description="d", webhook_url="https://example.com/h",
                          input_schema={"type": "object", "properties": {"a": {"type": "strnig"}}})
    with pytest.raises(qlaud.BadRequestError, match="timeout_secs"):
        admin.create_tool(name="too_slow", description="d", input_schema={"type": "object"},
                          webhook_url="https://example.com/h", timeout_secs=301)
    # Tools are the tenant's: an end user's key may not manage them.
    user = admin.mint_key(name="py-tools-user")
    with qlaud_client(server, user["secret"]) as client:
        with pytest.raises(qlaud.PermissionDeniedError):
            client.list_tools()
        with pytest.raises(qlaud.PermissionDeniedError):
            client.get_tool(tool["id"])
    deleted = admin.delete_tool(tool["id"])
    assert deleted == {"id": tool["id"], "object": "tool.deleted", "deleted": True}
    with pytest.raises(qlaud.NotFoundError):
        admin.get_tool(tool["id"])
    for tool_id in more:
        admin.delete_tool(tool_id)


def test_async_client_registers_tools(server, tenant):
    async def main():
        async with qlaud.AsyncClient(api_key=tenant["master_key"],
                                     base_url=server["base_url"]) as admin:
            tool = await admin.create_tool(name="async_tool", description="d",
                                           input_schema={"type": "object"},
                                           webhook_url="https://example.com/hook", timeout_secs=5)
            assert tool["timeout_secs"] == 5
            assert (await admin.list_tools())["items"][0]["id"] == tool["id"]
            await admin.delete_tool(tool["id"])

    asyncio.run(main())


# Echo's price is $3 / $15 per million tokens; "hi" is 1 + 3 input tokens
# (four characters a token, rounded up, plus three per message) and
# "echo: hi" 2 output tokens: 4 × 3 + 2 × 15 = 42 µ$.
ECHO_HI_MICROS = 42


def test_models_messages_and_chat(admin, server, mock):
    user = qlaud_client(server, admin.mint_key(name="chatty", max_spend_usd=1)["secret"])
    assert any(m["id"] == "echo" for m in user.list_models()["data"])
    msg = user.create_message(model="echo", max_tokens=32,
                              messages=[{"role": "user", "content": "hi"}], temperature=0.1)
    assert msg["content"][0]["text"] == "echo: hi"
    assert msg["usage"]["cost_micros"] == ECHO_HI_MICROS
    # Any provider field passes through (**extra), here to the mock Anthropic.
    msg = user.create_message(model="claude-test", max_tokens=50, system="be brief",
                              messages=[{"role": "user", "content": "hello"}],
                              metadata={"user_id": "u1"}, top_k=5)
    sent = mock_stats(mock)["last_body"]
    assert sent["model"] == "claude-upstream" and sent["system"] == "be brief"
    assert sent["top_k"] == 5 and sent["metadata"] == {"user_id": "u1"}
    # 2 + 1 words in, "Hello from mock: hello" out: 3 × 3 + 4 × 15 = 69 µ$.
    assert msg["type"] == "message"
    assert (msg["usage"]["input_tokens"], msg["usage"]["output_tokens"]) == (3, 4)
    assert msg["usage"]["cost_micros"] == 69
    chat = user.create_chat_completion(model="claude-test", max_tokens=50,
                                       messages=[{"role": "user", "content": "hello"}])
    # 1 word in, 4 out: 1 × 3 + 4 × 15 = 63 µ$.
    assert chat["object"] == "chat.completion" and chat["usage"]["cost_micros"] == 63


def test_token_counts_and_model_lookup(admin, server, broke_key):
    user = qlaud_client(server, admin.mint_key(name="counter")["secret"], max_retries=0)
    ask = [{"role": "user", "content": "one two three"}]
    tools = [{"name": "t", "input_schema": {"type": "object"}}]
    # Forwarded to the mock Anthropic: 2 + 3 words + 10 for the tool.
    claude = user.count_message_tokens(model="claude-test", system="be brief", tools=tools,
                                       messages=ask, tool_choice={"type": "auto"})
    assert claude == {"input_tokens": 15}
    assert user.count_message_tokens(model="gpt-test", messages=ask)["input_tokens"] > 0
    # Free: a key whose cap is spent still counts.
    broke = qlaud_client(server, broke_key, max_retries=0)
    assert broke.count_message_tokens(model="echo", messages=ask)["input_tokens"] > 0
    assert user.get_model("echo") == next(m for m in user.list_models()["data"] if m["id"] == "echo")
    with pytest.raises(qlaud.NotFoundError) as e:
        user.get_model("no-such-model")
    assert e.value.code == "model_not_found"

    async def main():
        async with qlaud.AsyncClient(api_key=broke_key, base_url=server["base_url"]) as client:
            assert (await client.get_model("gpt-test"))["id"] == "gpt-test"
            count = await client.count_message_tokens(model="claude-test", messages=ask)
            assert count["input_tokens"] == 3
    asyncio.run(main())


def test_request_log_and_key_activity(admin, server):
    key = admin.mint_key(name="logged-user", max_spend_usd=1)
    assert key["last_used_at"] is None and key["spend_micros"] == 0
    user = qlaud_client(server, key["secret"])
    for _ in range(2):
        user.create_message(model="echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    log = admin.list_requests(key_id=key["id"], status="2xx")
    assert [e["model"] for e in log["items"]] == ["echo", "echo"]
    assert all(e["key_name"] == "logged-user" and e["status"] == 200 for e in log["items"])
    # A standard key reads its own log, and only that.
    assert len(user.list_requests()["items"]) == 2
    with pytest.raises(qlaud.PermissionDeniedError):
        user.list_requests(key_id=admin.mint_key(name="other")["id"])
    got = admin.get_key(key["id"])
    assert got["spend_micros"] == sum(e["cost_micros"] for e in log["items"]) > 0
    assert got["last_used_at"] is not None
    found = list(admin.iter_keys(search="LOGGED", sort="spend", direction="desc", limit=1))
    assert [k["id"] for k in found] == [key["id"]]


def test_streams_yield_events_and_end(admin, server):
    user = qlaud_client(server, admin.mint_key(name="streamer", max_spend_usd=1)["secret"])
    with user.create_message(model="claude-test", max_tokens=50, stream=True,
                             messages=[{"role": "user", "content": "hello"}]) as stream:
        types = [e["type"] for e in stream]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    chunks = list(user.create_chat_completion(
        model="echo", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1]["usage"]["cost_micros"] == ECHO_HI_MICROS
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def test_responses_json_and_stream(admin, server):
    user = qlaud_client(server, admin.mint_key(name="responder", max_spend_usd=1)["secret"])
    for model in ["gpt-test", "claude-test", "echo"]:
        r = user.create_response(model=model, input="hi there", temperature=0.5)
        assert r["object"] == "response" and r["usage"]["cost_micros"] > 0, model
        with user.create_response(model=model, input="hi there", stream=True) as stream:
            events = list(stream)
        assert [e["sequence_number"] for e in events] == list(range(len(events))), model
        assert events[0]["type"] == "response.created", model
        assert events[-1]["type"] == "response.completed", model
        assert events[-1]["response"]["usage"]["cost_micros"] > 0, model
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text.endswith("hi there"), model


def test_a_provider_failing_mid_stream_raises(admin, server):
    user = qlaud_client(server, admin.mint_key(name="cut", max_spend_usd=1)["secret"], max_retries=0)
    with pytest.raises(qlaud.ApiError) as err:
        for _ in user.create_message(model="claude-cut", max_tokens=50, stream=True,
                                     messages=[{"role": "user", "content": "hello"}]):
            pass
    assert err.value.status >= 500


def test_errors_are_typed(admin, server, broke_key):
    with pytest.raises(qlaud.AuthenticationError) as e:
        qlaud_client(server, "qlk_live_wrong", max_retries=0).list_models()
    assert e.value.status == 401
    with pytest.raises(qlaud.AuthenticationError) as e:
        qlaud_client(server, "qlk_live_wrong").create_chat_completion(model="echo", messages=[])
    assert e.value.code == "invalid_api_key" and e.value.type == "authentication_error"
    user_key = admin.mint_key(name="plain")["secret"]
    with pytest.raises(qlaud.PermissionDeniedError):
        qlaud_client(server, user_key).list_keys()
    with pytest.raises(qlaud.NotFoundError) as e:
        admin.get_key("key_of_someone_else")
    assert e.value.status == 404 and e.value.request_id
    with pytest.raises(qlaud.NotFoundError):
        qlaud_client(server, user_key).create_message(model="no-such-model", messages=[])
    with pytest.raises(qlaud.BadRequestError) as e:
        admin.mint_key(name="x", max_spend_usd=-1)
    assert "negative" in e.value.message
    with pytest.raises(qlaud.ValidationError):
        admin.export_meter_events(period="2026-11", slice="fortnight")
    with pytest.raises(TypeError):
        admin.mint_key(name="x", no_such_argument=1)
    broke = qlaud_client(server, broke_key, max_retries=0)
    for call in (lambda: broke.create_message(model="echo", messages=[{"role": "user", "content": "hi"}]),
                 lambda: broke.create_chat_completion(model="echo", messages=[{"role": "user", "content": "hi"}])):
        with pytest.raises(qlaud.BudgetExceededError) as e:
            call()
        assert e.value.status == 402 and isinstance(e.value, qlaud.PaymentRequiredError)


def test_no_answer_is_a_connection_error(silent_server):
    with pytest.raises(qlaud.ApiConnectionError):
        qlaud.Client(api_key="k", base_url="http://127.0.0.1:1", max_retries=0).list_models()
    url = silent_server.url
    with pytest.raises(qlaud.ApiTimeoutError):
        qlaud.Client(api_key="k", base_url=url, max_retries=0, timeout=0.3).list_models()


def _sign(secret, payload):
    t = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_billing_operations_and_suspension(admin, server, tenant):
    settings = admin.update_billing_settings(webhook_secret="whsec_sdk", meter_event_name="sdk_spend")
    assert settings["webhook_secret_set"] and settings["meter_event_name"] == "sdk_spend"
    assert admin.get_billing_settings()["webhook_path"].endswith(tenant["tenant_id"])
    key = admin.mint_key(name="payer", metadata={"stripe_customer_id": "cus_sdk"})
    user = qlaud_client(server, key["secret"], max_retries=0)
    user.create_message(model="echo", messages=[{"role": "user", "content": "hi"}])

    period = time.strftime("%Y-%m", time.gmtime())
    preview = admin.get_invoice_preview(key_id=key["id"], period=period)
    usage = admin.get_usage(key_id=key["id"])
    assert preview["total_micros"] == usage["totals"]["cost_micros"] == ECHO_HI_MICROS
    events = admin.export_meter_events(period=period, slice="day")
    assert events["period"] == period and isinstance(events["events"], list)

    failed = json.dumps({"id": "evt_sdk_1", "object": "event", "type": "invoice.payment_failed",
                         "created": int(time.time()),
                         "data": {"object": {"object": "invoice", "customer": "cus_sdk"}}}).encode()
    result = admin.stripe_webhook(tenant["tenant_id"], failed, signature=_sign("whsec_sdk", failed))
    assert result["received"] and result["keys_changed"] == 1
    with pytest.raises(qlaud.KeySuspendedError) as e:
        user.create_message(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status == 402
    with pytest.raises(qlaud.KeySuspendedError):
        user.create_chat_completion(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert admin.list_key_billing_events(key["id"])[0]["stripe_event_type"] == "invoice.payment_failed"
    with pytest.raises(qlaud.BadRequestError):
        admin.stripe_webhook(tenant["tenant_id"], failed, signature="t=1,v1=00")


def test_async_client(server, tenant):
    async def main():
        async with qlaud.AsyncClient(api_key=tenant["master_key"], base_url=server["base_url"]) as admin:
            keys = await asyncio.gather(*(admin.mint_key(name=f"async{i}", max_spend_usd=1)
                                          for i in range(50)))
            assert len({k["id"] for k in keys}) == 50
            user = qlaud.AsyncClient(api_key=keys[0]["secret"], base_url=server["base_url"])
            msg = await user.create_message(model="echo", messages=[{"role": "user", "content": "yo"}])
            assert msg["content"][0]["text"] == "echo: yo"
            stream = await user.create_chat_completion(
                model="echo", messages=[{"role": "user", "content": "yo"}], stream=True)
            chunks = [c async for c in stream]
            assert chunks and chunks[0]["object"] == "chat.completion.chunk"
            seen = [k["id"] async for k in admin.iter_keys(limit=7)]
            assert {k["id"] for k in keys} <= set(seen)
            with pytest.raises(qlaud.NotFoundError):
                await admin.get_key("nope")
            usage = await admin.get_usage(key_id=keys[0]["id"])
            assert usage["totals"]["requests"] == 2
    asyncio.run(main())


def test_blocking_calls_release_the_gil(silent_server):
    url, accepted = silent_server.url, silent_server.accepted
    client = qlaud.Client(api_key="k", base_url=url, max_retries=0, timeout=5)
    outcome = []

    def call():
        # An exception raised in a thread is lost to pytest: keep the result.
        try:
            client.list_models()
            outcome.append("answered")
        except qlaud.ApiTimeoutError:
            outcome.append("timed out")
        except BaseException as e:  # noqa: BLE001 - reported below
            outcome.append(repr(e))

    caller = threading.Thread(target=call)
    caller.start()
    assert accepted.wait(5)
    # While the call waits on its socket, this thread runs Python freely.
    count, until = 0, time.monotonic() + 0.2
    while time.monotonic() < until:
        count += 1
    assert caller.is_alive() and count > 1000
    caller.join()
    assert outcome == ["timed out"]


def test_cancelling_an_awaitable_drops_the_call(silent_server):
    url, accepted = silent_server.url, silent_server.accepted

    async def main():
        client = qlaud.AsyncClient(api_key="k", base_url=url, timeout=None, max_retries=0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.get_usage(), 0.5)

    asyncio.run(main())
    assert accepted.wait(5)
    # The server side sees the connection closed: the Rust future is gone.
    conn = silent_server.conns[0]
    conn.settimeout(10)
    while conn.recv(4096):
        pass


def test_ctrl_c_interrupts_a_hung_call(silent_server):
    url, accepted = silent_server.url, silent_server.accepted
    script = textwrap.dedent(f"""
        import qlaud
        client = qlaud.Client(api_key="k", base_url="{url}", timeout=None)
        try:
            client.get_usage()
        except KeyboardInterrupt:
            print("interrupted")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert accepted.wait(30)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "interrupted"


def test_the_client_works_in_a_forked_child(admin):
    admin.list_models()  # the runtime and a pooled connection exist now
    pid = os.fork()
    if pid == 0:
        try:
            ok = any(m["id"] == "echo" for m in admin.list_models()["data"])
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert admin.list_models()["data"]


def test_defaults_come_from_the_environment(server, tenant, monkeypatch):
    monkeypatch.setenv("QLAUD_API_KEY", tenant["master_key"])
    monkeypatch.setenv("QLAUD_BASE_URL", server["base_url"])
    client = qlaud.Client()
    assert client.base_url == server["base_url"] and client.get_billing_settings()
    assert tenant["master_key"] not in repr(client)
    monkeypatch.delenv("QLAUD_API_KEY")
    with pytest.raises(ValueError, match="QLAUD_API_KEY"):
        qlaud.Client()
    with pytest.raises(ValueError):
        qlaud.Client(api_key="k", timeout=-1)


def test_stubs_match_the_module_and_examples_pass_mypy_strict():
    stubtest = subprocess.run([sys.executable, "-m", "mypy.stubtest", "qlaud._qlaud"],
                              capture_output=True, text=True)
    assert stubtest.returncode == 0, stubtest.stdout + stubtest.stderr
    mypy = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "quickstart.py", "typed.py"],
                          capture_output=True, text=True, cwd=EXAMPLES)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr


def test_the_typed_example_runs(server, tenant):
    env = dict(os.environ, QLAUD_API_KEY=tenant["master_key"], QLAUD_BASE_URL=server["base_url"])
    out = subprocess.run([sys.executable, str(EXAMPLES / "typed.py")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "message_stop" in out.stdout


def test_readme_python_example_runs_as_printed(server, tenant):
    example = (EXAMPLES / "quickstart.py").read_text()
    assert example in (ROOT / "README.md").read_text()
    assert len(example.strip().splitlines()) <= 13
    env = dict(os.environ, QLAUD_API_KEY=tenant["master_key"], QLAUD_BASE_URL=server["base_url"])
    out = subprocess.run([sys.executable, "-c", example], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "echo: Hello!"
    assert "micro-dollars" in out.stdout.splitlines()[1]


def test_the_wheel_installs_into_a_clean_venv(server, tenant, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "--quiet", "--no-index",
                    "--disable-pip-version-check", os.environ["QLAUD_WHEEL"]], check=True)
    probe = ("import qlaud, sys; c = qlaud.Client(api_key=sys.argv[1], base_url=sys.argv[2]); "
             "print(qlaud.__version__, [m['id'] for m in c.list_models()['data']][:1])")
    out = subprocess.run([str(venv / "bin/python"), "-c", probe, tenant["master_key"],
                          server["base_url"]], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(qlaud.__version__)
    site = next((venv / "lib").glob("python3*/site-packages/qlaud"))
    assert (site / "py.typed").exists() and (site / "_qlaud.pyi").exists()


def _wait_job(client, job_id, timeout=30.0):
    """Polls `get_job` as often as `poll_after_ms` says, until the job is final."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_job(job_id)
        if job["poll_after_ms"] is None:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(min(job["poll_after_ms"], 100) / 1000)


def test_jobs_submit_poll_list_and_cancel(admin, server):
    user = admin.mint_key(name="py-jobs")
    other = admin.mint_key(name="py-jobs-other")
    body = {"model": "claude-test", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hello job"}]}
    with qlaud_client(server, user["secret"]) as client:
        direct = client.create_message(**body)
        job = client.create_job(endpoint="/v1/messages", body=body, metadata={"batch": "1"})
        assert job["id"].startswith("job_") and job["object"] == "job"
        assert job["status"] == "queued" and job["key_id"] == user["id"]
        done = _wait_job(client, job["id"])
        assert done["status"] == "completed", done
        assert done["result"]["status_code"] == 200
        assert done["result"]["body"]["content"] == direct["content"]
        assert done["usage"] == direct["usage"]
        assert done["cost_micros"] == direct["usage"]["cost_micros"] > 0
        assert done["metadata"] == {"batch": "1"}
        assert [j["id"] for j in client.list_jobs()["items"]] == [job["id"]]
        assert client.list_jobs(status="queued")["items"] == []
        # Cancelling a final job changes nothing.
        assert client.cancel_job(job["id"])["status"] == "completed"
        with pytest.raises(qlaud.BadRequestError, match="stream"):
            client.create_job(endpoint="/v1/messages", body={**body, "stream": True})
        with pytest.raises(qlaud.BadRequestError, match="cannot run as a job"):
            client.create_job(endpoint="/v1/keys", body={"name": "x"})
        with qlaud_client(server, other["secret"]) as stranger:
            with pytest.raises(qlaud.NotFoundError):
                stranger.get_job(job["id"])
            with pytest.raises(qlaud.NotFoundError):
                stranger.cancel_job(job["id"])
    assert admin.get_job(job["id"])["id"] == job["id"]


def test_async_client_submits_jobs(server, tenant):
    async def main():
        client = qlaud.AsyncClient(api_key=tenant["master_key"], base_url=server["base_url"])
        job = await client.create_job(
            endpoint="/v1/embeddings", body={"model": "embed-test", "input": "a b c"})
        while job["poll_after_ms"] is not None:
            await asyncio.sleep(0.05)
            job = await client.get_job(job["id"])
        return job

    job = asyncio.run(main())
    assert job["status"] == "completed", job
    assert job["result"]["body"]["object"] == "list"


def test_wait_job_and_the_budget_held_at_submission(admin, server):
    user = admin.mint_key(name="py-wait-job", max_spend_usd=0.01)
    with qlaud_client(server, user["secret"]) as client:
        body = {"model": "claude-test", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hello waiting job"}]}
        job = client.create_job(endpoint="/v1/messages", body=body)
        done = client.wait_job(job["id"], timeout=30)
        assert done["status"] == "completed", done
        assert done["poll_after_ms"] is None
        assert done["result"]["body"]["content"][0]["text"] == "Hello from mock: hello waiting job"
        # `hang` never answers (the provider times out after 3 s), so each
        # accepted job holds its worst case (1000 output tokens at $1/M plus
        # the prompt, about $0.001) meanwhile: $0.01 holds nine, not twenty.
        accepted, refused = [], 0
        for i in range(20):
            try:
                accepted.append(client.create_job(endpoint="/v1/messages", body={
                    "model": "claude-hang", "max_tokens": 1000,
                    "messages": [{"role": "user", "content": f"job {i}"}]}))
            except qlaud.BudgetExceededError as e:
                assert (e.status, e.code) == (402, "spend_cap_reached")
                refused += 1
        assert 5 <= len(accepted) <= 10 and refused >= 10, (len(accepted), refused)
        # A timeout of 0 answers the job as it stands, still running.
        assert client.wait_job(accepted[0]["id"], timeout=0)["poll_after_ms"] is not None
        for j in accepted:
            done = client.wait_job(j["id"], timeout=60)
            assert done["status"] == "failed" and done["result"]["status_code"] == 504, done
        with pytest.raises(qlaud.ValidationError):
            client.wait_job(job["id"], timeout=-1)
        # The holds went back (a timeout bills nothing): jobs are accepted again.
        assert client.create_job(endpoint="/v1/messages", body=body)["status"] == "queued"

    async def main():
        async with qlaud.AsyncClient(api_key=user["secret"],
                                     base_url=server["base_url"]) as client:
            done = await client.wait_job(job["id"])
            assert done["status"] == "completed" and done["id"] == job["id"]

    asyncio.run(main())
