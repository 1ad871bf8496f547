"""Checks of core/contents.py (diff --inspect of torch archives and safetensors) and
core/provenance.py that a mutation review found no test exercised (each test names the check it
guards and what diff or provenance would get wrong without it)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from ckptlake.core.provenance import collect, load_meta_file  # noqa: E402
from ckptlake.errors import IntegrityError, UsageError  # noqa: E402
from ckptlake.format import layout  # noqa: E402
from ckptlake.lake import Lake  # noqa: E402
from ckptlake.policy.egress import EgressPolicy  # noqa: E402
from ckptlake.store.memory import MemoryStore  # noqa: E402
from test_reader import write_safetensors  # noqa: E402  (with __metadata__)
# test_lineage's fixtures: a MemoryStore lake with 1 MiB chunks
from test_lineage import lake, manifest, store  # noqa: E402,F401

from test_diff_mutants import _dir  # noqa: E402

MiB = 1024 * 1024


def _save(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())


def _push_pair(lake: Lake, tmp_path: Path, a: object, b: object, name: str = "m.pt",
               **kw: object) -> dict:
    da, db = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    _save(a, da / name)
    _save(b, db / name)
    lake.push(da, "p", **kw)
    lake.push(db, "p", **kw)
    (c,) = lake.diff("p@v1", "p@v2", inspect=True).contents
    return c


# ---- contents: torch tensors -------------------------------------------------------------------

def _drop_entry(path: Path, suffix: str) -> None:
    """Rewrite the zip at `path` without its entry ending in `suffix` (stored, as torch's)."""
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    dropped = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.filename.endswith(suffix):
                dropped += 1
                continue
            dst.writestr(info, src.read(info.filename))
    assert dropped == 1
    path.write_bytes(out.getvalue())


def test_a_tensor_whose_storage_is_missing_on_both_sides_is_changed(lake: Lake,
                                                                   tmp_path: Path) -> None:
    """w's storage entry (data/0) is missing from both archives (w is 0.0 in A, 5.0 in B):
    "missing" equals "missing", but nothing says w's bytes are the same.  Reporting w unchanged
    would tell the user a tensor nobody could compare did not change: it must be "changed"."""
    da, db = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    for d, value in ((da, 0.0), (db, 5.0)):
        _save({"w": torch.full((4,), value), "v": torch.ones(2)}, d / "m.pt")
        _drop_entry(d / "m.pt", "/data/0")
    lake.push(da, "p")
    lake.push(db, "p")
    (c,) = lake.diff("p@v1", "p@v2", inspect=True).contents
    assert c["inspected"] is True
    t = c["tensors"]
    assert [x["name"] for x in t["changed"]] == ["w"], t
    assert t["changed"][0]["storage"] == "0"
    assert t["unchanged"] == 1  # v, whose storage is there and equal


def test_same_bytes_other_dtype_is_retyped(lake: Lake, tmp_path: Path) -> None:
    """zeros(4) as float32 then as int32: the storages are byte-identical (same CRC and size),
    shape and view equal.  Loaded, w is another tensor: it must be "retyped", never unchanged."""
    c = _push_pair(lake, tmp_path, {"w": torch.zeros(4, dtype=torch.float32)},
                   {"w": torch.zeros(4, dtype=torch.int32)})
    assert c["inspected"] and c["storages"]["changed"] == []
    t = c["tensors"]
    assert [(x["name"], x["dtype_a"], x["dtype_b"]) for x in t["retyped"]] == [
        ("w", "float32", "int32")]
    assert t["unchanged"] == 0 and t["changed"] == [] and t["reshaped"] == []


def test_a_shorter_view_of_the_same_storage_is_reshaped(lake: Lake, tmp_path: Path) -> None:
    """{"w": base} then {"w": base[:3]} of base = zeros(4): torch.save writes the whole storage
    both times (same bytes), same dtype, offset and stride; only the shape differs.  w must be
    "reshaped" ([4] -> [3]), not unchanged."""
    base = torch.zeros(4)
    c = _push_pair(lake, tmp_path, {"w": base}, {"w": base[:3]})
    assert c["inspected"] and c["storages"]["changed"] == []
    t = c["tensors"]
    assert [(x["name"], x["shape_a"], x["shape_b"]) for x in t["reshaped"]] == [
        ("w", [4], [3])]
    assert t["unchanged"] == 0 and t["changed"] == []


def test_a_corrupt_chunk_under_data_pkl_is_an_integrity_error(lake: Lake, store: MemoryStore,
                                                              tmp_path: Path) -> None:
    """A multi-chunk m.pt whose first chunk (data.pkl) is damaged in the store: diff --inspect
    must raise IntegrityError (the lake is damaged: run verify), not swallow it as "data.pkl
    not readable weights-only" and carry on as if the archive were merely odd."""
    da, db = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    for d, value in ((da, 0.0), (db, 5.0)):
        _save({"w": torch.full((400_000,), value)}, d / "m.pt")  # ~1.6 MB: 2 chunks
    lake.push(da, "p", compression="none")
    lake.push(db, "p", compression="none")
    (entry,) = manifest(store, "p", 2).files
    assert len(entry.chunks) >= 2
    key = layout.chunk_key(entry.chunks[0].digest)
    data = bytearray(store.get(key))
    data[100] ^= 0xFF
    store.corrupt(key, bytes(data))
    with pytest.raises(IntegrityError):
        lake.diff("p@v1", "p@v2", inspect=True)


def test_an_upper_case_torch_suffix_is_inspected(lake: Lake, tmp_path: Path) -> None:
    """MODEL.PT (written on a case-insensitive filesystem) is a torch archive like model.pt:
    --inspect must compare its tensors, not say "not a .safetensors file or a torch archive"."""
    c = _push_pair(lake, tmp_path, {"w": torch.zeros(4)}, {"w": torch.ones(4)},
                   name="MODEL.PT")
    assert (c["kind"], c["inspected"]) == ("torch", True)
    assert [x["name"] for x in c["tensors"]["changed"]] == ["w"]


# ---- contents: safetensors egress ----------------------------------------------------------------

def test_estimate_of_a_multi_chunk_safetensors_metadata_diff_is_exact(lake: Lake,
                                                                     tmp_path: Path) -> None:
    """A multi-segment .safetensors (its header a segment of its own, then 1 MiB chunks of
    tensor data) whose __metadata__ alone changed: --inspect reads each side's first segment,
    the header.  The egress estimate must be exactly that, not also a data chunk a side (an
    over-estimate by megabytes can refuse a diff the policy allows)."""
    da, db = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    w = np.zeros(600_000, np.float32)  # 2.4 MB
    write_safetensors(da / "m.safetensors", {"w": w}, {"epoch": "1"})
    write_safetensors(db / "m.safetensors", {"w": w}, {"epoch": "2"})
    lake.push(da, "s", compression="none")
    lake.push(db, "s", compression="none")
    est = lake.estimate_diff("s@v1", "s@v2", egress=EgressPolicy(), values=False, inspect=True)
    (c,) = lake.diff("s@v1", "s@v2", inspect=True).contents
    assert c["metadata"]["changed"] == {"epoch": {"a": "1", "b": "2"}}
    assert 0 < c["bytes_fetched"] < MiB  # the headers only
    assert est.bytes_to_download == c["bytes_fetched"]


# ---- provenance ----------------------------------------------------------------------------------

def _git_repo(path: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], check=True, env=env,
                              capture_output=True, text=True).stdout.strip()

    path.mkdir(parents=True)
    git("init", "-q")
    (path / "f.txt").write_text(str(path))  # a commit of its own
    git("add", "f.txt")
    git("commit", "-qm", "init")
    return git("rev-parse", "HEAD")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_pushed_directory_is_its_own_checkout(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """collect(repo) of a directory that is a checkout, run from another checkout: the git
    state is the pushed directory's own.  Taking its parent (outside any checkout) would fall
    back to the cwd and record the wrong repository's commit."""
    head = _git_repo(tmp_path / "repo")
    other = _git_repo(tmp_path / "other")
    assert head != other
    monkeypatch.chdir(tmp_path / "other")
    state = collect(tmp_path / "repo")["git"]
    assert state["commit"] == head and state["root"] == str(tmp_path / "repo")


def test_a_yaml_error_never_quotes_a_credential(tmp_path: Path) -> None:
    """A meta file tagging a value with a URL holding a password: PyYAML's problem text quotes
    the tag.  The UsageError (which lands in CI logs) must not carry the password."""
    p = tmp_path / "meta.yaml"
    p.write_text("a: !<https://u:S3CRETPW@h/x> 1\n")
    with pytest.raises(UsageError) as exc:
        load_meta_file(p)
    assert "not valid YAML" in str(exc.value)
    assert "S3CRETPW" not in str(exc.value) and "S3CRETPW" not in repr(exc.value.__dict__)


def test_an_empty_mapping_is_kept_as_a_value(tmp_path: Path) -> None:
    """{"a": {}, "b": 1}: an empty mapping has no keys to flatten into, so it is stored as
    "{}"; flattening it would silently drop `a` from the recorded parameters."""
    p = tmp_path / "meta.json"
    p.write_text('{"a": {}, "b": 1}')
    assert load_meta_file(p) == {"a": "{}", "b": "1"}


def test_a_bad_json_file_says_json_and_where(tmp_path: Path) -> None:
    """bad.json: the error says "not valid JSON" and the line, not "not valid YAML:
    JSONDecodeError" (wrong format named, no position)."""
    p = tmp_path / "bad.json"
    p.write_text("{oops")
    with pytest.raises(UsageError) as exc:
        load_meta_file(p)
    assert "not valid JSON" in str(exc.value) and "line 1" in str(exc.value)
