"""Secrets a mutation review of ckptlake/redact.py found stored in clear: a secret option's value
starting with `-`, a `--meta` key holding a URL's password, and a `created_by` read from a
manifest (and copied into the tombstone `rm` leaves, the very step meant to take a secret out)."""
from __future__ import annotations

import json
from pathlib import Path

import ckptlake
from ckptlake.format import layout
from ckptlake.format.manifest import decode_manifest
from ckptlake.redact import redact, redact_argv

SECRET = "hunter2hunter2"


def test_a_secret_options_value_starting_with_a_dash_is_masked() -> None:
    """A random token starts with `-` one time in 64; the parser takes it as the value."""
    assert redact_argv(["--password", "-Xy9SeCrEt"]) == ["--password", "***"]
    assert "SeCrEt" not in redact("ran with --password -Xy9SeCrEt today")
    # the next option is still an option
    assert redact_argv(["--hf-token", "--debug"]) == ["--hf-token", "--debug"]
    assert redact("--hf-token --debug") == "--hf-token --debug"


def test_a_metadata_key_loses_a_urls_password(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    lake = ckptlake.open("file://" + (tmp_path / "lake").as_posix())
    lake.push(src, "demo", metadata={f"https://u:{SECRET}@host/ds": "v1"})
    raw = (tmp_path / "lake" / layout.version_key("demo", 1)).read_text()
    assert SECRET not in raw
    assert "https://host/ds" in json.loads(raw)["metadata"]


def test_created_by_is_redacted_when_read_and_in_the_tombstone(tmp_path: Path) -> None:
    """A manifest written by another writer (or before redaction) with a secret in created_by:
    readers get it masked, and `rm` (the leaked-secret recipe) leaves no copy of it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    lake = ckptlake.open("file://" + (tmp_path / "lake").as_posix())
    lake.push(src, "a")
    path = tmp_path / "lake" / layout.version_key("a", 1)
    doc = json.loads(path.read_text())
    doc["created_by"] = f"https://u:{SECRET}@h token={SECRET}"
    path.write_text(json.dumps(doc))
    assert SECRET not in decode_manifest(path.read_bytes()).created_by
    lake.push(src, "a", provenance=False)
    lake.delete("a@v1")
    stored = b"".join(p.read_bytes() for p in (tmp_path / "lake").rglob("*") if p.is_file())
    assert SECRET.encode() not in stored

