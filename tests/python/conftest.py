"""Starts the real qlaud binary in front of the mock upstream, for the
official openai and anthropic clients to talk to, unchanged."""

import json
import os
import pathlib
import subprocess
import time
import urllib.request

import pytest

# Every qlaud started here shares the embedding model the Rust tests fetch
# once per machine into the target directory.
os.environ.setdefault(
    "QLAUD_EMBED_MODEL_DIR",
    str(pathlib.Path(os.environ.get("QLAUD_BIN", "target/debug/qlaud")).resolve().parent.parent
        / "embed-model"),
)

FAULTS = ["error-500", "error-429", "error-400", "error-529", "hang", "cut"]


def _toml(mock):
    # A 2-second rate window, so the clients' retry after a 429 is quick;
    # only keys with rate limits are affected.
    out = f"""
[rate_limits]
window_secs = 2
[providers.anthropic]
kind = "anthropic"
base_url = "{mock['anthropic_base_url']}"
api_key = "mock-anthropic-key"
timeout_secs = 3

[providers.openai]
kind = "openai"
base_url = "{mock['openai_base_url']}"
api_key = "mock-openai-key"
timeout_secs = 3

# The audio providers, at the mock's root (their clients' base URLs have no /v1).
[providers.elevenlabs]
kind = "elevenlabs"
base_url = "{mock['anthropic_base_url']}"
api_key = "mock-elevenlabs-key"
timeout_secs = 3

[providers.deepgram]
kind = "deepgram"
base_url = "{mock['anthropic_base_url']}"
api_key = "mock-deepgram-key"
timeout_secs = 3

# Perplexity's Agent API, at the mock's root (its client's base URL has no /v1).
[providers.perplexity]
kind = "perplexity"
base_url = "{mock['anthropic_base_url']}"
api_key = "mock-openai-key"
timeout_secs = 3

[models."sonar-test"]
provider = "perplexity"
upstream = "sonar-upstream"
max_output_tokens = 1000
context_window = 1000
prices = {{ input = "1", output = "1", web_search_calls = "5000", fetch_url_calls = "500" }}

[models."claude-test"]
provider = "anthropic"
upstream = "claude-upstream"
max_output_tokens = 1000
prices = {{ input = "3", output = "15", cache_read = "0.3", cache_write = "3.75" }}

[models."gpt-test"]
provider = "openai"
upstream = "gpt-upstream"
max_output_tokens = 1000
prices = {{ input = "1.25", output = "10", cache_read = "0.125" }}

[models."embed-test"]
provider = "openai"
upstream = "embed-upstream"
kind = "embedding"
prices = {{ input = "0.02" }}
"""
    for fault in FAULTS:
        for prefix, provider in (("claude", "anthropic"), ("gpt", "openai")):
            out += f"""
[models."{prefix}-{fault}"]
provider = "{provider}"
max_output_tokens = 1000
prices = {{ input = "1", output = "1" }}
"""
    return out


@pytest.fixture(scope="session")
def mock():
    proc = subprocess.Popen(
        [os.environ["QLAUD_MOCK_BIN"], "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    info = json.loads(proc.stdout.readline())
    yield info
    proc.terminate()
    proc.wait(timeout=10)


# Every test that talks to qlaud runs once per store: the embedded SQLite
# and, when the test command has one, PostgreSQL.
PG_URL = os.environ.get("QLAUD_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgres"] if PG_URL else [])


def _psql(sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", PG_URL, "-c", sql],
                   check=True, capture_output=True)


@pytest.fixture(scope="session", params=BACKENDS)
def qlaud(request, mock, tmp_path_factory):
    root = tmp_path_factory.mktemp("qlaud")
    config = root / "qlaud.toml"
    config.write_text(_toml(mock))
    if request.param == "postgres":
        # A database of its own, dropped afterwards.
        name = f"qlaud_py_{os.getpid()}_{int(time.time() * 1000)}"
        _psql(f"CREATE DATABASE {name}")
        request.addfinalizer(lambda: _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        store = ["--database-url", PG_URL.rsplit("/", 1)[0] + "/" + name]
    else:
        store = ["--data-dir", str(root / "data")]
    log = root / "stderr.log"
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    env.pop("QLAUD_DATABASE_URL", None)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            # Local receivers take the webhooks: private targets allowed.
            [os.environ["QLAUD_BIN"], "serve", "--bind", "127.0.0.1:0", *store,
             "--config", str(config), "--allow-private-webhooks"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    master = json.loads(proc.stdout.readline())["master_key"]
    addr = None
    deadline = time.time() + 60
    while addr is None and time.time() < deadline:
        for line in pathlib.Path(log).read_text().splitlines():
            if "addr=" in line:
                addr = line.split("addr=")[1].split()[0]
        time.sleep(0.05)
    assert addr, pathlib.Path(log).read_text()
    yield {"base_url": f"http://{addr}", "master_key": master, "store_args": store}
    proc.terminate()
    proc.wait(timeout=10)


def mint(qlaud, body):
    req = urllib.request.Request(
        qlaud["base_url"] + "/v1/keys",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + qlaud["master_key"],
                 "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)["secret"]


@pytest.fixture(scope="session")
def user_key(qlaud):
    """A standard key, minted the way an app mints one per end user."""
    return mint(qlaud, {"name": "py_user", "max_spend_usd": 5})


@pytest.fixture(scope="session")
def broke_key(qlaud):
    """A key whose cap is already too small for any answer."""
    return mint(qlaud, {"name": "py_broke", "max_spend_usd": 0.000001})


@pytest.fixture
def anthropic_client(qlaud, user_key):
    import anthropic

    return anthropic.Anthropic(base_url=qlaud["base_url"], api_key=user_key, max_retries=0)


@pytest.fixture
def openai_client(qlaud, user_key):
    import openai

    return openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=user_key, max_retries=0)


def metric(qlaud, name):
    """The value of the unlabelled counter `name` on qlaud's /metrics."""
    with urllib.request.urlopen(qlaud["base_url"] + "/metrics") as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")


def mock_stats(mock):
    """What the mock upstream has seen: requests, tokens, the last body …"""
    with urllib.request.urlopen(f"http://{mock['addr']}/_mock/stats") as resp:
        return json.load(resp)
