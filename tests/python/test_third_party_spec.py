"""The published OpenAPI document is valid and a third-party generator
(openapi-python-client) makes a working client from it."""

import importlib
import pathlib
import subprocess
import sys

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
        usage = get_usage.sync(client=client)
        assert usage.totals.requests >= 0
        assert isinstance(usage.by_key, list)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.startswith("qlaud_client")]:
            del sys.modules[name]
