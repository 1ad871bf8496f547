"""A version deleted (by gc or `ckptlake rm`) while it is being pulled or read: its chunks may
be swept under the reader, which must then say the version was deleted (NotFound, exit 3,
from its tombstone), not that the lake lost a chunk (exit 5, "run verify").  A chunk missing
from a version that still exists stays exit 5.  (The chaos soak met the first case as an
exit 5 whose hint blamed a crashed push.)"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.errors import EXIT_INTEGRITY, EXIT_NOT_FOUND, MissingChunk, NotFound
from ckptlake.format import layout
from ckptlake.lake import Lake

ART = "p/ckpt"


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    return ckptlake.open(f"file://{tmp_path / 'lake'}")


def _two_versions(lake: Lake, tmp_path: Path) -> None:
    """v1 with a large file (its own chunks) and a small one (packed); v2 to be the latest,
    which rm refuses to delete."""
    for v in (1, 2):
        src = tmp_path / f"src{v}"
        src.mkdir()
        (src / "model.bin").write_bytes(os.urandom(3 << 20) + bytes([v]))
        (src / "config.json").write_text(f'{{"v": {v}}}')
        lake.push(src, ART)


def _chunk_files(lake_dir: Path) -> list[Path]:
    return sorted(p for p in (lake_dir / "chunks").rglob("*") if p.is_file())


def _v1_only_chunks(lake: Lake) -> list[str]:
    m1 = lake._manifest(f"{ART}@v1")
    m2 = lake._manifest(f"{ART}@v2")
    return sorted(m1.chunk_digests() - m2.chunk_digests())


def _sweep_on_first_get(lake: Lake, monkeypatch: pytest.MonkeyPatch, *, delete: bool) -> None:
    """The first chunk GET first deletes v1 (if `delete`) and removes v1's own chunks, as a gc
    sweep racing the reader would."""
    store_type = type(lake.store)
    victims = [layout.chunk_key(d) for d in _v1_only_chunks(lake)]
    done: list[bool] = []

    def sweep_first(original: Any) -> Any:
        def wrapper(self: Any, key: str, *args: Any, **kw: Any) -> Any:
            if key.startswith("chunks/") and not done:
                done.append(True)
                if delete:
                    lake.delete(f"{ART}@v1", reason="bad run")
                self.delete(victims)
            return original(self, key, *args, **kw)
        return wrapper

    for name in ("get", "get_into", "get_range", "get_range_into"):
        monkeypatch.setattr(store_type, name, sweep_first(getattr(store_type, name)))


def test_pull_of_a_version_deleted_meanwhile_is_not_found(lake: Lake, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    _two_versions(lake, tmp_path)
    _sweep_on_first_get(lake, monkeypatch, delete=True)
    with pytest.raises(NotFound) as err:
        lake.pull(f"{ART}@v1", tmp_path / "out", use_cache=False)
    text = str(err.value)
    assert err.value.exit_code == EXIT_NOT_FOUND
    assert f"{ART}@v1 was deleted with ckptlake rm" in text
    assert "while it was being pulled; nothing of it was placed" in text
    assert "bad run" in (err.value.hint or "")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_chunk_missing_from_a_version_that_exists_is_still_exit_5(
        lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_versions(lake, tmp_path)
    _sweep_on_first_get(lake, monkeypatch, delete=False)
    with pytest.raises(MissingChunk) as err:
        lake.pull(f"{ART}@v1", tmp_path / "out", use_cache=False)
    assert err.value.exit_code == EXIT_INTEGRITY
    assert "missing from the lake" in str(err.value)
    assert "ckptlake verify" in (err.value.hint or "")


def test_cat_of_a_version_deleted_meanwhile_is_not_found(lake: Lake, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    _two_versions(lake, tmp_path)
    _sweep_on_first_get(lake, monkeypatch, delete=True)
    chunks = lake.cat(f"{ART}@v1", "model.bin")
    with pytest.raises(NotFound, match=r"@v1 was deleted with ckptlake rm .* while it was "
                                       r"being read"):
        b"".join(chunks)


def test_open_of_a_version_deleted_meanwhile_is_not_found(lake: Lake, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Lake.open (what torch loads read through) and whole-file reads."""
    _two_versions(lake, tmp_path)
    _sweep_on_first_get(lake, monkeypatch, delete=True)
    with pytest.raises(NotFound, match=r"@v1 was deleted with ckptlake rm .* while it was "
                                       r"being read") as err:
        with lake.open(f"{ART}@v1", "model.bin") as f:
            f.read()
    assert err.value.exit_code == EXIT_NOT_FOUND
