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


def push_pair(lake: Lake, tmp_path: Path, compression: str = "none"
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stored raw by default: these tests count exact ranged reads (a chunk stored encoded is
    fetched whole; test_compression.py covers that)."""
    a_dir, b_dir, a, b = checkpoints(tmp_path)
    lake.push(a_dir, "run/ckpt", step=100, metrics={"loss": 2.5, "acc": 0.5},
              metadata={"lr": "3e-4", "warmup": "100"}, compression=compression)
    lake.push(b_dir, "run/ckpt", step=200, metrics={"loss": 2.0, "ppl": 7.4},
              metadata={"lr": "1e-4", "seed": "1"}, compression=compression)
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
    assert set(doc) == {"a", "b", "identical", "step", "kind", "metrics", "metadata", "files",
                        "bytes", "tensors", "values", "contents"}
    # without --values: safetensors compared by their tensor records, nothing else looked into
    assert doc["contents"] == [
        {"path": "config.json", "kind": "other", "inspected": False,
         "reason": "not a .safetensors file or a torch archive"},
        {"path": "model.safetensors", "kind": "safetensors", "inspected": True,
         "metadata": None}]


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
    # the egress estimate counts what is fetched: w's 6 bytes a side, not q (never fetched)
    assert lake.estimate_diff("bf@v1", "bf@v2").bytes_to_download == 12 == \
        r.values["bytes_fetched"]


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


def hide_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import numpy` fail, as on a machine without the [numpy] extra."""
    real_import = builtins.__import__

    def no_numpy(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("no numpy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numpy)


def test_values_without_numpy(lake: Lake, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    push_pair(lake, tmp_path)
    hide_numpy(monkeypatch)
    with pytest.raises(UsageError, match=r"pip install numpy"):
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


# ---- egress guard of --values ---------------------------------------------------------------

class ChunkCountingBucket(MemoryStore):
    """A MemoryStore posing as an S3 lake in us-east-1 (no network) that records every read of
    a data chunk: (key, bytes) per GET or ranged GET."""

    def __init__(self) -> None:
        super().__init__()
        self.url = "s3://fake-bucket/lake"
        self.chunk_reads: list[tuple[str, int]] = []

    def bucket_region(self) -> str | None:
        return "us-east-1"

    def get(self, key: str) -> bytes:
        data = super().get(key)
        if key.startswith(layout.CHUNKS_PREFIX):
            self.chunk_reads.append((key, len(data)))
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        if key.startswith(layout.CHUNKS_PREFIX):
            self.chunk_reads.append((key, len(data)))
        return data


TENSOR_BYTES = 3 * 2 * 128 * 128 * 4  # 3 changed float32 [128, 128] tensors, both sides
# ~384 KiB inter-region at $1000/GB: about $0.37
PRICES = {"same_region": 0.0, "inter_region": 1000.0, "internet": 2000.0}


def test_values_estimate_is_exactly_what_is_fetched(tmp_path: Path) -> None:
    from ckptlake.policy.egress import EgressPolicy

    store = ChunkCountingBucket()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    push_pair(lake, tmp_path)
    policy = EgressPolicy(client_region="eu-west-1", price_per_gb=PRICES)
    est = lake.estimate_diff("run/ckpt@v1", "run/ckpt@v2", egress=policy)
    assert store.chunk_reads == [], "estimating reads manifests only"
    assert (est.operation, est.base, est.artifact, est.version) == ("diff", "run/ckpt@v1",
                                                                      "run/ckpt", 2)
    assert est.bytes_to_download == TENSOR_BYTES and est.route == "inter_region"
    assert est.lake_region == "us-east-1" and est.lake_region_origin == "bucket"
    assert est.cost_usd == pytest.approx(TENSOR_BYTES / (1 << 30) * 1000)
    r = lake.diff("run/ckpt@v1", "run/ckpt@v2", values=True, egress=policy)
    assert r.values is not None and r.values["bytes_fetched"] == TENSOR_BYTES
    assert sum(n for _, n in store.chunk_reads) == TENSOR_BYTES, "ranged reads: the ranges"


def test_values_egress_guard_warns_refuses_and_proceeds(tmp_path: Path) -> None:
    from ckptlake.errors import PolicyRefusal
    from ckptlake.policy.egress import EgressPolicy

    store = ChunkCountingBucket()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    push_pair(lake, tmp_path)
    a, b = "run/ckpt@v1", "run/ckpt@v2"
    warn_only = EgressPolicy(client_region="eu-west-1", price_per_gb=PRICES,
                             warn_above_usd=0.1)
    seen: list[Any] = []
    lake.diff(a, b, values=True, egress=warn_only, on_estimate=seen.append)
    assert len(seen) == 1 and seen[0].warn and not seen[0].needs_confirmation

    strict = EgressPolicy(client_region="eu-west-1", price_per_gb=PRICES, warn_above_usd=0.1,
                          confirm_above_usd=0.2)
    store.chunk_reads.clear()
    with pytest.raises(PolicyRefusal, match=r"diff --values of run/ckpt@v1 -> run/ckpt@v2 "
                                            r"would download 384\.0 KiB") as info:
        lake.diff(a, b, values=True, egress=strict)
    assert "--yes" in (info.value.hint or "") and "without --values" in (info.value.hint or "")
    asked: list[Any] = []
    with pytest.raises(PolicyRefusal):
        lake.diff(a, b, values=True, egress=strict, confirm=lambda e: asked.append(e) or False)
    assert len(asked) == 1 and asked[0].needs_confirmation
    assert store.chunk_reads == [], "refused: no chunk was read"
    # no --values: manifests only, nothing to guard
    assert lake.diff(a, b, egress=strict).values is None and store.chunk_reads == []
    assert lake.diff(a, b, values=True, egress=strict, confirm=lambda e: True).values
    store.chunk_reads.clear()
    r = lake.diff(a, b, values=True, egress=strict, yes=True)
    assert r.values["bytes_fetched"] == TENSOR_BYTES == sum(n for _, n in store.chunk_reads)
    # the same region costs nothing: no confirmation even at a threshold of 0
    same = EgressPolicy(client_region="us-east-1", price_per_gb=PRICES, confirm_above_usd=0)
    assert lake.diff(a, b, values=True, egress=same).values


def test_values_without_numpy_fails_before_the_egress_question(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.policy.egress import EgressPolicy

    lake = Lake(ChunkCountingBucket(), chunk_size=MiB)
    push_pair(lake, tmp_path)
    hide_numpy(monkeypatch)
    asked: list[Any] = []
    strict = EgressPolicy(client_region="eu-west-1", price_per_gb=PRICES, confirm_above_usd=0)
    with pytest.raises(UsageError, match=r"pip install numpy"):
        lake.diff("run/ckpt@v1", "run/ckpt@v2", values=True, egress=strict,
                  confirm=asked.append)
    assert asked == []


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


# ---- the egress guard end to end: the CLI as a process, SeaweedFS behind a counting proxy ----

EGRESS_CONFIG = """\
lake: {lake}
egress:
  lake_region: us-east-1
  client_region: eu-west-1
  price_per_gb: {{same_region: 0.0, inter_region: 1000.0, internet: 2000.0}}
  warn_above_usd: 0.10
  confirm_above_usd: {confirm}
"""


def test_cli_diff_values_egress_guard(seaweedfs: Any, s3_lake_url: str,
                                      tmp_path: Path) -> None:
    """~384 KiB of changed tensors inter-region at $1000/GB (~$0.37): a warning above 0.10;
    above confirm_above_usd 0.20, no --yes and no terminal: exit 7 and not one chunk GET."""
    import subprocess
    import sys

    from faultproxy import FaultProxy

    from ckptlake.errors import EXIT_OK, EXIT_POLICY
    from ckptlake.store import open_store

    lake = Lake(open_store(s3_lake_url), chunk_size=MiB)
    push_pair(lake, tmp_path)
    lake.close()
    warn_cfg, strict_cfg = tmp_path / "warn.yaml", tmp_path / "strict.yaml"
    warn_cfg.write_text(EGRESS_CONFIG.format(lake=s3_lake_url, confirm=25.0))
    strict_cfg.write_text(EGRESS_CONFIG.format(lake=s3_lake_url, confirm=0.20))
    a, b = "run/ckpt@v1", "run/ckpt@v2"

    with FaultProxy(seaweedfs.endpoint_url) as proxy:
        env = {**seaweedfs.env, "AWS_ENDPOINT_URL": proxy.endpoint_url}

        def run(*args: str, code: int = EXIT_OK) -> subprocess.CompletedProcess:
            proxy.reset_stats()
            p = subprocess.run([sys.executable, "-m", "ckptlake", *args], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=120,
                               stdin=subprocess.DEVNULL)
            assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
            assert "Traceback" not in p.stderr, p.stderr
            return p

        def chunk_gets() -> list[Any]:
            return [x for x in proxy.exchanges() if x.method == "GET" and "/chunks/" in x.target]

        # --estimate: the estimate only, with pull's --estimate fields (+ operation, base)
        est = json.loads(run("diff", a, b, "--values", "--estimate", "--json", "--config",
                             str(strict_cfg)).stdout)
        assert chunk_gets() == []
        assert (est["operation"], est["base"], est["artifact"], est["version"]) == (
            "diff", a, "run/ckpt", 2)
        assert est["bytes_to_download"] == TENSOR_BYTES and est["route"] == "inter_region"
        assert est["needs_confirmation"] is True and est["warn"] is True
        pull_est = json.loads(run("pull", b, str(tmp_path / "p"), "--estimate", "--json",
                                  "--config", str(strict_cfg)).stdout)
        assert pull_est["operation"] == "pull" and pull_est["base"] is None
        assert set(est) == set(pull_est) - {"destination"}
        human = run("diff", a, b, "--estimate", "--config", str(strict_cfg)).stdout
        assert "diff --values run/ckpt@v1 -> run/ckpt@v2: would download 384.0 KiB" in human
        assert "inter-region" in human and "$0.37" in human and "tensors:" not in human

        # above the warning: one line on stderr, then the values
        warned = run("diff", a, b, "--values", "--config", str(warn_cfg))
        [line] = [ln for ln in warned.stderr.splitlines() if "warning" in ln]
        assert "egress" in line and "diff --values" in line and "inter-region" in line
        assert "egress.warn_above_usd 0.10" in line
        assert "values: fetched 384.0 KiB for 3 changed tensors" in warned.stdout
        assert sum(x.bytes_down for x in chunk_gets()) == TENSOR_BYTES

        # above the confirmation, no --yes, no terminal: refused, not one chunk downloaded
        refused = run("diff", a, b, "--values", "--config", str(strict_cfg), code=EXIT_POLICY)
        assert "confirm_above_usd" in refused.stderr and "--yes" in refused.stderr
        assert "nothing was downloaded" in refused.stderr and refused.stdout == ""
        assert proxy.stats().total_requests > 0 and chunk_gets() == []
        as_json = run("diff", a, b, "--values", "--json", "--config", str(strict_cfg),
                      code=EXIT_POLICY)
        assert json.loads(as_json.stdout)["error"]["exit_code"] == EXIT_POLICY
        assert chunk_gets() == []

        # without --values there is nothing to guard (manifests only)
        plain = run("diff", a, b, "--config", str(strict_cfg))
        assert "warning" not in plain.stderr and chunk_gets() == []

        # --yes: proceeds, and fetches exactly the estimate
        done = json.loads(run("diff", a, b, "--values", "--yes", "--json", "--config",
                              str(strict_cfg)).stdout)
        assert done["values"]["bytes_fetched"] == TENSOR_BYTES
        assert sum(x.bytes_down for x in chunk_gets()) == TENSOR_BYTES
        assert all("max_abs_diff" in x["values"] for x in done["tensors"]["changed"])


def test_values_fetch_an_encoded_chunk_both_sides_hold_once(tmp_path: Path) -> None:
    """A large tensor with one value changed: its other chunks are the same objects in both
    versions.  Stored encoded, each is fetched whole once, as the estimate counts it (it
    was fetched once per side, more than the egress guard had priced)."""
    from ckptlake.policy.egress import EgressPolicy

    store = ChunkCountingBucket()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    rng = np.random.default_rng(5)
    a = {"w": (rng.standard_normal((768, 1024)) * 0.02).astype(np.float32)}  # 3 MiB
    b = {"w": a["w"].copy()}
    b["w"][-1, -1] += 1.0
    for name, tensors in (("A", a), ("B", b)):
        (tmp_path / name).mkdir()
        st.save_file(tensors, str(tmp_path / name / "model.safetensors"))
        lake.push(tmp_path / name, "big/ckpt", compression="auto")
    m1, m2 = (json.loads(store.get(layout.version_key("big/ckpt", v))) for v in (1, 2))
    shared = set(m1["stored"]) & set(m2["stored"])
    assert shared, "some encoded chunks are the same in both versions"
    store.chunk_reads.clear()  # the second push read the heads of the frames it reused
    est = lake.estimate_diff("big/ckpt@v1", "big/ckpt@v2",
                             egress=EgressPolicy(client_region="eu-west-1",
                                                 price_per_gb=PRICES))
    r = lake.diff("big/ckpt@v1", "big/ckpt@v2", values=True)
    (changed,) = r.tensors["changed"]
    assert changed["values"]["max_abs_diff"] == pytest.approx(1.0)
    keys = [k for k, _ in store.chunk_reads]
    assert len(keys) == len(set(keys)), "no chunk object was fetched twice"
    assert sum(n for _, n in store.chunk_reads) == r.values["bytes_fetched"] \
        == est.bytes_to_download
