"""What a review found past the lost-version check (tests/test_lost_manifest.py): an empty
tombstone counted as the record of a deletion, a manifest that vanished between gc's mark
listing and its read, and a version whose summary did not fit in a key."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ckptlake.core import gc as gcmod
from ckptlake.core.gc import _Marker, _Scratch
from ckptlake.errors import IntegrityError
from ckptlake.format import layout
from ckptlake.store.local import LocalStore

from test_lost_manifest import ART, _policy, run, three_versions


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcmod, "LOST_RECHECK", 0.0)


def _chunks(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "chunks").rglob("*") if p.is_file())


def test_an_empty_tombstone_beside_a_lost_version_records_no_deletion(tmp_path: Path) -> None:
    """rm's tombstone PUT cut after its head: rm failed, v2 stayed live beside a 0-byte
    tombstone.  When v2's manifest is then lost, gc swept its chunks as a deleted version's."""
    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    tomb = root / layout.tombstone_key(ART, 2)
    tomb.parent.mkdir(parents=True, exist_ok=True)
    tomb.write_bytes(b"")
    assert run("ls", ART, "--lake", url, "--json").exit_code == 0  # v2 still live
    (root / layout.version_key(ART, 2)).unlink()
    chunks = _chunks(root)
    r = run("verify", "--lake", url)
    assert r.exit_code == 5 and f"v2 of {ART} is lost" in r.output, r.output
    policy = _policy(tmp_path)
    r = run("gc", "--policy", policy, "--lake", url, "--yes")
    assert r.exit_code == 5 and f"{ART}@v2 is lost" in r.stderr, r.output
    assert _chunks(root) == chunks
    # the way out gc names works: rm records it (the empty tombstone is replaced)
    r = run("rm", f"{ART}@v2", "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert tomb.stat().st_size > 0
    assert run("gc", "--policy", policy, "--lake", url, "--yes").exit_code == 0
    assert run("verify", "--lake", url).exit_code == 0


class _VanishingStore(LocalStore):
    """Deletes one manifest just before gc's mark reads it (after its listing)."""

    def __init__(self, root: Path, victim: str) -> None:
        super().__init__(str(root))
        self.victim, self.armed, self.root_path = victim, True, Path(self.root)

    def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        if self.armed and key == self.victim:
            self.armed = False
            (self.root_path / key).unlink()
        return super().get(key, *args, **kwargs)


def test_a_manifest_gone_between_the_marks_listing_and_its_read_stops_the_mark(
        tmp_path: Path) -> None:
    """The mark took a listed manifest it could no longer read for one another gc had deleted,
    and left its chunks out of L: a chunk of it rescued from a ripe condemnation was swept."""
    root = tmp_path / "lake"
    three_versions(root, tmp_path / "src")
    store = _VanishingStore(root, layout.version_key(ART, 2))
    scratch = _Scratch()
    try:
        with pytest.raises(IntegrityError, match=f"{ART}@v2 is lost"):
            _Marker(store, time.monotonic, scratch).mark()
    finally:
        scratch.close()


def test_a_manifest_a_deleter_took_between_the_listing_and_the_read_is_no_loss(
        tmp_path: Path) -> None:
    root = tmp_path / "lake"
    three_versions(root, tmp_path / "src")
    store = _VanishingStore(root, layout.version_key(ART, 2))
    # the deleter's tombstone first, as every ckptlake deleter writes it
    from ckptlake.core import tombstones
    from ckptlake.format.manifest import decode_manifest

    m = decode_manifest((root / layout.version_key(ART, 2)).read_bytes())
    assert tombstones.write(store, tombstones.from_manifest(
        m, deleted=m.created, rule=tombstones.RM_RULE, reason="test"))
    scratch = _Scratch()
    try:
        marker = _Marker(store, time.monotonic, scratch)
        marker.mark()
        assert not store.armed  # the manifest did vanish under it
    finally:
        scratch.close()


def test_a_version_whose_summary_does_not_fit_a_key_is_still_known_lost(tmp_path: Path
                                                                        ) -> None:
    """No summary key was written for it, so nothing recorded that it existed: verify said
    "no problems found" and gc swept its chunks once its manifest was deleted by hand."""
    import hashlib

    root = tmp_path / "lake"
    url = f"file://{root}"
    src = tmp_path / "src"
    src.mkdir()
    metrics = [f"{hashlib.sha256(bytes([i])).hexdigest()[:24]}={i / 7}" for i in range(40)]
    for n in (1, 2, 3):
        (src / "w.bin").write_bytes(bytes([n]) * 5000)
        extra = [a for m in metrics for a in ("--metric", m)] if n == 2 else []
        assert run("push", src, ART, "--lake", url, *extra).exit_code == 0
    [key] = (root / "artifacts" / ART / "@s").glob("0000000002.*")
    assert key.name == "0000000002.e"
    r = run("ls", ART, "--lake", url, "--json")  # the manifest answers for v2
    assert r.exit_code == 0 and len(__import__("json").loads(r.stdout)["versions"][1][
        "metrics"]) == 40, r.output
    (root / layout.version_key(ART, 2)).unlink()
    chunks = _chunks(root)
    assert run("verify", "--lake", url).exit_code == 5
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 5 and f"{ART}@v2 is lost" in r.stderr, r.output
    assert _chunks(root) == chunks
    r = run("rm", f"{ART}@v2", "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
