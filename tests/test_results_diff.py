"""diff results the audit found wrong: one tensor name in two files, NaN/inf and large integer
values, empty directories and a single file against a directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

np = pytest.importorskip("numpy")
st = pytest.importorskip("safetensors.numpy")


@pytest.fixture
def lake(monkeypatch: pytest.MonkeyPatch) -> Lake:
    """Also what the CLI opens."""
    lake = Lake(MemoryStore(), chunk_size=1024 * 1024, concurrency=2)
    lake.close = lambda: None  # type: ignore[method-assign]
    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: lake)
    return lake


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def push(lake: Lake, root: Path, artifact: str, files: dict[str, dict[str, Any]]) -> None:
    """One version holding the given safetensors files ({file: {tensor: array}})."""
    d = root / f"v{len(list(root.iterdir()))}"
    d.mkdir()
    for name, tensors in files.items():
        st.save_file(tensors, str(d / name))
    lake.push(d, artifact)


def values(lake: Lake, artifact: str) -> dict[str, dict[str, Any]]:
    r = lake.diff(f"{artifact}@v1", f"{artifact}@v2", values=True)
    return {x["name"]: x["values"] for x in r.tensors["changed"]}


def test_one_tensor_name_in_two_files_is_matched_file_by_file(lake: Lake,
                                                              tmp_path: Path) -> None:
    w = np.arange(16, dtype=np.float32)
    w2 = w.copy()
    w2[3] += 0.5
    push(lake, tmp_path, "r", {"model.safetensors": {"w": w}})
    push(lake, tmp_path, "r", {"model.safetensors": {"w": w2}, "ema.safetensors": {"w": w}})
    r = lake.diff("r@v1", "r@v2", values=True)
    t = r.tensors
    assert [(x["name"], x["file_a"], x["file"]) for x in t["changed"]] == [
        ("w", "model.safetensors", "model.safetensors")]
    assert t["changed"][0]["values"]["max_abs_diff"] == 0.5
    assert [(x["name"], x["file"]) for x in t["added"]] == [("w", "ema.safetensors")]
    assert t["removed"] == [] and r.values["bytes_fetched"] == 2 * 64  # type: ignore[index]
    out = run("diff", "r@v1", "r@v2", "--values").stdout
    assert "1 changed, 0 reshaped, 0 retyped, 1 added, 0 removed" in out
    assert "  ~ w (model.safetensors)  F32 [16]  max|Δ| 0.5" in out
    assert "  + w (ema.safetensors)  F32 [16]" in out


def test_a_tensor_moving_between_shards_still_matches(lake: Lake, tmp_path: Path) -> None:
    a, b, c = (np.full(8, i, dtype=np.float32) for i in range(3))
    push(lake, tmp_path, "s", {"s1.safetensors": {"a": a, "b": b}, "s2.safetensors": {"c": c}})
    push(lake, tmp_path, "s", {"s1.safetensors": {"a": a},
                               "s2.safetensors": {"b": b + 1, "c": c}})
    t = lake.diff("s@v1", "s@v2").tensors
    assert [(x["name"], x["file_a"], x["file"]) for x in t["changed"]] == [
        ("b", "s1.safetensors", "s2.safetensors")]
    assert (t["added"], t["removed"], t["unchanged"]) == ([], [], 2)
    out = run("diff", "s@v1", "s@v2").stdout
    assert "  ~ b (s1.safetensors -> s2.safetensors)  F32 [8]" in out


def test_values_that_became_nan_or_inf_are_said(lake: Lake, tmp_path: Path) -> None:
    a = np.ones(4, dtype=np.float16)
    b = a.copy()
    b[1] = np.nan
    push(lake, tmp_path, "n", {"m.safetensors": {"h": a}})
    push(lake, tmp_path, "n", {"m.safetensors": {"h": b}})
    assert values(lake, "n")["h"]["nonfinite"] == 1
    assert "max|Δ| 0  rel L2 0, 1 non-finite" in run("diff", "n@v1", "n@v2", "--values").stdout


def test_nan_or_inf_in_both_versions_is_unchanged(lake: Lake, tmp_path: Path) -> None:
    push(lake, tmp_path, "u", {"m.safetensors": {
        "x": np.array([np.nan, 1, 2, np.inf], dtype=np.float32)}})
    push(lake, tmp_path, "u", {"m.safetensors": {
        "x": np.array([np.nan, 1, 3, np.inf], dtype=np.float32)}})
    got = values(lake, "u")["x"]
    assert "nonfinite" not in got and got["max_abs_diff"] == 1.0
    assert "non-finite" not in run("diff", "u@v1", "u@v2", "--values").stdout


def test_a_finite_change_whose_difference_overflows_is_no_nan(lake: Lake, tmp_path: Path,
                                                             recwarn: Any) -> None:
    """1e308 -> -1e308 is a finite change: counted in max|Δ| (at the largest float), not as
    non-finite; only 1 -> nan and nan -> 2 are.  No numpy overflow warning on stderr."""
    push(lake, tmp_path, "o", {"m.safetensors": {"x": np.array(
        [1, np.nan, np.inf, 1e308, -1e308, np.nan], dtype=np.float64)}})
    push(lake, tmp_path, "o", {"m.safetensors": {"x": np.array(
        [np.nan, np.nan, np.inf, -1e308, 1e308, 2], dtype=np.float64)}})
    got = values(lake, "o")["x"]
    assert got["nonfinite"] == 2
    assert got["max_abs_diff"] == np.finfo(np.float64).max and got["rel_l2"] is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("dtype, a, b, max_abs", [
    (np.int64, [2**62, 5], [2**62 + 1, 5], 1.0),
    (np.int64, [-2**63, 0], [2**63 - 1, 0], float(2**64 - 1)),
    (np.uint64, [2**64 - 1, 2**63], [2**64 - 2, 2**63 + 1], 1.0),
    (np.uint64, [0, 7], [2**64 - 1, 7], float(2**64 - 1)),
    (np.uint8, [0, 255, 3], [255, 0, 3], 255.0),
])
def test_integer_values_are_subtracted_exactly(lake: Lake, tmp_path: Path, dtype: Any,
                                               a: list[int], b: list[int],
                                               max_abs: float) -> None:
    push(lake, tmp_path, "i", {"m.safetensors": {"q": np.array(a, dtype=dtype)}})
    push(lake, tmp_path, "i", {"m.safetensors": {"q": np.array(b, dtype=dtype)}})
    got = values(lake, "i")["q"]
    exact = [float(y - x) for x, y in zip(a, b)]  # Python ints: no overflow, no rounding
    assert got["max_abs_diff"] == max_abs
    assert got["rel_l2"] == pytest.approx(float(np.linalg.norm(exact))
                                          / float(np.linalg.norm([float(x) for x in a])))


def test_an_empty_directory_added_or_removed_is_a_difference(lake: Lake,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    lake.push(src, "d")
    (src / "emptydir").mkdir()
    (src / "full").mkdir()
    lake.push(src, "d")
    (src / "full" / "f.txt").write_text("f")  # no longer empty: a file added, no dir removed
    lake.push(src, "d")
    r = lake.diff("d@v1", "d@v2")
    assert not r.identical
    assert (r.files["dirs_added"], r.files["dirs_removed"]) == (["emptydir", "full"], [])
    assert lake.diff("d@v2", "d@v1").files["dirs_removed"] == ["emptydir", "full"]
    f = lake.diff("d@v2", "d@v3").files
    assert (f["dirs_added"], f["dirs_removed"]) == ([], [])
    assert [x["path"] for x in f["added"]] == ["full/f.txt"]
    res = run("diff", "d@v1", "d@v2", "--exit-code")
    assert res.exit_code == 1
    assert "empty directories: 2 added, 0 removed" in res.stdout
    assert "  A emptydir/" in res.stdout and "identical" not in res.stdout
    doc = json.loads(run("diff", "d@v2", "d@v1", "--json").stdout)
    assert doc["files"]["dirs_removed"] == ["emptydir", "full"] and not doc["identical"]


def test_a_single_file_against_a_directory_holding_it_differs(lake: Lake,
                                                             tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights")
    lake.push(src / "w.bin", "k")
    lake.push(src, "k")
    r = lake.diff("k@v1", "k@v2")
    assert r.kind == {"a": "file", "b": "dir", "changed": True} and not r.identical
    assert not (r.files["added"] or r.files["removed"] or r.files["modified"])
    res = run("diff", "k@v1", "k@v2", "--exit-code")
    assert res.exit_code == 1 and "kind: file -> dir" in res.stdout
    assert lake.diff("k@v2", "k@v2").identical


def test_diff_escapes_names_as_ls_and_show_do(lake: Lake, tmp_path: Path) -> None:
    """A name with an escape sequence or a newline drove the terminal and broke the listing."""
    for i, name in enumerate(("x\x1b[31mred\nnl", "e\tdir")):
        d = tmp_path / f"s{i}"
        d.mkdir()
        (d / "same").write_bytes(b"s")
        (d / name).mkdir() if i else (d / name).write_bytes(b"r")
        lake.push(d, "esc")
    out = run("diff", "esc@v1", "esc@v2").stdout
    assert "\x1b" not in out and "x\\x1b[31mred\\nnl" in out and "e\\tdir/" in out
