"""A push that deduplicates against a damaged chunk object must not commit on top of it.

An object smaller than its raw chunk counts as a frame another pusher stored; before this
check a raw chunk cut short (by hand, by a disk) was taken for one, the re-push committed a
version no pull could read (exit 0), and its manifest recorded the damaged size, so verify
then accepted it too."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import ckptlake
from ckptlake.format import layout

MiB = 1 << 20


def chunk_objects(lake, version_key: str) -> dict[str, int]:
    m = json.loads(lake.store.get(version_key))
    digests = {c["digest"] if isinstance(c, dict) else c[0]
               for f in m["files"] for c in f.get("chunks", [])}
    return {layout.chunk_key(d): lake.store.stat(layout.chunk_key(d)).size for d in digests}


@pytest.fixture(params=["local", "seaweedfs"])
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("local_lake_url" if request.param == "local"
                                   else "s3_lake_url")


def test_a_repush_rewrites_a_raw_chunk_cut_short(url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.bin").write_bytes(os.urandom(3 * MiB))  # incompressible: stored raw
    with ckptlake.open(url, chunk_size=MiB) as lake:
        lake.push(src, "t/a")
        objs = chunk_objects(lake, layout.version_key("t/a", 1))
        key = sorted(k for k, size in objs.items() if size == MiB)[0]
        good = lake.store.get(key)
        lake.store.put(key, good[:1000])  # damaged: cut short, not empty
        r = lake.push(src, "t/b")
        assert r.chunks_uploaded == 1 and r.bytes_uploaded == MiB
        assert lake.store.get(key) == good  # written again: t/a is whole again too
        for art in ("t/a", "t/b"):
            lake.pull(art, tmp_path / art.replace("/", "_"))
            assert (tmp_path / art.replace("/", "_") / "x.bin").read_bytes() == \
                (src / "x.bin").read_bytes()
        assert lake.verify().ok


def test_a_repush_still_deduplicates_real_frames(url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    w = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float32)
    np.save(src / "w.npy", w)
    with ckptlake.open(url, chunk_size=MiB) as lake:
        first = lake.push(src, "t/f", compression="auto")
        assert first.bytes_stored is not None and first.bytes_stored < first.bytes_scanned
        again = lake.push(src, "t/g", compression="auto")
        assert again.chunks_uploaded == 0 and again.bytes_sent == 0


def test_a_repush_rewrites_a_planes_frame_cut_short(url: str, tmp_path: Path) -> None:
    """A tensor chunk's frame cut short behind its intact head passed the head check: the
    re-push deduplicated against it, and recorded the cut size.  A planes frame's table says
    its exact size: one that does not add up to the object is written again (one ranged GET,
    as before), which also repairs the first version."""
    from ckptlake.format import codecs

    src = tmp_path / "src"
    src.mkdir()
    w = (np.random.default_rng(2).standard_normal(1 << 18) * 0.02).astype(np.float32)
    np.save(src / "w.npy", w)  # 1 MiB of floats: one compressible chunk
    with ckptlake.open(url, chunk_size=MiB) as lake:
        lake.push(src, "t/p", compression="auto")
        m1 = json.loads(lake.store.get(layout.version_key("t/p", 1)))
        (d, size), = [(d, n) for d, n in m1["stored"].items()]
        key = layout.chunk_key(d)
        good = lake.store.get(key)
        assert codecs.describe(good) == "planes-fp32" and codecs.frame_size(good) == size
        # a byte short; a byte too many; cut inside the plane table (what push reads of it)
        for cut in (good[:size - 1], good + b"\0", good[:20]):
            lake.store.put(key, cut)
            r = lake.push(src, "t/p", compression="auto")
            assert r.chunks_uploaded == 1, cut
            assert lake.store.get(key) == good
        for n in (1, 2, 3, 4):
            out = tmp_path / f"out{n}"
            lake.pull(f"t/p@v{n}", out)
            assert (out / "w.npy").read_bytes() == (src / "w.npy").read_bytes()


@pytest.mark.parametrize("first", ["cut", "whole"])
def test_verify_reads_a_frame_whose_manifests_disagree_on_its_size(local_lake_url: str,
                                                                    tmp_path: Path,
                                                                    first: str) -> None:
    """A plain zstd frame cut short keeps its head (its size is not in it), so a re-push trusts
    it and records the cut size; the whole-lake verify then found the object at a recorded
    size and called both versions restorable.  Two manifests recording different sizes make
    verify read and decode it, whichever verify reads first (forced: with the manifest that
    recorded the cut size first, the object's size matches the recorded one)."""
    from ckptlake.format import codecs
    from test_verify_du_mutants import verify_in_order

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    lines = [json.dumps({"step": i, "loss": float(x)}) for i, x in enumerate(rng.random(40000))]
    (src / "log.jsonl").write_text("\n".join(lines)[:MiB])  # 1 MiB of text: one zstd chunk
    with ckptlake.open(local_lake_url, chunk_size=MiB) as lake:
        lake.push(src, "t/c", compression="auto")
        m1 = json.loads(lake.store.get(layout.version_key("t/c", 1)))
        (d, size), = [(d, n) for d, n in m1["stored"].items()]
        key = layout.chunk_key(d)
        assert codecs.describe(lake.store.get(key)) == "zstd"
        lake.store.put(key, lake.store.get(key)[:size // 2])  # cut short, head intact
        lake.push(src, "t/c", compression="auto")  # trusts it (the head is a frame's)
        m2 = json.loads(lake.store.get(layout.version_key("t/c", 2)))
        assert m2["stored"][d] == size // 2
        later = 1 if first == "cut" else 2  # v1 recorded the whole size, v2 the cut one
        res = verify_in_order(lake.store, layout.version_key("t/c", later))
        assert not res.ok
        assert sorted(u["version"] for u in res.unrestorable) == [1, 2]
