"""BLAKE3 lakes (issue 13, item 3): a lake whose header says `hash: blake3` names and verifies
every chunk, packed file and tensor with BLAKE3, and every new lake gets it unless its first
push names sha256; SHA-256 lakes (`--hash sha256`, and every lake made before BLAKE3 was the
default) stay SHA-256; a missing blake3 package or an unknown hash stops with a one-line
error."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.format import header as header_mod
from ckptlake.format import layout
from ckptlake.format.header import MIN_CHUNK_SIZE
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

blake3 = pytest.importorskip("blake3").blake3
CH = MIN_CHUNK_SIZE  # 1 MiB chunks: several per file


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def b3(data: bytes) -> str:
    return blake3(data).hexdigest()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def weights(seed: int, bump: str | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {f"layer.{i}.w": (rng.standard_normal((256, 256)) * 0.02).astype(np.float32)
         for i in range(8)}  # 2 MiB of fp32: compressible
    if bump:
        w[bump] = w[bump] + np.float32(0.5)
    return w


def source(tmp: Path, name: str = "src", bump: str | None = None) -> Path:
    src = tmp / name
    (src / "cfg").mkdir(parents=True)
    write_safetensors(src / "model.safetensors", weights(7, bump))
    (src / "random.bin").write_bytes(np.random.default_rng(3).bytes(CH + 3))
    (src / "zeros.bin").write_bytes(bytes(2 * CH))  # two identical all-zero chunks
    for i in range(10):  # packed small files: each has its own file digest
        (src / "cfg" / f"{i}.json").write_text(json.dumps({"layer": i, "lr": 3e-4}) * 20)
    return src


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def block_digest(data: bytes) -> str:
    """docs/format.md's tensor block digest, with BLAKE3 as H."""
    blocks = [data[i:i + CH] for i in range(0, len(data), CH)]
    return b3(b"".join(blake3(b).digest() for b in blocks))


def test_blake3_lake_end_to_end(lake_url: str, tmp_path: Path) -> None:
    src = source(tmp_path)
    lake = ckptlake.open(lake_url, chunk_size=CH)
    first = lake.push(src, "m/ckpt", hash="blake3", compression="auto")
    assert first.warnings and "created a new lake" in first.warnings[0]
    head = json.loads(lake.store.get(layout.HEADER_KEY))
    assert head["hash"] == "blake3"
    m = json.loads(lake.store.get(layout.version_key("m/ckpt", 1)))
    assert m["hash"] == "blake3" and m["stored"], "some chunks are stored compressed"
    files = {f["path"]: f for f in m["files"]}
    rnd = (src / "random.bin").read_bytes()
    assert [c[0] for c in files["random.bin"]["chunks"]] == [b3(rnd[:CH]), b3(rnd[CH:])]
    cfg = (src / "cfg" / "4.json").read_bytes()
    assert files["cfg/4.json"]["digest"] == b3(cfg)
    w = weights(7)
    recorded = {t["name"]: t["digest"] for t in files["model.safetensors"]["tensors"]}
    assert recorded["layer.3.w"] == block_digest(w["layer.3.w"].tobytes())
    for d in files["random.bin"]["chunks"][:1]:  # a raw chunk object holds the bytes named
        assert b3(lake.store.get(layout.chunk_key(d[0]))) == d[0]

    lake.pull("m/ckpt", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    assert b"".join(lake.cat("m/ckpt", "cfg/3.json")) == (src / "cfg" / "3.json").read_bytes()
    r = cli("cat", "m/ckpt", "random.bin", "--lake", lake_url)
    assert r.exit_code == 0 and r.stdout_bytes == rnd
    with lake.open("m/ckpt", "random.bin") as fh:
        fh.seek(CH - 10)
        assert fh.read(20) == rnd[CH - 10:CH + 10]
    np.testing.assert_array_equal(lake.tensors("m/ckpt", "layer.5.w")["layer.5.w"],
                                  w["layer.5.w"])
    v = cli("verify", "--lake", lake_url, "--read-data", "--json")
    assert v.exit_code == 0, v.stdout

    # a second version changes one tensor: diff says which, from blake3 tensor digests
    again = lake.push(source(tmp_path, "src2", bump="layer.2.w"), "m/ckpt")
    assert 0 < again.chunks_uploaded < first.chunks_uploaded, "only the changed tensor's"
    d = lake.diff("m/ckpt@v1", "m/ckpt@v2", values=True)
    assert [x["name"] for x in d.tensors["changed"]] == ["layer.2.w"]
    assert d.tensors["changed"][0]["values"]["max_abs_diff"] == pytest.approx(0.5, rel=1e-3)
    r = cli("diff", "m/ckpt@v1", "m/ckpt@v2", "--lake", lake_url, "--json")
    assert r.exit_code == 0 and "layer.2.w" in r.stdout

    # gc: keep the last version; the first one's own chunks go, v2 still pulls bit-exact
    from ckptlake.core.gc import execute, plan_gc
    from ckptlake.policy.retention import RetentionPolicy, Rule

    policy = RetentionPolicy(rules=(Rule(match="m/*", keep_last=1, index=0),),
                             grace_period=0, sweep_window=30, record_retention=60)
    plan = plan_gc(lake.store, policy)
    assert [x.version for x in plan.artifacts[0].delete] == [1]
    assert execute(lake.store, plan).bytes_swept > 0
    lake.pull("m/ckpt", tmp_path / "out2")
    assert tree(tmp_path / "out2") == tree(tmp_path / "src2")
    assert cli("verify", "--lake", lake_url, "--read-data").exit_code == 0


def test_blake3_verification_catches_a_damaged_chunk(lake_url: str, tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    data = np.random.default_rng(5).bytes(CH + 100)
    (src / "w.bin").write_bytes(data)
    lake = ckptlake.open(lake_url, chunk_size=CH)
    lake.push(src, "bad", hash="blake3", compression="none")
    key = layout.chunk_key(b3(data[:CH]))
    body = bytearray(lake.store.get(key))
    body[7] ^= 1
    lake.store.put(key, bytes(body))
    r = cli("pull", "bad", tmp_path / "dest", "--lake", lake_url)
    assert r.exit_code == 5 and "Traceback" not in r.stderr
    assert not (tmp_path / "dest").exists()
    assert cli("verify", "--lake", lake_url, "--read-data").exit_code == 5


class SignerSpy(MemoryStore):
    """Records the `sha256=` each chunk put hands to the store (the S3 signer's hint)."""

    def __init__(self) -> None:
        super().__init__()
        self.hints: dict[str, str | None] = {}

    def put(self, key: str, data: Any, **kw: Any) -> str:
        if key.startswith(layout.CHUNKS_PREFIX):
            self.hints[key] = kw.get("sha256")
        return super().put(key, data, **kw)


def test_signer_hint_only_for_sha256_lakes(tmp_path: Path) -> None:
    """The trade of the default: a new lake (BLAKE3) gives the S3 signer no digest to reuse;
    a lake created with hash="sha256" does."""
    data = np.random.default_rng(9).bytes(CH + 5)
    (tmp_path / "w.bin").write_bytes(data)
    sha = hashlib.sha256(data[:CH]).hexdigest()
    for algo, named, expect in (("sha256", sha, sha), ("blake3", b3(data[:CH]), None),
                                (None, b3(data[:CH]), None)):
        store = SignerSpy()
        Lake(store, chunk_size=CH).push(tmp_path / "w.bin", "a", hash=algo, compression="none")
        key = [k for k in store.hints if k.endswith(named)]
        assert key and store.hints[key[0]] == expect, algo


def test_a_new_lake_is_a_blake3_lake(lake_url: str, tmp_path: Path) -> None:
    """No hash named (library or CLI, local or S3): the header, the manifest and every chunk
    key say BLAKE3."""
    src = source(tmp_path)
    r = cli("push", src, "n", "--lake", lake_url, "--chunk-size", "1MiB", "--json")
    assert r.exit_code == 0, r.stderr
    lake = ckptlake.open(lake_url, chunk_size=CH)
    assert json.loads(lake.store.get(layout.HEADER_KEY))["hash"] == "blake3"
    m = json.loads(lake.store.get(layout.version_key("n", 1)))
    assert m["hash"] == "blake3"
    rnd = (src / "random.bin").read_bytes()
    files = {f["path"]: f for f in m["files"]}
    assert [c[0] for c in files["random.bin"]["chunks"]] == [b3(rnd[:CH]), b3(rnd[CH:])]
    assert files["cfg/4.json"]["digest"] == b3((src / "cfg" / "4.json").read_bytes())
    assert cli("pull", "n", tmp_path / "o", "--lake", lake_url).exit_code == 0
    assert tree(tmp_path / "o") == tree(src)
    other = Lake(MemoryStore(), chunk_size=CH)
    other.push(src, "n")
    assert json.loads(other.store.get(layout.HEADER_KEY))["hash"] == "blake3"


def test_sha256_lake_is_unaffected(lake_url: str, tmp_path: Path) -> None:
    """`--hash sha256` creates a SHA-256 lake, and later pushes without the option keep it
    SHA-256 (header unchanged) and deduplicate against its chunks."""
    src = source(tmp_path)
    r = cli("push", src, "s", "--lake", lake_url, "--hash", "sha256", "--chunk-size", "1MiB",
            "--json")
    assert r.exit_code == 0, r.stderr
    lake = ckptlake.open(lake_url, chunk_size=CH)
    header = lake.store.get(layout.HEADER_KEY)
    assert json.loads(header)["hash"] == "sha256"
    m = json.loads(lake.store.get(layout.version_key("s", 1)))
    cfg = (src / "cfg" / "4.json").read_bytes()
    assert {f["path"]: f for f in m["files"]}["cfg/4.json"]["digest"] == \
        hashlib.sha256(cfg).hexdigest()
    t = {f["path"]: f for f in m["files"]}["model.safetensors"]["tensors"][0]
    data = weights(7)[t["name"]].tobytes()
    inner = b"".join(hashlib.sha256(data[i:i + CH]).digest() for i in range(0, len(data), CH))
    assert t["digest"] == hashlib.sha256(inner).hexdigest()
    # naming the lake's own hash is fine; another one is refused before anything is sent
    assert cli("push", src, "s", "--lake", lake_url, "--hash", "sha256").exit_code == 0
    r = cli("push", src, "s", "--lake", lake_url, "--hash", "blake3")
    assert r.exit_code == 2 and "sha256" in r.stderr and "Traceback" not in r.stderr
    assert cli("pull", "s", tmp_path / "o", "--lake", lake_url).exit_code == 0
    assert tree(tmp_path / "o") == tree(src)
    # a push without --hash: the header decides, not the new default
    r = cli("push", source(tmp_path, "src2", bump="layer.2.w"), "s", "--lake", lake_url,
            "--chunk-size", "1MiB", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["version"] == 3 and doc["chunks_uploaded"] > 0 and doc["chunks_deduplicated"] > 0
    assert lake.store.get(layout.HEADER_KEY) == header
    m = json.loads(lake.store.get(layout.version_key("s", 3)))
    assert m["hash"] == "sha256"
    rnd = (src / "random.bin").read_bytes()
    assert [c[0] for c in {f["path"]: f for f in m["files"]}["random.bin"]["chunks"]] == \
        [hashlib.sha256(rnd[:CH]).hexdigest(), hashlib.sha256(rnd[CH:]).hexdigest()]
    assert cli("verify", "--lake", lake_url, "--read-data").exit_code == 0


@pytest.mark.parametrize("loss", ["deleted", "zero-byte"])
def test_a_lost_header_keeps_the_lakes_hash(local_lake_url: str, tmp_path: Path,
                                            loss: str) -> None:
    """A header lost under existing versions is rewritten by the next push with their hash,
    not the default for new lakes (a SHA-256 lake must not turn BLAKE3 under its own
    manifests); verify, meanwhile, checks chunks with the manifests' hash."""
    src = source(tmp_path)
    root = Path(local_lake_url[7:])
    for name, algo in (("sha", "sha256"), ("b3", "blake3")):
        url = f"{local_lake_url}-{name}"
        assert cli("push", src, "a", "--lake", url, "--hash", algo).exit_code == 0
        head = Path(f"{root}-{name}", layout.HEADER_KEY)
        head.unlink() if loss == "deleted" else head.write_bytes(b"")
        v = cli("verify", "--lake", url, "--read-data", "--json")
        problems = json.loads(v.stdout)["problems"]
        assert v.exit_code == 5 and [p["kind"] for p in problems] == ["header"], problems
        other = "blake3" if algo == "sha256" else "sha256"
        r = cli("push", src, "a", "--lake", url, "--hash", other)
        assert r.exit_code == 2 and algo in r.stderr and "Traceback" not in r.stderr
        r = cli("push", source(tmp_path, f"{name}2", bump="layer.1.w"), "a", "--lake", url)
        assert r.exit_code == 0, r.stderr
        assert json.loads(head.read_text())["hash"] == algo
        assert json.loads(Path(f"{root}-{name}", layout.version_key("a", 2)).read_text())[
            "hash"] == algo
        assert cli("verify", "--lake", url, "--read-data").exit_code == 0


def test_cli_hash_option(local_lake_url: str, tmp_path: Path) -> None:
    src = source(tmp_path)
    r = cli("push", src, "c", "--lake", local_lake_url, "--hash", "md5")
    assert r.exit_code == 2 and "sha256 or blake3" in r.stderr
    assert not Path(local_lake_url[7:], layout.HEADER_KEY).exists()
    r = cli("push", src, "c", "--lake", local_lake_url, "--hash", "blake3", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(Path(local_lake_url[7:], layout.HEADER_KEY).read_text())["hash"] == \
        "blake3"
    # later pushes need no option: the header decides
    assert cli("push", src, "c", "--lake", local_lake_url).exit_code == 0
    assert cli("pull", "c", tmp_path / "o", "--lake", local_lake_url).exit_code == 0
    assert tree(tmp_path / "o") == tree(src)


@pytest.fixture
def no_blake3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "blake3", None)  # import blake3 -> ImportError
    monkeypatch.setattr(header_mod, "_blake3", None)


def test_missing_package_creating_a_lake(local_lake_url: str, tmp_path: Path,
                                         no_blake3: None) -> None:
    """blake3 is a dependency, but `pip install --no-deps` skips it: a new lake is then
    refused (not silently made SHA-256), with the two ways out; a SHA-256 lake needs no
    blake3."""
    src = source(tmp_path)
    for named in (("--hash", "blake3"), ()):
        r = cli("push", src, "x", "--lake", local_lake_url, *named)
        assert r.exit_code == 2 and "Traceback" not in r.stderr, named
        assert "pip install blake3" in r.stderr and "--hash sha256" in r.stderr, named
        assert not Path(local_lake_url[7:], layout.HEADER_KEY).exists(), "no lake was created"
    r = cli("push", src, "x", "--lake", local_lake_url, "--hash", "sha256")
    assert r.exit_code == 0, r.stderr
    assert cli("pull", "x", tmp_path / "o", "--lake", local_lake_url).exit_code == 0
    assert cli("push", src, "x", "--lake", local_lake_url).exit_code == 0


def test_missing_package_reading_a_blake3_lake(local_lake_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    src = source(tmp_path)
    assert cli("push", src, "x", "--lake", local_lake_url, "--hash", "blake3").exit_code == 0
    monkeypatch.setitem(sys.modules, "blake3", None)
    monkeypatch.setattr(header_mod, "_blake3", None)
    for args in (("pull", "x", tmp_path / "o"), ("push", src, "x"), ("cat", "x", "cfg/1.json"),
                 ("verify", "--read-data")):
        r = cli(*args, "--lake", local_lake_url)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        assert "pip install blake3" in r.stderr and "Traceback" not in r.stderr, args
    assert not (tmp_path / "o").exists()


def test_unknown_hash_is_refused(local_lake_url: str, tmp_path: Path) -> None:
    """A header naming a hash this ckptlake does not know stops a push (it could not name
    chunks); a manifest naming one stops a pull (it could not verify them).  Exit 5."""
    src = source(tmp_path)
    assert cli("push", src, "u", "--lake", local_lake_url).exit_code == 0
    root = Path(local_lake_url[7:])
    head = json.loads((root / layout.HEADER_KEY).read_text())
    (root / layout.HEADER_KEY).write_text(json.dumps({**head, "hash": "blake7"}))
    r = cli("push", src, "u", "--lake", local_lake_url)
    assert r.exit_code == 5 and "blake7" in r.stderr and "Traceback" not in r.stderr
    mpath = root / layout.version_key("u", 1)
    m = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**m, "hash": "blake7"}))
    r = cli("pull", "u", tmp_path / "o", "--lake", local_lake_url)
    assert r.exit_code == 5 and "blake7" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_blake3_lake_through_the_chunk_cache_and_reuse(local_lake_url: str,
                                                       tmp_path: Path) -> None:
    """The chunk cache (keyed by hash) and the reuse of local bytes verify with BLAKE3 too."""
    src = source(tmp_path)
    lake = ckptlake.open(local_lake_url, chunk_size=CH, cache=tmp_path / "cache")
    lake.push(src, "c", hash="blake3")
    lake.pull("c", tmp_path / "a")  # fills the cache
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any("blake3" in p.parts for p in cached)
    for p in cached:  # every cached chunk file, damaged: the next pull must not use it
        if "blake3" in p.parts and p.stat().st_size >= CH:
            data = bytearray(p.read_bytes())
            data[0] ^= 1
            p.write_bytes(bytes(data))
    lake.pull("c", tmp_path / "b")
    assert tree(tmp_path / "b") == tree(src)
    (tmp_path / "a" / "random.bin").write_bytes(b"x" * 10)
    # identical files are recognised by their BLAKE3 digests: only random.bin differs
    with pytest.raises(ckptlake.errors.Conflict, match=r"files than c@v1: \S*/random\.bin \("):
        lake.pull("c", tmp_path / "a")
    lake.pull("c", tmp_path / "a", force=True)
    assert tree(tmp_path / "a") == tree(src)
