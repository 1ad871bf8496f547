"""verify's word on orphan chunks while a manifest is unreadable: gc does not collect them then
(it refuses to run), and they may be that manifest's chunks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.format import layout

ART = "g/run/ckpt"


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def two_versions(url: str, tmp_path: Path) -> Any:
    """v2 holds a file v1 does not: its chunk is v2's alone."""
    lake = ckptlake.open(url, chunk_size=1 << 20)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"first")
    lake.push(src, ART)
    (src / "b.txt").write_bytes(b"second")
    lake.push(src, ART)
    return lake


def test_a_truncated_manifests_chunks_are_not_promised_to_gc(local_lake_url: str,
                                                             tmp_path: Path) -> None:
    lake = two_versions(local_lake_url, tmp_path)
    key = layout.version_key(ART, 2)
    lake.store.put(key, lake.store.get(key)[:40])  # not JSON any more: gc cannot read it
    r = cli("verify", "--lake", local_lake_url)
    assert r.exit_code == 5
    assert "gc collects them" not in r.stdout
    assert (f"orphan chunks: 1 (11 B), referenced by no readable manifest: they may belong "
            f"to {key} (unreadable or lost), and gc will not run until it is repaired or removed"
            ) in r.stdout  # v2's pack of a.txt and b.txt
    doc = json.loads(cli("verify", "--lake", local_lake_url, "--json").stdout)
    assert [(p["kind"], p["version"], p.get("blocks_gc")) for p in doc["problems"]] == [
        ("manifest", 2, True)]
    lake.close()


def test_a_readable_but_unusable_manifest_keeps_its_chunks_and_gc_runs(
        local_lake_url: str, tmp_path: Path) -> None:
    """Its chunk list is read as gc reads it: they are not orphans, and nothing blocks gc."""
    lake = two_versions(local_lake_url, tmp_path)
    key = layout.version_key(ART, 2)
    raw = json.loads(lake.store.get(key))
    lake.store.put(key, json.dumps({**raw, "version": 7}).encode())  # names another version
    doc = json.loads(cli("verify", "--lake", local_lake_url, "--json").stdout)
    assert doc["orphan_chunks"] == 0
    assert [(p["kind"], p.get("blocks_gc")) for p in doc["problems"]] == [("manifest", None)]
    lake.store.put(key, b"")
    lake.close()
