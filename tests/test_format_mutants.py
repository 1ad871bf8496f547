"""Checks of ckptlake/format/ that a mutation review found unexercised (deleting any of them
left the suite green): manifest validation (sizes that do not add up, duplicate paths, file
artifacts, NUL bytes, chunk digests, stored sizes, whole-path length), safetensors header
parsing, the streaming planner on a lying header, cut checking, and the training-state
skeleton's names and refusals.  Each test says what a user would lose without the check.
"""
from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
# the helpers of test_bad_input.py: a CLI runner, its one-error-line check, a pushed lake
# p/a@v1 (a.bin of 2 MiB + 5 and sub/b.txt), manifest tampering that drops the listing
# summaries, and the "refused, nothing written, no staging left" check
from test_bad_input import (assert_pull_refused, error_line, lake, lake_dir,  # noqa: F401
                            pushed, run, src, tamper)

import ckptlake
from ckptlake.errors import UsageError
from ckptlake.format import chunking
from ckptlake.format import state as state_format
from ckptlake.format.chunking import Cut, check_cuts, fixed_cuts
from ckptlake.format.header import MAX_CHUNK_SIZE
from ckptlake.format.safetensors import parse_header
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1024 * 1024


def _file(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return next(f for f in doc["files"] if f["path"] == path)


# ---- manifest.py: file sizes and chunk sizes ---------------------------------------------------

@pytest.mark.parametrize("delta", [+10, -10], ids=["size-above-chunks", "size-below-chunks"])
def test_file_size_that_its_chunks_do_not_add_up_to_is_refused(pushed: Path, lake: str,
                                                               tmp_path: Path, delta: int
                                                               ) -> None:
    """A manifest whose size disagrees with its chunks' sum would have pull write a file padded
    with bytes nobody pushed, or cut short, and report success."""
    tamper(pushed, lambda d: _file(d, "a.bin").update(size=_file(d, "a.bin")["size"] + delta))
    line = assert_pull_refused(lake, tmp_path)
    assert "do not add up" in line, line


# ---- manifest.py: paths --------------------------------------------------------------------------

def test_two_files_at_the_same_path_are_refused(pushed: Path, lake: str, tmp_path: Path) -> None:
    """Two entries for one path: which bytes end up there depends on write order, so the
    pulled tree would not be the pushed one."""
    def edit(doc: dict[str, Any]) -> None:
        twin = dict(_file(doc, "sub/b.txt"))
        twin["path"] = "a.bin"
        doc["files"].append(twin)

    tamper(pushed, edit)
    line = assert_pull_refused(lake, tmp_path)
    assert "duplicate paths" in line, line


def test_a_path_that_is_both_a_file_and_a_directory_is_refused(pushed: Path, lake: str,
                                                               tmp_path: Path) -> None:
    """A path listed as a file and as an empty directory cannot be both: the pull must stop
    before staging anything, not fail half-way and leave a staging directory behind."""
    tamper(pushed, lambda d: d.__setitem__("dirs", [*d.get("dirs", []), "a.bin"]))
    line = assert_pull_refused(lake, tmp_path)
    assert "duplicate paths" in line, line


def test_a_path_with_a_nul_byte_is_refused(pushed: Path, lake: str, tmp_path: Path) -> None:
    """No file system name holds a NUL: the manifest is damaged and must be reported as such
    (exit 5), not surface as an OS error about the destination."""
    tamper(pushed, lambda d: _file(d, "a.bin").update(path="a\x00b"))
    line = assert_pull_refused(lake, tmp_path)
    assert "NUL byte" in line, line


def test_a_path_longer_than_path_max_is_refused_as_a_bad_manifest(pushed: Path, lake: str,
                                                                 tmp_path: Path) -> None:
    """Every segment fits NAME_MAX but the whole path (17 x 250 bytes) does not fit PATH_MAX
    anywhere: it is the manifest that is wrong (exit 5), not the user's destination (exit 2)."""
    long_path = "/".join(["d" * 250] * 17)
    tamper(pushed, lambda d: _file(d, "a.bin").update(path=long_path))
    line = assert_pull_refused(lake, tmp_path)
    assert "longer than 4095 bytes" in line, line


# ---- manifest.py: chunk digests and stored sizes -----------------------------------------------

@pytest.mark.parametrize("junk", ["/../../etc/passwd", "Z"])
def test_a_chunk_digest_with_trailing_junk_is_refused(pushed: Path, lake: str, tmp_path: Path,
                                                      junk: str) -> None:
    """A digest names a chunk key: one with anything after the hex would make readers fetch
    (or, with a path, reach) a key that is no chunk of this lake."""
    def edit(doc: dict[str, Any]) -> None:
        _file(doc, "a.bin")["chunks"][0][0] += junk

    tamper(pushed, edit)
    line = assert_pull_refused(lake, tmp_path)
    assert "malformed chunk digest" in line, line


@pytest.mark.parametrize("stored", [0, -1, MAX_CHUNK_SIZE + 1])
def test_a_stored_chunk_size_out_of_bounds_is_refused(pushed: Path, lake: str, tmp_path: Path,
                                                      stored: int) -> None:
    """A stored (compressed) size no chunk object can have marks a damaged or crafted
    manifest: show and pull say so (exit 5) rather than trusting it for reads and reports."""
    tamper(pushed, lambda d: d.__setitem__(
        "stored", {_file(d, "a.bin")["chunks"][0][0]: stored}))
    line = error_line(run("show", "p/a", "--lake", lake), 5)
    assert "malformed stored size" in line, line
    line = assert_pull_refused(lake, tmp_path)
    assert "malformed stored size" in line, line


# ---- manifest.py: a file artifact holds one regular file ---------------------------------------

@pytest.fixture
def pushed_file(src: Path, lake: str, lake_dir: Path) -> Path:
    """p/a@v1 as a file artifact (a push of a.bin alone); its manifest path."""
    r = run("push", src / "a.bin", "p/a", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    path = lake_dir.joinpath("artifacts", "p", "a", "@v", "0000000001.json")
    assert json.loads(path.read_text())["kind"] == "file"
    return path


def _second_file(doc: dict[str, Any]) -> None:
    doc["files"].append({"path": "b.bin", "size": 0, "chunks": []})


def _with_dir(doc: dict[str, Any]) -> None:
    doc["dirs"] = ["d"]


def _symlink(doc: dict[str, Any]) -> None:
    doc["files"] = [{"path": "a.bin", "symlink": "x"}]


@pytest.mark.parametrize("edit", [_second_file, _with_dir, _symlink],
                         ids=["two-files", "with-dirs", "symlink"])
def test_a_file_artifact_must_hold_exactly_one_regular_file(
        pushed_file: Path, lake: str, tmp_path: Path,
        edit: Callable[[dict[str, Any]], None]) -> None:
    """A file artifact is pulled to DEST as that one file: extra files, directories or a
    symlink in its manifest cannot be placed there and mean the manifest was tampered with."""
    tamper(pushed_file, edit)
    line = assert_pull_refused(lake, tmp_path)
    assert "exactly one regular file" in line, line


# ---- safetensors.py: data offsets ----------------------------------------------------------------

def _st_header(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc).encode()
    return struct.pack("<Q", len(body)) + body


@pytest.mark.parametrize("offsets", [[8, 0], [0, 10 ** 6]], ids=["end-before-begin",
                                                                 "end-past-the-file"])
def test_unknown_dtype_with_impossible_offsets_is_not_a_safetensors_file(offsets: list[int]
                                                                         ) -> None:
    """An unknown dtype skips the shape/size check, so only the offsets' order and bounds keep
    a tensor record from describing a negative or out-of-file byte range."""
    raw = _st_header({"a": {"dtype": "X9", "shape": [2], "data_offsets": offsets}})
    assert parse_header(raw, len(raw) + 16) is None


def test_a_pushed_file_with_a_reversed_tensor_range_stays_readable(tmp_path: Path,
                                                                   local_lake_url: str) -> None:
    """Taken for a safetensors file, such a header gave a version whose show and pull then
    failed (exit 5): the file must be pushed like any other file and come back intact."""
    src = tmp_path / "src"
    src.mkdir()
    data = _st_header({"a": {"dtype": "X9", "shape": [2], "data_offsets": [8, 0]}}) \
        + random.Random(4).randbytes(64)
    (src / "m.safetensors").write_bytes(data)
    r = run("push", src, "m/x", "--lake", local_lake_url)
    assert r.exit_code == 0, r.stderr
    r = run("show", "m/x", "--lake", local_lake_url)
    assert r.exit_code == 0, r.stderr
    r = run("pull", "m/x", tmp_path / "out", "--lake", local_lake_url)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "out" / "m.safetensors").read_bytes() == data


# ---- chunking.py: the streaming planner on a header it cannot parse ----------------------------

def _chunks_of(lake: Lake, artifact: str) -> list[tuple[str, int]]:
    from ckptlake.core import catalog

    (entry,) = catalog.load_manifest(lake.store, artifact, 1).files
    return [(c.digest, c.size) for c in entry.chunks]


def _stream_and_push(tmp_path: Path, name: str, data: bytes, same_chunks: bool = True) -> None:
    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=2)
    with lake.writer("streamed", name) as f:
        for pos in range(0, len(data), 64 * 1024):
            f.write(data[pos:pos + 64 * 1024])
    assert f.result.version == 1, name
    assert b"".join(lake.cat("streamed@v1", name)) == data, name
    src = tmp_path / name
    src.write_bytes(data)
    lake.push(src, "pushed")
    if same_chunks:
        assert _chunks_of(lake, "streamed") == _chunks_of(lake, "pushed"), name


def test_streaming_a_file_with_a_lying_safetensors_header(tmp_path: Path) -> None:
    """A file that starts like a safetensors file but whose header does not parse must still
    stream into the lake (cut at fixed offsets, as push cuts it, so the two dedup): without
    the check, the writer failed on it and the checkpoint was lost."""
    data = struct.pack("<Q", 40) + b"{" + b"\x00not json" * 4 + b"!!!" \
        + random.Random(5).randbytes(3 * MiB)
    _stream_and_push(tmp_path, "m.safetensors", data)


def test_streaming_each_lying_file_stores_what_push_stores(tmp_path: Path) -> None:
    """Every lying layout of test_tensor_chunking.py: streamed, it commits and reads back bit
    for bit.  A safetensors header that does not parse is cut into the chunks a push of the
    same bytes stores; one that parses but lies about the file's size, or a lying torch
    archive, is followed forward while streamed, so there only the bytes must match."""
    pytest.importorskip("numpy")
    pytest.importorskip("safetensors")
    from test_tensor_chunking import _lying_files

    unparsable = 0
    for name, data in sorted(_lying_files().items()):
        n = struct.unpack("<Q", data[:8])[0]
        same = name.endswith(".safetensors") and parse_header(data[:8 + n], 1 << 62) is None
        unparsable += same
        _stream_and_push(tmp_path, name, data, same_chunks=same)
    assert unparsable >= 2  # json and overlap (and sizes) at least


# ---- chunking.py: check_cuts and plan's fallback -----------------------------------------------

@pytest.mark.parametrize("cuts, size", [
    ([Cut(0, 4), Cut(5, 4), Cut(9, 2)], 11),  # gap (lengths still add up to the size)
    ([Cut(0, 4), Cut(5, 4), Cut(9, 2)], 10),  # gap, lengths add up to 10
    ([Cut(0, 4), Cut(3, 4), Cut(7, 2)], 9),  # overlap
    ([Cut(0, 4), Cut(3, 4), Cut(7, 2)], 10),  # overlap, lengths add up to 10
    ([Cut(4, 4), Cut(0, 4), Cut(8, 2)], 10),  # out of order
    ([Cut(0, 4), Cut(4, 4)], 10),  # short of the size
    ([], 10),  # nothing at all
    ([Cut(0, 4), Cut(4, 0), Cut(4, 4), Cut(8, 2)], 10),  # an empty cut
    ([Cut(0, 6), Cut(6, 4)], 10),  # larger than the chunk size
], ids=["gap-11", "gap-10", "overlap-9", "overlap-10", "out-of-order", "short", "none",
        "empty-cut", "too-large"])
def test_check_cuts_refuses_cuts_that_do_not_tile_the_file(cuts: list[Cut], size: int) -> None:
    """Cuts are the chunks a file is stored as: a gap loses bytes, an overlap or a wrong order
    stores the wrong ones, an empty or oversized cut makes a chunk no reader accepts."""
    assert not check_cuts(cuts, size, 4)


def test_check_cuts_accepts_a_tiling() -> None:
    """The refusals above must not cost the real thing: cuts that tile the file pass."""
    assert check_cuts([Cut(0, 4), Cut(4, 4), Cut(8, 2)], 10, 4)
    assert check_cuts([Cut(0, 3), Cut(3, 4), Cut(7, 3)], 10, 4)
    assert check_cuts([], 0, 4)


def _safetensors_bytes() -> bytes:
    n = 3 * MiB
    doc = {"a": {"dtype": "F32", "shape": [n // 8], "data_offsets": [0, n // 2]},
           "b": {"dtype": "F32", "shape": [n // 8], "data_offsets": [n // 2, n]}}
    return _st_header(doc) + random.Random(6).randbytes(n)


@pytest.mark.parametrize("bad", [
    lambda cuts: cuts[:-1],  # short
    lambda cuts: [cuts[1], cuts[0], *cuts[2:]],  # out of order
    lambda cuts: [Cut(0, cuts[0].length + 1), *cuts[1:]],  # overlap
], ids=["short", "out-of-order", "overlap"])
def test_plan_falls_back_to_fixed_chunks_when_the_layout_gives_bad_cuts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        bad: Callable[[list[Cut]], list[Cut]]) -> None:
    """If the layout cutter ever returned cuts that do not tile the file, storing them would
    lose or duplicate bytes; plan must cut at fixed offsets instead, and a push still round-
    trips."""
    data = _safetensors_bytes()
    read: Callable[[int, int], bytes] = lambda o, n: data[o:o + n]  # noqa: E731
    assert chunking.plan(read, len(data), MiB).kind == "safetensors"  # the layout is used
    real = chunking.cut_layout
    monkeypatch.setattr(chunking, "cut_layout", lambda *a, **k: bad(list(real(*a, **k))))
    p = chunking.plan(read, len(data), MiB, name="m.safetensors")
    assert p.kind == "fixed" and p.cuts == tuple(fixed_cuts(0, len(data), MiB))
    assert p.note and "inconsistent cuts" in p.note
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.safetensors").write_bytes(data)
    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=2)
    lake.push(tmp_path / "src", "m/x")
    lake.pull("m/x", tmp_path / "out")
    assert (tmp_path / "out" / "m.safetensors").read_bytes() == data


# ---- state.py: the training-state skeleton -----------------------------------------------------

@pytest.fixture
def state_lake(local_lake_url: str) -> Iterator[ckptlake.Lake]:
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def test_many_paths_escaping_to_one_tensor_name_get_distinct_names(state_lake: ckptlake.Lake
                                                                   ) -> None:
    """Keys 1 and "1" both escape to "1", so four tensors share the path "1/1": each must get a
    name of its own, or one tensor overwrites another and load_state gives back wrong values."""
    np = pytest.importorskip("numpy")
    a, b, c, d = (np.full(2, v, dtype=np.int32) for v in (1, 2, 3, 4))
    state = {1: {1: a, "1": b}, "1": {1: c, "1": d}}
    names: list[str] = []
    state_format.encode(state, lambda name, value: names.append(name) or "np")
    assert len(set(names)) == 4, names
    with state_lake.checkpointer("run/state", retention=False) as ck:
        ck.save_state(state, step=1).result()
    back = state_lake.load_state("run/state@v1")
    assert list(back) == [1, "1"] and list(back[1]) == [1, "1"] and list(back["1"]) == [1, "1"]
    for got, want in ((back[1][1], a), (back[1]["1"], b), (back["1"][1], c),
                      (back["1"]["1"], d)):
        assert got.dtype == want.dtype and (got == want).all()


@pytest.mark.parametrize("root", [{"$float": "NaN"}, {"$float": "+inf"},
                                  {"$dict": [[[1, 2], 1]]}, {"$dict": [[{"k": 1}, 1]]}],
                         ids=["float-NaN", "float-+inf", "list-key", "object-key"])
def test_decoding_an_unknown_skeleton_node_is_a_usage_error(root: Any) -> None:
    """A skeleton written by another tool (or damaged) must be refused with an error naming the
    node, not crash load_state with a KeyError or TypeError."""
    with pytest.raises(UsageError, match="unknown node"):
        state_format.decode({"ckptlake_state": 1, "root": root}, {}, "run/state@v1")


def test_a_self_referencing_state_is_refused() -> None:
    """A state that contains itself (a cycle) must be refused with a usage error naming where,
    not exhaust the interpreter's stack."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(UsageError, match="nested too deeply"):
        state_format.encode(cyclic, lambda name, value: "np")


@pytest.mark.parametrize("key", [math.nan, math.inf, -math.inf])
def test_a_non_finite_float_key_is_refused_before_anything_is_saved(state_lake: ckptlake.Lake,
                                                                    key: float) -> None:
    """JSON has no NaN/inf: such a key cannot be written into the skeleton; save_state must
    say which key, before committing anything, not fail later with a bare ValueError."""
    with pytest.raises(UsageError, match="finite floats"):
        state_format.encode({"opt": {key: 1}}, lambda name, value: "np")
    with state_lake.checkpointer("run/state", retention=False) as ck:
        with pytest.raises(UsageError, match="finite floats"):
            ck.save_state({"opt": {key: 1}})
    assert not list(state_lake.artifacts())
