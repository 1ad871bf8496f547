"""A training loop's step counter or loss is often a numpy or torch number: refused (a Python
int / float is what the lake records), with the message "must be an integer, got np.int64(6)"
about a 6, and no word of what to do.  The hint says: int(x) / float(x), or x.item()."""
from __future__ import annotations

from pathlib import Path

import pytest

import ckptlake

np = pytest.importorskip("numpy")


@pytest.mark.parametrize("step", [np.int64(6), np.uint8(3)])
def test_a_numpy_step_is_refused_with_the_fix(tmp_path: Path, step: object) -> None:
    with ckptlake.open(f"file://{tmp_path / 'l'}") as lake:
        (tmp_path / "f").write_bytes(b"x")
        with pytest.raises(ckptlake.UsageError, match="must be an integer") as err:
            lake.push(tmp_path / "f", "n/s", step=step)
        assert err.value.hint == "a numpy value: pass int(x) or x.item()"
        ck = lake.checkpointer("n/c", retention=False)
        try:
            with pytest.raises(ckptlake.UsageError) as err:
                ck.save_state({"w": np.zeros(2)}, step=step)
            assert "pass int(x)" in (err.value.hint or "")
        finally:
            ck.close()


def test_a_torch_loss_as_a_metric_is_refused_with_the_fix(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with ckptlake.open(f"file://{tmp_path / 'l'}") as lake:
        (tmp_path / "f").write_bytes(b"x")
        for loss in (torch.tensor(1.5), torch.tensor(2)):
            with pytest.raises(ckptlake.UsageError, match="must be a finite number") as err:
                lake.push(tmp_path / "f", "n/m", metrics={"loss": loss})
            assert err.value.hint == "a torch value: pass float(x) or x.item()"
        assert lake.push(tmp_path / "f", "n/m", metrics={"loss": np.float32(0.5)}).version == 1


@pytest.mark.parametrize("bad", [np.int64(-1), np.float32("nan")])
def test_no_hint_where_the_value_itself_is_wrong(tmp_path: Path, bad: object) -> None:
    with ckptlake.open(f"file://{tmp_path / 'l'}") as lake:
        (tmp_path / "f").write_bytes(b"x")
        with pytest.raises(ckptlake.UsageError) as err:
            if isinstance(bad, np.integer):
                lake.push(tmp_path / "f", "n/s", step=bad)
            else:
                lake.push(tmp_path / "f", "n/s", metrics={"loss": bad})
        assert err.value.hint is None


@pytest.mark.parametrize("value", [10 ** 400, -(10 ** 400), float("inf"), float("nan")])
def test_a_metric_beyond_a_floats_range_is_a_usage_error(tmp_path: Path, value: object) -> None:
    """10**400 escaped as OverflowError (math.isfinite on an int beyond a float's range)."""
    with ckptlake.open(f"file://{tmp_path / 'l'}") as lake:
        (tmp_path / "f").write_bytes(b"x")
        with pytest.raises(ckptlake.UsageError, match="must be a finite number") as err:
            lake.push(tmp_path / "f", "m/a", metrics={"val_loss": value})
        assert len(str(err.value)) < 200
        with lake.checkpointer("m/b") as ck, pytest.raises(ckptlake.UsageError,
                                                           match="finite number"):
            ck.save(tmp_path / "f", step=1, metrics={"loss": value})


@pytest.mark.parametrize("value,shown", [
    (10 ** 400, "got an integer of about 398 digits"),  # 1329 bits: an estimate, said so
    ("x" * 200, "got '" + "x" * 76 + "..."),  # cut at 80 characters
])
def test_a_bad_metrics_value_is_shown_short(tmp_path: Path, value: object, shown: str) -> None:
    with ckptlake.open(f"file://{tmp_path / 'l'}") as lake:
        (tmp_path / "f").write_bytes(b"x")
        with pytest.raises(ckptlake.UsageError) as err:
            lake.push(tmp_path / "f", "m/a", metrics={"val_loss": value})
        assert f"metric 'val_loss' must be a finite number, {shown}" in str(err.value), err.value
