"""`diff` of a file the two versions cut into chunks differently: the manifests cannot say
whether its bytes differ, and diff must say so (not "modified", not "unchanged"); `--inspect`
reads both sides and settles it.  Before, such a byte-identical file was reported modified and
`diff --exit-code` said 1."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app

MiB = 1024 * 1024


def cli(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "w.dat").write_bytes(os.urandom(3 * MiB))
    (d / "note.txt").write_text("x")
    return d


def push(url: str, src: Path, chunk: int) -> int:
    with ckptlake.open(url, chunk_size=chunk) as lake:
        return lake.push(src, "m", compression="none").version


def test_a_file_cut_differently_is_unknown_until_inspected(local_lake_url: str,
                                                            src: Path) -> None:
    push(local_lake_url, src, MiB)
    push(local_lake_url, src, 2 * MiB)  # same bytes, other cut
    with ckptlake.open(local_lake_url) as lake:
        d = lake.diff("m@v1", "m@v2")
        assert [(f["path"], f["content"]) for f in d.files["modified"]] == [("w.dat", "unknown")]
        assert not d.identical, "not comparable is not the same"
        est = lake.estimate_diff("m@v1", "m@v2", values=False, inspect=True)
        assert est.bytes_to_download == 6 * MiB  # both sides, whole
        d = lake.diff("m@v1", "m@v2", inspect=True)
        assert d.identical and d.files["modified"] == []
        assert [f["path"] for f in d.files["unchanged"]] == ["note.txt", "w.dat"]
        assert d.files["unchanged"][1]["bytes_fetched"] == 6 * MiB, "what settling it read"
    r = cli("--lake", local_lake_url, "diff", "m@v1", "m@v2", "--exit-code")
    assert r.exit_code == 1
    assert "cut into chunks differently: bytes not compared" in r.stdout
    r = cli("--lake", local_lake_url, "diff", "m@v1", "m@v2", "--exit-code", "--inspect")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "read 6.00 MiB to compare files cut into chunks differently" in r.stdout


def test_inspect_finds_a_changed_byte_in_a_file_cut_differently(local_lake_url: str,
                                                                src: Path) -> None:
    push(local_lake_url, src, MiB)
    data = bytearray((src / "w.dat").read_bytes())
    data[-1] ^= 1  # the last byte: the comparison reads to the end
    (src / "w.dat").write_bytes(bytes(data))
    push(local_lake_url, src, 2 * MiB)
    r = cli("--lake", local_lake_url, "diff", "m@v1", "m@v2", "--inspect", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    (entry,) = doc["files"]["modified"]
    assert (entry["path"], entry["content"]) == ("w.dat", "changed")
    assert entry["bytes_fetched"] == 6 * MiB
    assert doc["identical"] is False


def test_same_cut_other_bytes_is_changed_without_reading(local_lake_url: str,
                                                         src: Path) -> None:
    push(local_lake_url, src, MiB)
    data = bytearray((src / "w.dat").read_bytes())
    data[0] ^= 1
    (src / "w.dat").write_bytes(bytes(data))
    push(local_lake_url, src, MiB)
    with ckptlake.open(local_lake_url) as lake:
        d = lake.diff("m@v1", "m@v2")
        assert [(f["path"], f["content"]) for f in d.files["modified"]] == [("w.dat", "changed")]
        assert lake.estimate_diff("m@v1", "m@v2", values=False,
                                  inspect=True).bytes_to_download == 0


def test_only_the_executable_bit(local_lake_url: str, src: Path) -> None:
    push(local_lake_url, src, MiB)
    (src / "w.dat").chmod(0o755)
    push(local_lake_url, src, MiB)
    with ckptlake.open(local_lake_url) as lake:
        d = lake.diff("m@v1", "m@v2", inspect=True)
        assert [(f["path"], f["content"]) for f in d.files["modified"]] == [("w.dat", "mode")]
        assert not d.identical
        assert d.contents == [], "its bytes are the same: nothing to look into"
    r = cli("--lake", local_lake_url, "diff", "m@v1", "m@v2")
    assert "w.dat  3.00 MiB -> 3.00 MiB  (executable bit only)" in r.stdout
    # both: cut differently and the bit flipped: still modified, bytes unknown until read
    (src / "w.dat").chmod(0o644)
    push(local_lake_url, src, 2 * MiB)
    with ckptlake.open(local_lake_url) as lake:
        d = lake.diff("m@v2", "m@v3")
        assert [f["content"] for f in d.files["modified"]] == ["unknown"]
        d = lake.diff("m@v2", "m@v3", inspect=True)
        assert [f["content"] for f in d.files["modified"]] == ["mode"]
