"""The console in a real browser: Debian's Chromium, headless, driven by
Playwright, against the real qlaud binary on SQLite. Screenshots of every
page (desktop and 375 px wide) land in QLAUD_SCREENSHOT_DIR for review."""

import json
import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("QLAUD_CHROMIUM", "/usr/bin/chromium")
SHOTS = pathlib.Path(os.environ.get("QLAUD_SCREENSHOT_DIR", "target/dashboard-screens"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
PAGES = ["overview", "keys", "usage", "jobs", "billing", "models"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A qlaud of its own (fresh SQLite store) for the browser tests."""
    root = tmp_path_factory.mktemp("console")
    log = root / "stderr.log"
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    env.pop("QLAUD_DATABASE_URL", None)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [os.environ["QLAUD_BIN"], "serve", "--bind", "127.0.0.1:0",
             "--data-dir", str(root / "data")],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    master = json.loads(proc.stdout.readline())["master_key"]
    addr = None
    deadline = time.time() + 60
    while addr is None and time.time() < deadline:
        for line in log.read_text().splitlines():
            if "addr=" in line:
                addr = line.split("addr=")[1].split()[0]
        time.sleep(0.05)
    assert addr, log.read_text()
    yield {"base_url": f"http://{addr}", "master_key": master}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


class Recorder:
    """Every URL the page loaded, and the documents, scripts and styles it
    got, to check that no secret ever appears in them."""

    def __init__(self, page):
        self.urls = []
        self.responses = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("response", lambda r: self.responses.append(r))

    def assert_clean(self, secrets):
        bodies = []
        for r in self.responses:
            kind = r.headers.get("content-type", "")
            if any(t in kind for t in ("html", "javascript", "css", "svg")):
                bodies.append(r.text())
        assert bodies, "the console loaded no documents or scripts"
        for s in secrets:
            assert not any(s in u for u in self.urls), f"a secret in a URL: {self.urls}"
            assert not any(s in b for b in bodies), "a secret in a page or script"


def call(server, key, path="/v1/messages", body=None, method="POST", headers=None):
    """A raw API call: (status, JSON answer)."""
    if body is None and method == "POST":
        body = {"model": "echo", "max_tokens": 64,
                "messages": [{"role": "user", "content": "hello from the browser test"}]}
    h = {"content-type": "application/json", **(headers or {})}
    if key:
        h["x-api-key"] = key
    req = urllib.request.Request(server["base_url"] + path, method=method, headers=h,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def sign_in(page, server, key=None):
    page.goto(server["base_url"] + "/")
    expect(page).to_have_url(server["base_url"] + "/dashboard")
    page.fill("input[name=admin_key]", key or server["master_key"])
    page.get_by_role("button", name="Sign in").click()


def shoot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def nav(page, name):
    """Opens a page from the top bar and waits for it to load."""
    page.get_by_role("link", name=name.capitalize(), exact=True).click()
    expect(page.get_by_role("heading", name=name.capitalize(), exact=True)).to_be_visible()
    page.wait_for_load_state("networkidle")


def no_page_scroll(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("window.innerWidth")
    assert width <= viewport, f"the page scrolls sideways: {width} > {viewport}"


def test_console_flow(server, browser):
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    seen = Recorder(page)
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    # The browser holds a session cookie it cannot read from script, and
    # nothing in storage.
    cookie = next(c for c in ctx.cookies() if c["name"] == "qlaud_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "qlaud_session" not in page.evaluate("document.cookie")
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0

    # Mint a key and read its secret, once.
    nav(page, "keys")
    page.get_by_role("button", name="Mint key").click()
    page.get_by_label("Name").fill("user_42")
    page.get_by_label("Spend cap (USD)").fill("5")
    page.get_by_role("button", name="Mint key").last.click()
    secret_box = page.locator("dialog input.secret")
    secret = secret_box.input_value()
    shoot(page, "desktop-secret-once")
    assert secret.startswith("qlk_live_")
    page.get_by_role("button", name="Done").click()
    # The dialog leaves the page on its `close` event, a task after the click.
    expect(page.locator("dialog")).to_have_count(0)
    assert secret not in page.content(), "the secret is gone once the dialog closes"

    # Metered calls with it show up as spend in the table and the chart.
    for _ in range(3):
        assert call(server, secret)[0] == 200
    nav(page, "overview")
    expect(page.locator("rect.series[data-model=echo]")).to_have_count(1)
    nav(page, "keys")
    row = page.locator("tr", has_text="user_42")
    expect(row).to_contain_text("of $5.00")
    status, key = call(server, server["master_key"], "/v1/keys?search=user_42", method="GET")
    spent = key["items"][0]["spend_micros"]
    assert spent > 0
    expect(row).to_contain_text(f"${spent / 1e6:.6f}".rstrip("0"))
    page.get_by_role("link", name="user_42").click()
    expect(page.locator("rect.series[data-model=echo]")).to_have_count(1)
    expect(page.locator("section", has_text="Requests").locator("tbody tr")).to_have_count(3)
    shoot(page, "desktop-key")
    for p in PAGES:
        nav(page, p)
        shoot(page, f"desktop-{p}")
    nav(page, "keys")
    page.get_by_role("link", name="user_42").click()
    expect(page.get_by_role("heading", name="user_42")).to_be_visible()

    # Lower the cap below what was spent: the next request is refused.
    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Spend cap (USD)").fill("0.0001")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".capbar .bar.full")).to_have_count(1)
    status, body = call(server, secret)
    assert status == 402, body
    assert body["error"]["type"] == "billing_error"

    # Rotate: a new secret, shown once; the old one stops working.
    page.get_by_role("button", name="Rotate secret").click()
    page.locator("dialog").get_by_role("button", name="Rotate secret").click()
    rotated = page.locator("dialog input.secret").input_value()
    assert rotated.startswith("qlk_live_") and rotated != secret
    page.get_by_role("button", name="Done").click()
    assert call(server, secret)[0] == 401
    assert call(server, rotated)[0] == 402, "same key, same spend, same cap"

    # Revoke, after confirming.
    page.get_by_role("button", name="Revoke").click()
    page.locator("dialog").get_by_role("button", name="Revoke key").click()
    expect(page.locator("h1 .badge")).to_have_text("revoked")
    assert call(server, rotated)[0] == 401

    # Sign out: the session is revoked on the server, not only forgotten.
    csrf = page.evaluate("Q.state.csrf")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    status, _ = call(server, None, "/v1/keys", method="GET",
                     headers={"cookie": f"qlaud_session={cookie['value']}", "x-qlaud-csrf": csrf})
    assert status == 401
    seen.assert_clean([server["master_key"], secret, rotated, cookie["value"]])
    assert not errors, errors
    ctx.close()


def test_standard_key_cannot_sign_in(server, browser):
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    _, user = call(server, server["master_key"], "/v1/keys", {"name": "end user"})
    sign_in(page, server, user["secret"])
    expect(page.get_by_role("alert")).to_contain_text("standard")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert not [c for c in ctx.cookies() if c["name"] == "qlaud_session"]
    ctx.close()


def test_state_change_without_csrf_token_fails(server, browser):
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    mint = """async (withToken) => {
        const headers = {'Content-Type': 'application/json'};
        if (withToken) headers['X-Qlaud-Csrf'] = Q.state.csrf;
        const r = await fetch('/v1/keys', {method: 'POST', headers,
            body: JSON.stringify({name: 'csrf probe'})});
        return [r.status, await r.text()];
    }"""
    status, body = page.evaluate(mint, False)
    assert status == 403 and "x-qlaud-csrf" in body, body
    _, listed = call(server, server["master_key"], "/v1/keys?search=csrf%20probe", method="GET")
    assert listed["items"] == [], "nothing was minted"
    status, _ = page.evaluate(mint, True)
    assert status == 201
    ctx.close()


def test_narrow_screen_has_no_sideways_scroll(server, browser):
    for i in range(3):
        call(server, server["master_key"], "/v1/keys",
             {"name": f"customer-with-a-rather-long-name-{i}", "max_spend_usd": 1})
    ctx = browser.new_context(viewport=PHONE)
    page = ctx.new_page()
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    for p in PAGES:
        nav(page, p)
        no_page_scroll(page)
        shoot(page, f"phone-{p}")
    # The keys table and the chart fit and work.
    nav(page, "keys")
    page.get_by_role("link", name="customer-with-a-rather-long-name-0").click()
    expect(page.locator("svg.chart")).to_be_visible()
    assert page.locator("svg.chart").bounding_box()["width"] <= PHONE["width"]
    no_page_scroll(page)
    shoot(page, "phone-key")
    nav(page, "overview")
    chart = page.locator("svg.chart")
    expect(chart).to_be_visible()
    assert chart.bounding_box()["width"] <= PHONE["width"]
    ctx.close()


def tab_to(page, text, limit=120):
    """Presses Tab until the focused element reads `text`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "(document.activeElement && (document.activeElement.innerText"
            " || document.activeElement.value || '')).trim()")
        if focused == text:
            return
    raise AssertionError(f"Tab never reached {text!r}")


def test_keyboard_only_mint_rotate_revoke(server, browser):
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    page.goto(server["base_url"] + "/dashboard")
    # The key field has focus; type and press Enter.
    expect(page.locator("input[name=admin_key]")).to_be_focused()
    page.keyboard.type(server["master_key"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    tab_to(page, "Keys")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Keys")).to_be_visible()
    tab_to(page, "Mint key")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Name")).to_be_focused()
    page.keyboard.type("keyboard user")
    page.keyboard.press("Enter")
    secret = page.locator("dialog input.secret").input_value()
    assert secret.startswith("qlk_live_")
    tab_to(page, "Done")
    page.keyboard.press("Enter")
    expect(page.locator("dialog")).to_have_count(0)
    assert call(server, secret)[0] == 200
    tab_to(page, "keyboard user")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="keyboard user")).to_be_visible()
    tab_to(page, "Rotate secret")
    page.keyboard.press("Enter")
    # The confirmation's own button has focus.
    page.keyboard.press("Enter")
    rotated = page.locator("dialog input.secret").input_value()
    assert rotated != secret
    tab_to(page, "Done")
    page.keyboard.press("Enter")
    assert call(server, secret)[0] == 401
    assert call(server, rotated)[0] == 200
    expect(page.locator("dialog")).to_have_count(0)
    tab_to(page, "Revoke")
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    expect(page.locator("h1 .badge")).to_have_text("revoked")
    assert call(server, rotated)[0] == 401
    ctx.close()


def test_usage_groups_and_exports_csv(server, browser):
    _, key = call(server, server["master_key"], "/v1/keys", {"name": "csv user"})
    assert call(server, key["secret"])[0] == 200
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = ctx.new_page()
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    nav(page, "usage")
    expect(page.locator("tbody")).to_contain_text("csv user")
    page.get_by_label("Group by").select_option("model")
    expect(page.get_by_role("heading", name="By model", exact=True)).to_be_visible()
    expect(page.locator("tbody")).to_contain_text("echo")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    text = pathlib.Path(download.value.path()).read_text()
    lines = text.strip().splitlines()
    assert lines[0].startswith("model,cost_micros,cost_usd,requests"), text
    _, usage = call(server, server["master_key"], "/v1/usage", method="GET")
    echo = next(m for m in usage["by_model"] if m["model"] == "echo")
    assert f"echo,{echo['cost_micros']}," in text, text
    ctx.close()


def wait_job(server, key, job_id):
    for _ in range(200):
        status, job = call(server, key, f"/v1/jobs/{job_id}", method="GET")
        assert status == 200, job
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished")


def test_jobs_page_lists_filters_and_shows_a_job(server, browser):
    key = call(server, server["master_key"], "/v1/keys",
               body={"name": "batch_user", "max_spend_usd": 1})[1]["secret"]
    body = {"model": "echo", "max_tokens": 32,
            "messages": [{"role": "user", "content": "a job from the console test"}]}
    status, done = call(server, key, "/v1/jobs", body={"endpoint": "/v1/messages", "body": body,
                                                         "metadata": {"batch": "nightly"}})
    assert status == 202, done
    done = wait_job(server, key, done["id"])
    assert done["status"] == "completed"
    # A job whose call the cap refuses ends failed, with the endpoint's 402.
    broke = call(server, server["master_key"], "/v1/keys",
                 body={"name": "broke_user", "max_spend_usd": 0.000001})[1]["secret"]
    status, failed = call(server, broke, "/v1/jobs", body={"endpoint": "/v1/messages", "body": body})
    if status == 202:
        failed = wait_job(server, broke, failed["id"])
        assert failed["status"] == "failed"
    else:
        assert status == 402, failed
        failed = None

    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, server)
    nav(page, "jobs")
    table = page.locator("table")
    expect(table.get_by_role("link", name=done["id"])).to_be_visible()
    expect(page.locator("tr", has_text=done["id"]).locator(".badge")).to_have_text("completed")
    # Filtered by status, only the failed ones (or none) remain.
    page.get_by_label("Status").select_option("failed")
    expect(page.get_by_role("link", name=done["id"])).to_have_count(0)
    if failed:
        expect(page.get_by_role("link", name=failed["id"])).to_be_visible()
    else:
        expect(page.get_by_text("No failed jobs.")).to_be_visible()
    page.get_by_label("Status").select_option("")
    page.get_by_role("link", name=done["id"]).click()
    expect(page.get_by_role("heading", name="Job " + done["id"])).to_be_visible()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("/v1/messages")
    expect(facts).to_contain_text("nightly")
    expect(page.locator("pre.json")).to_contain_text("a job from the console test")
    # The cost shown is the job's own, and it has no cancel button.
    assert done["cost_micros"] > 0
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    shoot(page, "desktop-job")
    page.set_viewport_size(PHONE)
    no_page_scroll(page)
    shoot(page, "phone-job")
    assert not errors, errors
    ctx.close()
