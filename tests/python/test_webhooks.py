"""Spend alerts verified with the official `standardwebhooks` package and
the secret `rotate_webhook_secret` returned through the Python wheel; after
another rotation the old secret verifies nothing qlaud sends."""

import http.server
import json
import os
import subprocess
import threading
import time
from decimal import Decimal

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import qlaud


@pytest.fixture(scope="module")
def server(qlaud):
    """The running qlaud (named so as not to hide the `qlaud` module)."""
    return qlaud


@pytest.fixture(scope="module")
def tenant(server):
    """A tenant of its own: its alert URL reaches no other test."""
    out = subprocess.run(
        [os.environ["QLAUD_BIN"], "admin", "create-tenant", "--name", "webhooks",
         *server["store_args"]],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def admin(server, tenant):
    with qlaud_client(server, tenant["master_key"]) as client:
        yield client


def qlaud_client(server, key):
    return qlaud.Client(api_key=key, base_url=server["base_url"], max_retries=0)


@pytest.fixture(scope="module")
def receiver():
    """A local endpoint that keeps every POST: (headers, raw body)."""
    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", got
    server.shutdown()


def _alerts_of(got, key_id, want=3, timeout=15):
    """The alerts received for `key_id`, once `want` of them are in."""
    deadline = time.time() + timeout
    while True:
        mine = [(h, b) for h, b in list(got) if json.loads(b)["key_id"] == key_id]
        if len(mine) >= want or time.time() > deadline:
            return mine
        time.sleep(0.1)


def _spend_to_the_cap(server, admin, name):
    """A key capped at 10,000 µ$, called with echo (42 µ$ a call, with
    under 700 µ$ held while it runs) until the cap refuses it: its 50, 80
    and 100 % alerts follow."""
    key = admin.mint_key(name=name, max_spend_usd=Decimal("0.01"))
    user = qlaud_client(server, key["secret"])
    for _ in range(400):
        try:
            user.create_message(model="echo", max_tokens=4,
                                messages=[{"role": "user", "content": "hi"}])
        except qlaud.PaymentRequiredError:
            return key["id"]
    raise AssertionError("the cap never refused")


def test_alerts_verify_with_the_rotated_secret_and_not_after_rotation(server, admin, receiver):
    url, got = receiver
    admin.update_billing_settings(alert_webhook_url=url)
    try:
        first = admin.rotate_webhook_secret()
        assert first["secret"].startswith("whsec_") and first["created_at"]

        key_id = _spend_to_the_cap(server, admin, "alerted_1")
        alerts = _alerts_of(got, key_id)
        assert sorted(json.loads(b)["threshold_percent"] for _, b in alerts) == [50, 80, 100]
        for headers, body in alerts:
            payload = Webhook(first["secret"]).verify(body, headers)
            assert payload["key_id"] == key_id and payload["type"] == "spend_alert"
            # The deprecated header still rides along during its window.
            assert headers["qlaud-signature"].startswith("t=")

        second = admin.rotate_webhook_secret()
        assert second["secret"] != first["secret"]
        key_id = _spend_to_the_cap(server, admin, "alerted_2")
        alerts = _alerts_of(got, key_id)
        assert len(alerts) == 3
        for headers, body in alerts:
            assert Webhook(second["secret"]).verify(body, headers)["key_id"] == key_id
            with pytest.raises(WebhookVerificationError):
                Webhook(first["secret"]).verify(body, headers)
    finally:
        admin.update_billing_settings(alert_webhook_url="")


def test_only_admin_keys_rotate(server, admin):
    user = admin.mint_key(name="not_admin")
    with pytest.raises(qlaud.PermissionDeniedError):
        qlaud_client(server, user["secret"]).rotate_webhook_secret()
