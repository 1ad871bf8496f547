"""diff on the in-memory store: metadata, files, bytes, tensors from manifests only, values."""
from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import IntegrityError, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

np = pytest.importorskip("numpy")
st = pytest.importorskip("safetensors.numpy")
MiB = 1024 * 1024


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lake(store: MemoryStore) -> Lake:
    return Lake(store, chunk_size=MiB, concurrency=4)


def base_tensors(n: int = 20, size: int = 128) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {f"layers.{i:02d}.weight": rng.standard_normal((size, size)).astype(np.float32)
            for i in range(n)}


def checkpoints(tmp_path: Path) -> tuple[Path, Path, dict[str, Any], dict[str, Any]]:
    """A and B: of 20 tensors, 3 changed values, 1 reshaped, 1 retyped, 1 added, 1 removed."""
    a = base_tensors()
    b = dict(a)
    b["layers.03.weight"] = a["layers.03.weight"] + 0.01
    b["layers.09.weight"] = a["layers.09.weight"] * 2
    b["layers.15.weight"] = a["layers.15.weight"].copy()
    b["layers.15.weight"][5, 7] = 100.0
    b["layers.07.weight"] = a["layers.07.weight"].reshape(64, 256)
    b["layers.11.weight"] = a["layers.11.weight"].astype(np.float16)
    b["head.bias"] = np.ones(16, dtype=np.float32)
    del b["layers.19.weight"]
    dirs = []
    for name, tensors in (("A", a), ("B", b)):
        d = tmp_path / name
        d.mkdir()
        st.save_file(tensors, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"name": name}))
        dirs.append(d)
    (dirs[0] / "old.txt").write_text("gone")
    (dirs[1] / "new.txt").write_text("new")
    (dirs[0] / "same.txt").write_text("same")
    (dirs[1] / "same.txt").write_text("same")
    return dirs[0], dirs[1], a, b


def push_pair(lake: Lake, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    a_dir, b_dir, a, b = checkpoints(tmp_path)
    lake.push(a_dir, "run/ckpt", step=100, metrics={"loss": 2.5, "acc": 0.5},
              metadata={"lr": "3e-4", "warmup": "100"})
    lake.push(b_dir, "run/ckpt", step=200, metrics={"loss": 2.0, "ppl": 7.4},
              metadata={"lr": "1e-4", "seed": "1"})
    return a, b


def manifest_bytes(store: MemoryStore, *refs: tuple[str, int]) -> int:
    return sum(len(store.get(layout.version_key(a, v))) for a, v in refs)


def test_tensors_changed_are_exactly_those(lake: Lake, store: MemoryStore,
                                           tmp_path: Path) -> None:
    push_pair(lake, tmp_path)
    limit = manifest_bytes(store, ("run/ckpt", 1), ("run/ckpt", 2))
    before = store.bytes_out
    r = lake.diff("run/ckpt@v1", "run/ckpt@v2")
    assert store.bytes_out - before <= limit, "only the two manifests were read"
    t = r.tensors
    assert [x["name"] for x in t["changed"]] == ["layers.03.weight", "layers.09.weight",
                                                 "layers.15.weight"]
    assert [(x["name"], x["shape_a"], x["shape_b"]) for x in t["reshaped"]] == [
        ("layers.07.weight", [128, 128], [64, 256])]
    assert t["reshaped"][0]["data_changed"] is False, "same bytes, other shape"
    assert [(x["name"], x["dtype_a"], x["dtype_b"]) for x in t["retyped"]] == [
        ("layers.11.weight", "F32", "F16")]
    assert [x["name"] for x in t["added"]] == ["head.bias"]
    assert [x["name"] for x in t["removed"]] == ["layers.19.weight"]
    assert t["unchanged"] == 14 and t["files"] == ["model.safetensors"]
    assert r.values is None and not r.identical


def test_metadata_files_and_bytes(lake: Lake, tmp_path: Path) -> None:
    push_pair(lake, tmp_path)
    r = lake.diff("run/ckpt@v1", "run/ckpt")
    assert r.step == {"a": 100, "b": 200, "changed": True}
    assert r.metrics["changed"] == {"loss": {"a": 2.5, "b": 2.0, "delta": -0.5}}
    assert r.metrics["added"] == {"ppl": 7.4} and r.metrics["removed"] == {"acc": 0.5}
    assert r.metadata == {"added": {"seed": "1"}, "removed": {"warmup": "100"},
                          "changed": {"lr": {"a": "3e-4", "b": "1e-4"}}}
    f = r.files
    assert [x["path"] for x in f["added"]] == ["new.txt"]
    assert [x["path"] for x in f["removed"]] == ["old.txt"]
    assert [x["path"] for x in f["modified"]] == ["config.json", "model.safetensors"]
    assert f["unchanged"] == [{"path": "same.txt", "size": 4}]
    b = r.bytes
    assert b["total"] == b["shared"] + b["to_fetch"] and b["chunks_shared"] <= b["chunks"]
    doc = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert set(doc) == {"a", "b", "identical", "step", "metrics", "metadata", "files", "bytes",
                        "tensors", "values"}


def test_shared_bytes_count_what_a_pull_would_skip(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = np.random.default_rng(1).bytes(4 * MiB)
    (src / "w.bin").write_bytes(big)
    lake.push(src, "a")
    (src / "w.bin").write_bytes(big[:MiB] + b"x" * MiB + big[2 * MiB:])  # one chunk of four
    lake.push(src, "a")
    b = lake.diff("a@v1", "a@v2").bytes
    assert (b["total"], b["shared"], b["to_fetch"]) == (4 * MiB, 3 * MiB, MiB)
    assert (b["chunks"], b["chunks_shared"]) == (4, 3)


def test_identical_versions_and_across_artifacts(lake: Lake, tmp_path: Path) -> None:
    a_dir, _, _, _ = checkpoints(tmp_path)
    lake.push(a_dir, "base/model", step=1)
    lake.push(a_dir, "ft/model", step=1)
    r = lake.diff("base/model", "ft/model")
    assert r.identical and r.tensors["unchanged"] == 20 and r.bytes["to_fetch"] == 0
    assert r.a["ref"] == "base/model@v1" and r.b["ref"] == "ft/model@v1"


def test_values_fetch_only_changed_tensors(lake: Lake, store: MemoryStore,
                                           tmp_path: Path) -> None:
    a, b = push_pair(lake, tmp_path)
    limit = manifest_bytes(store, ("run/ckpt", 1), ("run/ckpt", 2))
    before = store.bytes_out
    r = lake.diff("run/ckpt@v1", "run/ckpt@v2", values=True)
    tensor_bytes = 3 * 2 * 128 * 128 * 4
    assert r.values is not None and r.values["bytes_fetched"] == tensor_bytes
    assert store.bytes_out - before <= limit + tensor_bytes
    for x in r.tensors["changed"]:
        va, vb = a[x["name"]].astype(np.float64), b[x["name"]].astype(np.float64)
        d = vb - va
        assert x["values"]["max_abs_diff"] == pytest.approx(np.abs(d).max())
        assert x["values"]["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(va))
    assert r.tensors["changed"][1]["values"]["rel_l2"] == pytest.approx(1.0)  # doubled


@pytest.mark.parametrize("chunk_size", [MiB, MiB + 4093])
def test_values_of_large_tensors_across_chunks(tmp_path: Path, chunk_size: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.core import diff as diff_mod

    monkeypatch.setattr(diff_mod, "WINDOW", 256 * 1024)  # several windows per tensor
    rng = np.random.default_rng(3)
    a = {"big": rng.standard_normal((600, 1000)).astype(np.float32),
         "half": rng.standard_normal((300, 1000)).astype(np.float16),
         "ids": np.arange(10_000, dtype=np.int64)}
    b = {"big": a["big"] + np.float32(0.5), "half": (a["half"] * 3).astype(np.float16),
         "ids": a["ids"] * 2}
    lake = Lake(MemoryStore(), chunk_size=chunk_size, concurrency=3)
    for tensors in (a, b):
        d = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        st.save_file(tensors, str(d / "m.safetensors"))
        lake.push(d, "x")
    r = lake.diff("x@v1", "x@v2", values=True)
    got = {x["name"]: x["values"] for x in r.tensors["changed"]}
    for name in a:
        va, vb = a[name].astype(np.float64), b[name].astype(np.float64)
        assert got[name]["max_abs_diff"] == pytest.approx(np.abs(vb - va).max(), rel=1e-6)
        assert got[name]["rel_l2"] == pytest.approx(
            np.linalg.norm(vb - va) / np.linalg.norm(va), rel=1e-6)


def test_values_bf16_and_unsupported_dtypes(lake: Lake, tmp_path: Path) -> None:
    """bfloat16 is widened by hand; F8 is reported as unsupported, not guessed."""
    import struct as _struct

    def write(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
        header, offset, body = {}, 0, b""
        for name, (dtype, shape, data) in tensors.items():
            header[name] = {"dtype": dtype, "shape": shape,
                            "data_offsets": [offset, offset + len(data)]}
            offset += len(data)
            body += data
        raw = json.dumps(header).encode()
        path.write_bytes(_struct.pack("<Q", len(raw)) + raw + body)

    def bf16(values: list[float]) -> bytes:
        f32 = np.array(values, dtype=np.float32).view(np.uint32)
        return (f32 >> 16).astype("<u2").tobytes()

    for i, (vals, f8) in enumerate((([1.0, 2.0, -4.0], b"\x01\x02"),
                                    ([1.0, 3.0, -4.0], b"\x01\x03"))):
        d = tmp_path / f"v{i}"
        d.mkdir()
        write(d / "m.safetensors", {"w": ("BF16", [3], bf16(vals)), "q": ("F8_E4M3", [2], f8)})
        lake.push(d, "bf")
    r = lake.diff("bf@v1", "bf@v2", values=True)
    got = {x["name"]: x["values"] for x in r.tensors["changed"]}
    assert got["w"]["max_abs_diff"] == 1.0
    assert got["w"]["rel_l2"] == pytest.approx(1 / np.linalg.norm([1.0, 2.0, -4.0]))
    assert got["q"]["error"] == "unsupported dtype F8_E4M3"


def test_corrupt_chunk_fails_values(lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    push_pair(lake, tmp_path)
    from ckptlake.core.catalog import load_manifest

    m = load_manifest(store, "run/ckpt", 2)
    entry = next(e for e in m.files if e.path == "model.safetensors")
    t = next(t for t in entry.tensors if t.name == "layers.03.weight")  # type: ignore[union-attr]
    pos = 0
    for c in entry.chunks:  # flip one byte of that tensor where it is stored
        if pos <= t.start < pos + c.size:
            key = layout.chunk_key(c.digest)
            data = bytearray(store.get(key))
            data[(c.offset or 0) + t.start - pos + 10] ^= 0xFF
            store.corrupt(key, bytes(data))
        pos += c.size
    lake.diff("run/ckpt@v1", "run/ckpt@v2")  # manifests only: still fine
    with pytest.raises(IntegrityError, match="layers.03.weight"):
        lake.diff("run/ckpt@v1", "run/ckpt@v2", values=True)


def test_values_without_numpy(lake: Lake, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    push_pair(lake, tmp_path)
    real_import = builtins.__import__

    def no_numpy(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("no numpy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numpy)
    with pytest.raises(UsageError, match=r"ckptlake\[numpy\]"):
        lake.diff("run/ckpt@v1", "run/ckpt@v2", values=True)


def test_untracked_safetensors_files_are_named(lake: Lake, store: MemoryStore,
                                               tmp_path: Path) -> None:
    a_dir, _, _, _ = checkpoints(tmp_path)
    lake.push(a_dir, "x")
    raw = json.loads(store.get(layout.version_key("x", 1)))
    for f in raw["files"]:
        f.pop("tensors", None)  # as pushed by a ckptlake without tensor records
    store.put(layout.version_key("x", 2), json.dumps({**raw, "version": 2}).encode())
    r = lake.diff("x@v1", "x@v2")
    assert r.tensors["untracked_files"] == ["model.safetensors"]
    assert r.tensors["removed"] and r.identical, "same bytes: the files are unchanged"


# ---- CLI ---------------------------------------------------------------------------------------

@pytest.fixture
def cli_lake(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Lake:
    lake.close = lambda: None  # type: ignore[method-assign]
    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: lake)
    return lake


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_diff_human_json_and_exit_code(cli_lake: Lake, tmp_path: Path) -> None:
    push_pair(cli_lake, tmp_path)
    r = run("diff", "run/ckpt@v1", "run/ckpt@v2")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "step: 100 -> 200" in out and "~ loss: 2.5 -> 2 (-0.5)" in out
    assert "tensors: 3 changed, 1 reshaped, 1 retyped, 1 added, 1 removed, 14 unchanged" in out
    assert "≠ layers.07.weight  reshaped F32 [128, 128] -> F32 [64, 256]" in out
    assert "M model.safetensors" in out and "A new.txt" in out and "D old.txt" in out
    doc = json.loads(run("diff", "run/ckpt@v1", "run/ckpt@v2", "--json", "--values").stdout)
    assert doc["lake"] == "memory://test"
    assert [x["name"] for x in doc["tensors"]["changed"]] == [
        "layers.03.weight", "layers.09.weight", "layers.15.weight"]
    assert all("max_abs_diff" in x["values"] for x in doc["tensors"]["changed"])
    assert run("diff", "run/ckpt@v1", "run/ckpt@v2", "--exit-code", "-q").exit_code == 1
    assert run("diff", "run/ckpt@v1", "run/ckpt@v1", "--exit-code").exit_code == 0
    r = run("diff", "run/ckpt@v1", "run/ckpt@v9")
    assert r.exit_code == 3 and "does not exist" in r.stderr
    assert run("diff", "run/ckpt@v1", "bad@@").exit_code == 2
