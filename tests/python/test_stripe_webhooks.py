"""Stripe webhooks signed by the official `stripe` package: a failed payment
locks the user out within one webhook, a paid invoice lets them back in, and
tampered, stale or unsigned deliveries change nothing."""

import json
import time
import urllib.error
import urllib.request

import openai
import pytest
import stripe

from conftest import mint

WHSEC = "whsec_py_test_secret"


def _admin(qlaud, method, path, body=None):
    req = urllib.request.Request(
        qlaud["base_url"] + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + qlaud["master_key"], "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def _deliver(qlaud, payload, header):
    tenant = _admin(qlaud, "GET", "/v1/billing/settings")["webhook_path"]
    req = urllib.request.Request(qlaud["base_url"] + tenant, data=payload.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if header is not None:
        req.add_header("Stripe-Signature", header)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _event(event_id, kind, customer, created):
    return json.dumps({"id": event_id, "object": "event", "type": kind, "created": created,
                       "data": {"object": {"object": "invoice", "customer": customer}}})


@pytest.fixture(scope="module")
def paying_user(qlaud):
    _admin(qlaud, "PATCH", "/v1/billing/settings", {"webhook_secret": WHSEC})
    return mint(qlaud, {"name": "py_paying", "metadata": {"stripe_customer_id": "cus_py"}})


def test_payment_failed_then_paid_round_trip(qlaud, paying_user):
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=paying_user, max_retries=0)
    ask = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    client.chat.completions.create(**ask)

    failed = _event("evt_py_1", "invoice.payment_failed", "cus_py", int(time.time()))
    header = stripe.WebhookSignature.generate_signature_header(failed, WHSEC)
    status, body = _deliver(qlaud, failed, header)
    assert status == 200 and body["keys_changed"] == 1, body
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**ask)
    assert info.value.status_code == 402 and info.value.code == "payment_failed"

    # Redelivery (Stripe delivers at least once) is a no-op.
    status, body = _deliver(qlaud, failed, stripe.WebhookSignature.generate_signature_header(failed, WHSEC))
    assert status == 200 and body["duplicate"] is True

    paid = _event("evt_py_2", "invoice.paid", "cus_py", int(time.time()) + 1)
    status, body = _deliver(qlaud, paid, stripe.WebhookSignature.generate_signature_header(paid, WHSEC))
    assert status == 200 and body["keys_changed"] == 1
    assert client.chat.completions.create(**ask).choices[0].message.content == "echo: hi"


def test_tampered_stale_and_unsigned_are_refused(qlaud, paying_user):
    failed = _event("evt_py_bad", "invoice.payment_failed", "cus_py", int(time.time()))
    header = stripe.WebhookSignature.generate_signature_header(failed, WHSEC)
    tampered = failed.replace("cus_py", "cus_other")
    stale = stripe.WebhookSignature.generate_signature_header(failed, WHSEC, timestamp=int(time.time()) - 600)
    wrong = stripe.WebhookSignature.generate_signature_header(failed, "whsec_someone_else")
    for payload, h in [(tampered, header), (failed, stale), (failed, wrong), (failed, None)]:
        status, body = _deliver(qlaud, payload, h)
        assert status == 400, body
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=paying_user, max_retries=0)
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "still works"}])
