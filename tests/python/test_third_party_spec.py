"""The published OpenAPI document is valid and a third-party generator
(openapi-python-client) makes a working client from it."""

import importlib
import json
import pathlib
import subprocess
import sys
import urllib.request

from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

SPEC = pathlib.Path(__file__).resolve().parents[2] / "openapi" / "qlaud.json"


def test_spec_is_valid_openapi():
    spec, _ = read_from_filename(str(SPEC))
    validate(spec)
    # Every operation and field says what it is.
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary"), f"{method} {path}"


def test_generated_client_works_against_qlaud(qlaud, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("post_hooks: []\n")
    out = tmp_path / "generated"
    subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "openapi-python-client"), "generate",
         "--path", str(SPEC), "--output-path", str(out), "--config", str(config)],
        check=True, capture_output=True,
    )
    sys.path.insert(0, str(out))
    try:
        client_mod = importlib.import_module("qlaud_client")
        mint_key = importlib.import_module("qlaud_client.api.keys.mint_key")
        get_usage = importlib.import_module("qlaud_client.api.usage.get_usage")
        models = importlib.import_module("qlaud_client.models")
        client = client_mod.AuthenticatedClient(base_url=qlaud["base_url"], token=qlaud["master_key"])
        key = mint_key.sync(client=client, body=models.MintKeyRequest(name="third_party", max_spend_usd=5))
        assert key.secret.startswith("qlk_live_")
        assert key.max_spend_micros == 5_000_000
        # One call with the new key: "hi there" is 2 input and 5 output
        # tokens at the mock, 2 × $3 + 5 × $15 per million = 81 µ$.
        req = urllib.request.Request(
            qlaud["base_url"] + "/v1/messages",
            data=json.dumps({"model": "claude-test", "max_tokens": 100,
                             "messages": [{"role": "user", "content": "hi there"}]}).encode(),
            headers={"x-api-key": key.secret, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200
        usage = get_usage.sync(client=client, key_id=key.id)
        assert (usage.totals.requests, usage.totals.cost_micros) == (1, 81)
        assert [(k.key_name, k.cost_micros) for k in usage.by_key] == [("third_party", 81)]
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.startswith("qlaud_client")]:
            del sys.modules[name]
