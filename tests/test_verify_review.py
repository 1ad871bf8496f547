"""verify, from a review: a raw pack with bytes appended passed the size check (a pack need
only be long enough for the files read from it) while a whole pull refused it by its digest."""
from __future__ import annotations

from pathlib import Path

from test_verify import (ART, EXIT_INTEGRITY, EXIT_OK, Counting, chunks_of, only_in,
                         two_versions, verify_json)

__all__ = ["two_versions"]  # the fixture, used by name


def test_a_raw_pack_with_bytes_appended_is_found_and_pull_agrees(two_versions, tmp_path: Path
                                                                  ) -> None:
    url, lake = two_versions
    key = only_in(lake, 2, packed=True)  # random bytes: stored raw, no stored size recorded
    data = lake.store.get(key)
    size, offset = chunks_of(lake, 2)[key]
    assert offset is not None and len(data) == max(
        o + s for k, (s, o) in chunks_of(lake, 2).items() if k == key)
    lake.store.put(key, data + b"X")
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [(u["version"], u["corrupt_chunks"]) for u in doc["unrestorable"]] == [(2, 1)]
    from ckptlake.errors import IntegrityError
    import pytest

    with pytest.raises(IntegrityError):
        lake.pull(f"{ART}@v2", tmp_path / "out")


def test_a_healthy_lake_reads_no_chunk_for_its_packs(two_versions) -> None:
    url, lake = two_versions
    from ckptlake.core.verify import verify

    counting = Counting(lake.store)
    result = verify(counting, None, lake_url=url, concurrency=4)
    assert result.ok and counting.chunk_reads() == []
    assert verify_json(url)[0] == EXIT_OK
