"""diff --inspect never reads more of a torch archive than its egress estimate counted (the
first and the last chunk of each side): an archive whose zip directory outgrows a chunk read
2.65x the estimate the guard had priced (mutation review of core/contents.py)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ckptlake.lake import Lake  # noqa: E402
from ckptlake.policy.egress import EgressPolicy  # noqa: E402
from ckptlake.store.memory import MemoryStore  # noqa: E402

MiB = 1 << 20


def _archive(path: Path, n: int, value: float) -> None:
    state = {f"layer{i}.w": torch.full((1,), float(i)) for i in range(n)}
    state["head"] = torch.full((4,), value)
    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(buf.getvalue())


def test_inspect_of_an_archive_with_a_large_directory_stays_within_its_estimate(
        tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=MiB)
    for value in (0.0, 5.0):
        src = tmp_path / f"v{value}"
        src.mkdir()
        _archive(src / "m.pt", 12_000, value)
        assert (src / "m.pt").stat().st_size > 3 * MiB  # the directory alone > 1 chunk
        lake.push(src, "a", compression="none")
    est = lake.estimate_diff("a@v1", "a@v2", egress=EgressPolicy(), values=False, inspect=True)
    r = lake.diff("a@v1", "a@v2", inspect=True)
    (entry,) = r.contents
    assert entry["bytes_fetched"] <= est.bytes_to_download
    # data.pkl (~1.1 MiB here) outgrows the first chunk: storages compared, tensors not read
    assert "egress estimate" in (entry.get("reason") or entry.get("tensors_note") or "")


def test_inspect_of_a_small_archive_still_compares_its_tensors(tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=MiB)
    for value in (0.0, 5.0):
        src = tmp_path / f"v{value}"
        src.mkdir()
        _archive(src / "m.pt", 10, value)
        lake.push(src, "a", compression="none")
    (entry,) = lake.diff("a@v1", "a@v2", inspect=True).contents
    assert entry["inspected"] is True
    assert [t["name"] for t in entry["tensors"]["changed"]] == ["head"]


def test_a_meta_file_is_bounded_and_a_deep_one_is_named_so(tmp_path: Path) -> None:
    """--meta-file /dev/zero ran a push out of memory (exit 1, MemoryError); a deeply nested
    .json was "not valid YAML: RecursionError" (mutation review of core/provenance.py)."""
    from ckptlake.core.provenance import MAX_META_FILE, load_meta_file
    from ckptlake.errors import UsageError

    with pytest.raises(UsageError, match="larger than"):
        load_meta_file("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * MAX_META_FILE + "\n")
    with pytest.raises(UsageError, match="larger than"):
        load_meta_file(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UsageError, match="nested too deeply"):
        load_meta_file(deep)
    ok = tmp_path / "ok.yaml"
    ok.write_text("lr: 0.0003\noptimizer: {name: adamw}\n")
    assert load_meta_file(ok) == {"lr": "0.0003", "optimizer.name": "adamw"}
