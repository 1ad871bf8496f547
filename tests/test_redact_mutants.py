"""Checks of ckptlake/redact.py (and of where the manifest calls it) that a mutation review found
untested: each one fails when one piece of the redaction is taken away, and each names the
secret that would then be stored or printed (docs/format.md, "Secrets are never stored")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake import redact as redact_module
from ckptlake.cli.app import app
from ckptlake.core import push as push_module
from ckptlake.format import layout
from ckptlake.format.manifest import decode_manifest
from ckptlake.redact import redact, redact_metadata, remember_secrets

from test_security import _file_lake

SECRET = "S3CRETs3cret"


def _tamper(root: Path, **fields: Any) -> Path:
    """Rewrite demo@v1's manifest as another writer (or one from before redaction) left it."""
    path = root / layout.version_key("demo", 1)
    doc = json.loads(path.read_bytes())
    doc.update(fields)
    path.write_text(json.dumps(doc))
    return path


def _show_json(root: Path) -> str:
    r = CliRunner().invoke(app, ["show", "demo@v1", "--lake", str(root), "--json"])
    assert r.exit_code == 0, r.output
    return r.stdout + r.stderr


@pytest.fixture
def no_known_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty remembered set, restored afterwards (as test_redact_review.py resets it)."""
    monkeypatch.setattr(redact_module, "_known_secrets", ())
    monkeypatch.setattr(redact_module, "_known_recent", [])


# ---- 1. a tampered manifest's inputs are redacted on the way in ----------------------------------

def test_a_tampered_manifests_input_url_password_is_masked_when_read(tmp_path: Path) -> None:
    """An input URL's password (`https://u:PASSWORD@h/x`) written by another writer must not
    reach a reader: decode_manifest redacts inputs, and Lake.show returns them from there."""
    root = _file_lake(tmp_path)
    path = _tamper(root, inputs=[{"uri": f"https://u:{SECRET}@h/x"}])
    inputs = decode_manifest(path.read_bytes()).inputs
    assert SECRET not in json.dumps(list(inputs))
    assert any("https://h/x" in v for i in inputs for v in i.values())
    shown = ckptlake.open("file://" + root.as_posix()).show("demo@v1")
    assert SECRET not in repr(shown.inputs)


# ---- 2./3. provenance: dict keys and lists -------------------------------------------------------

def test_a_secret_in_a_provenance_key_is_not_shown(tmp_path: Path) -> None:
    """A provenance `env` mapping whose key is `token=SECRET` prints the token as a key
    unless redact_data redacts keys as well as values."""
    root = _file_lake(tmp_path)
    _tamper(root, provenance={"env": {f"token={SECRET}": "1"}})
    out = _show_json(root)
    assert SECRET not in out
    assert "token=***" in out


def test_a_secret_in_a_provenance_list_is_not_shown(tmp_path: Path) -> None:
    """A URL password inside a provenance list (`"extra": ["https://u:PW@h/x"]`) prints
    unless redact_data goes into lists."""
    root = _file_lake(tmp_path)
    _tamper(root, provenance={"extra": [f"https://u:{SECRET}@h/x"]})
    out = _show_json(root)
    assert SECRET not in out
    assert "https://h/x" in out


# ---- 4.-7. secret names ----------------------------------------------------------------------------

def test_a_qualified_key_names_a_secret() -> None:
    """`key` qualified by account/client/session is a credential (an Azure storage account key,
    an OAuth client key, a session key): its value would be printed as is."""
    for name in ("AZURE_STORAGE_ACCOUNT_KEY", "client_key", "session_key"):
        assert redact(f"{name}=abc123") == f"{name}=***", name
    assert redact("sort_key=abc123") == "sort_key=abc123"


def test_a_cookie_header_is_masked() -> None:
    """`Cookie: sessionid=...` in an HTTP error message is a logged-in session."""
    assert redact("Cookie: sessionid=abc123def") == "Cookie: ***"


def test_an_azure_sas_value_is_masked() -> None:
    """`sas=` carries an Azure shared access signature."""
    assert redact("sas=abc123") == "sas=***"


def test_a_pwd_value_is_masked() -> None:
    """`db_pwd=` is a database password."""
    assert redact("db_pwd=x1") == "db_pwd=***"


# ---- 8. remembered secrets -----------------------------------------------------------------------

def test_a_remembered_secret_holding_another_is_masked_whole(no_known_secrets: None) -> None:
    """When a shorter remembered secret is a prefix of a longer one, replacing the shorter
    first leaves the longer one's tail (`***345678`) printed."""
    remember_secrets(["abcdefgh12", "abcdefgh12345678"])
    assert redact("key abcdefgh12345678 end") == "key *** end"
    remember_secrets(["abcdefgh12345678", "abcdefgh12"])
    assert redact("key abcdefgh12345678 end") == "key *** end"


def test_remembered_secrets_of_eight_characters_are_masked(no_known_secrets: None) -> None:
    """A store secret of 8 characters is masked; one of 7 would blank innocent words."""
    remember_secrets(["Ab3dEf7h", "Zy9wVu6"])
    assert redact("x Ab3dEf7h y") == "x *** y"
    assert redact("x Zy9wVu6 y") == "x Zy9wVu6 y"


# ---- 9.-11. bounds, URLs, metadata ---------------------------------------------------------------

def test_a_long_secret_value_is_masked_whole() -> None:
    """The bound on a masked value's length is for hostile megabytes; a 300-character token
    must not have its tail printed."""
    out = redact("hf_token=" + "x" * 300 + "TAIL")
    assert "TAIL" not in out
    assert out == "hf_token=***"


def test_user_info_ends_at_the_next_url() -> None:
    """Two URLs in one token: the first one's user info runs to its own last `@`, not to the
    second URL's `@v1` (which would swallow `h/x,s3://b/y`)."""
    assert redact("https://u:pw@h/x,s3://b/y@v1") == "https://h/x,s3://b/y@v1"


def test_an_empty_secret_metadata_value_stays_empty() -> None:
    """An empty value is no secret: `***` would claim one was given (and hide that none was)."""
    assert redact_metadata({"hf_token": ""}) == {"hf_token": ""}
    assert redact_metadata({"hf_token": "x"}) == {"hf_token": "***"}


# ---- 13. created_by is stored redacted -----------------------------------------------------------

def test_created_by_is_stored_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user name or host holding `token=SECRET` would be written into every manifest."""
    monkeypatch.setattr(push_module, "user_at_host", lambda: f"u:token={SECRET}@h")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    lake = ckptlake.open("file://" + (tmp_path / "lake").as_posix())
    lake.push(src, "demo")
    raw = (tmp_path / "lake" / layout.version_key("demo", 1)).read_text()
    assert SECRET not in raw
    assert "token=***" in json.loads(raw)["created_by"]
