"""A review of numbers, times and --json for CI scripts found:

1. `diff --json` was an internal error (exit 1) when two finite metrics differed by more than a
   float holds (1e308 -> -1e308): the delta was -inf, which strict JSON refuses.
2. `--sort ''`'s hint read "-KEY *** KEY:desc" (`-KEY or` looked like a secret-named option and
   its value), and a warning naming a metric `secret_recall` was garbled the same way.
3. `lineage --json` said `"created": null` for a version gc or rm deleted, although its
   tombstone (and `ls --all`) has the time.
4. A --meta-file's `release: 2026-12-01` was stored with quotes in it, and `a.b: 1` beside
   `a: {b: 2}` lost one of the two without a word.
5. A config's `1e-2` (text to YAML 1.1) was refused with "must be ... a number, got '1e-2'".
6. Sizes were rounded after their unit was chosen: 1,048,575 B showed as "1024.0 KiB".
7. A time another writer stamped with an offset (`+01:00`, which readers accept) went on into
   --json, tombstones and copies' provenance with it, where the format says UTC `Z`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _cli(root: Path, *args: str, code: int = 0) -> Any:
    r = CliRunner().invoke(app, [*args, "--lake", str(root)])
    assert r.exit_code == code, r.output
    return r


def _pushed(tmp_path: Path, *metric_sets: tuple[str, ...]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    root = tmp_path / "lake"
    for i, metrics in enumerate(metric_sets):
        (src / "a.txt").write_text(str(i))
        _cli(root, "push", str(src), "x/a", *[a for m in metrics for a in ("--metric", m)])
    return root


def test_a_metric_delta_beyond_a_float_is_finite_in_json(tmp_path: Path) -> None:
    root = _pushed(tmp_path, ("loss=1e308",), ("loss=-1e308",))
    doc = _strict(_cli(root, "diff", "x/a@v1", "x/a@v2", "--json").stdout)
    assert doc["metrics"]["changed"]["loss"]["delta"] == -1.7976931348623157e308
    assert "loss" in _cli(root, "diff", "x/a@v1", "x/a@v2").stdout


def test_sort_hints_and_metric_warnings_are_not_masked(tmp_path: Path) -> None:
    root = _pushed(tmp_path, ("recall=0.5",))
    r = _cli(root, "ls", "x/a", "--sort", "", code=2)
    assert "***" not in r.output and "':desc'" in r.output, r.output
    r = _cli(root, "ls", "x/a", "--sort", "-secret_recall")
    assert "'secret_recall'" in r.output and "--sort -secret_recall leaves" in r.output, r.output
    assert "***" not in r.output
    doc = _strict(_cli(root, "ls", "x/a", "--where", "secret_recall>0.1", "--json").stdout)
    assert doc["warnings"] == ["no version of x/a has metric 'secret_recall': --where "
                               "secret_recall>0.1 matches none of them"]


def test_lineage_of_a_deleted_version_says_when_it_was_created(tmp_path: Path) -> None:
    root = _pushed(tmp_path, (), ())
    _cli(root, "rm", "x/a@v1", "--yes")
    listed = _strict(_cli(root, "ls", "x/a", "--all", "--json").stdout)
    created = listed["expired"][0]["created"]
    node = _strict(_cli(root, "lineage", "x/a@v1", "--json").stdout)["nodes"][0]
    assert node["status"] == "expired" and created and node["created"] == created


def test_meta_file_dates_and_colliding_keys(tmp_path: Path) -> None:
    from ckptlake.core.provenance import load_meta_file
    from ckptlake.errors import UsageError

    f = tmp_path / "m.yaml"
    f.write_text("release: 2026-12-01\nat: 2026-12-01 10:30:00\nn: 3\n")
    assert load_meta_file(str(f)) == {"release": "2026-12-01", "at": "2026-12-01T10:30:00",
                                      "n": "3"}
    for text, key in (("a.b: 1\na: {b: 2}\n", "a.b"), ('1: x\n"1": y\n', "1")):
        f.write_text(text)
        with pytest.raises(UsageError, match=f"the key '{key}' is given twice"):
            load_meta_file(str(f))


def test_a_yaml_exponent_read_as_text_is_explained(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("egress:\n  price_per_gb:\n    internet: 1e-2\n")
    root = _pushed(tmp_path, ())
    r = _cli(root, "pull", "x/a", str(tmp_path / "out"), "--config", str(cfg), code=2)
    assert "got '1e-2' (text to YAML, which reads an exponent only after a dot and with a " \
        "sign: write a plain number such as 0.01" in r.output, r.output
    cfg.write_text("egress:\n  price_per_gb:\n    internet: 1.0e-2\n")
    _cli(root, "pull", "x/a", str(tmp_path / "out"), "--config", str(cfg))


@pytest.mark.parametrize("n, text, rate", [
    (1023, "1023 B", "1023 B/s"), (1024, "1.00 KiB", "1.00 KiB/s"),
    (10234, "9.99 KiB", "9.99 KiB/s"), (10239, "10.0 KiB", "10.0 KiB/s"),
    (102348, "99.9 KiB", "99.9 KiB/s"), (102399, "100.0 KiB", "100 KiB/s"),
    (1048575, "1.00 MiB", "1.00 MiB/s"), (1073741823, "1.00 GiB", "1.00 GiB/s"),
    (5 << 30, "5.00 GiB", "5.00 GiB/s")])
def test_sizes_are_rounded_before_their_unit_is_chosen(n: int, text: str, rate: str) -> None:
    from ckptlake.units import format_bytes, format_rate

    assert (format_bytes(n), format_rate(n)) == (text, rate)


def test_a_time_read_with_an_offset_is_written_in_utc(tmp_path: Path) -> None:
    from ckptlake.format import layout

    root = _pushed(tmp_path, (), ())
    for n in (1, 2):
        key = root / layout.version_key("x/a", n)
        doc = json.loads(key.read_bytes())
        doc["created"] = "2026-12-07T23:42:13.5+01:00"
        key.write_text(json.dumps(doc))
    for f in (root / "artifacts/x/a/@s").iterdir():
        f.unlink()  # the listing summaries, so the manifests are read
    want = "2026-12-07T22:42:13.500000Z"
    for args in (("ls", "x/a", "--json"), ("show", "x/a@v1", "--json"),
                 ("lineage", "x/a@v1", "--json")):
        out = _cli(root, *args).stdout
        assert want in out and "+01:00" not in out, (args, out)
    _cli(root, "cp", "x/a@v2", "--as", "y/b")
    copied = json.loads((root / layout.version_key("y/b", 1)).read_bytes())
    assert copied["provenance"]["copied_from"]["created"] == want
    _cli(root, "rm", "x/a@v1", "--yes")
    tomb = json.loads((root / layout.tombstone_key("x/a", 1)).read_bytes())
    assert tomb["created"] == want


def test_long_lists_in_one_line_messages_are_bounded(tmp_path: Path) -> None:
    """1,050 aliases made `rm`'s refusal a 12 KB line; 2,000 ranks were listed one by one."""
    from ckptlake.cli.rm import _ranges
    from ckptlake.errors import PolicyRefusal
    from ckptlake.lake import Lake
    from ckptlake.store.memory import MemoryStore

    assert _ranges([5, 0, 1, 2, 7, 8, 3]) == "0-3, 5, 7-8"
    assert _ranges(range(2000)) == "0-1999" and _ranges([]) == ""
    lake = Lake(MemoryStore())
    src = tmp_path / "s"
    src.mkdir()
    (src / "a").write_text("a")
    lake.push(src, "x/a", aliases=[f"al{i:02d}" for i in range(25)])
    with pytest.raises(PolicyRefusal) as err:
        lake.delete("x/a@v1")
    text = str(err.value)
    assert "al00, al01" in text and "al09 and 15 more" in text and "al24" not in text, text


# ---- the review of the fixes above -------------------------------------------------------------

def test_a_time_past_utcs_range_is_malformed_not_an_internal_error(tmp_path: Path) -> None:
    from ckptlake.format import layout
    from ckptlake.format.times import parse_time

    for text in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"):
        with pytest.raises(ValueError, match="out of range"):
            parse_time(text)
    root = _pushed(tmp_path, ())
    key = root / layout.version_key("x/a", 1)
    doc = json.loads(key.read_bytes())
    doc["created"] = "9999-12-31T23:00:00-05:00"
    key.write_text(json.dumps(doc))
    for f in (root / "artifacts/x/a/@s").iterdir():
        f.unlink()
    for args in (("show", "x/a@v1", "--json"), ("lineage", "x/a@v1", "--json")):
        r = _cli(root, *args, code=5)
        assert "InternalError" not in r.stdout, r.stdout


def test_lineage_says_when_a_version_was_deleted_in_utc(tmp_path: Path) -> None:
    from ckptlake.format import layout

    root = _pushed(tmp_path, (), ())
    _cli(root, "rm", "x/a@v1", "--yes")
    key = root / layout.tombstone_key("x/a", 1)
    tomb = json.loads(key.read_bytes())
    tomb["deleted"] = "2026-12-08T01:00:00.5+02:00"
    key.write_text(json.dumps(tomb))
    node = _strict(_cli(root, "lineage", "x/a@v1", "--json").stdout)["nodes"][0]
    assert node["deleted"] == "2026-12-07T23:00:00.500000Z"
    assert "expired 2026-12-07" in _cli(root, "lineage", "x/a@v1").stdout
    assert "expired 2026-12-07" in _cli(root, "ls", "x/a", "--all").stdout


def test_exponent_hint_only_where_yaml_read_text(tmp_path: Path) -> None:
    from ckptlake.policy.config import describe_value

    for text in ("1e-2", "1e3", "1.0e308", "1E5"):
        assert "write a plain number such as 0.01 or 1000" in describe_value(text), text
    for text in ("e5", ".e1", "1.5e+3", "abc", "10"):
        assert describe_value(text) == repr(text), text


@pytest.mark.parametrize("n, rate", [(1023.4, "1023 B/s"), (1023.6, "1.00 KiB/s"),
                                     (-1048575, "-1.00 MiB/s"), (-5, "-5 B/s")])
def test_rates_round_before_their_unit_too(n: float, rate: str) -> None:
    from ckptlake.units import format_rate

    assert format_rate(n) == rate


def _a_version_stamped(tmp_path: Path, created: str) -> tuple[Path, Path, Path]:
    """A lake of x/a@v1..v3 whose v1 manifest says `created`; its manifest; a policy that
    keeps what is younger than 7 days, with no grace."""
    from ckptlake.format import layout

    root = _pushed(tmp_path, (), (), ())
    key = root / layout.version_key("x/a", 1)
    doc = json.loads(key.read_bytes())
    doc["created"] = created
    key.write_text(json.dumps(doc))
    policy = tmp_path / "p.yaml"
    policy.write_text("retention:\n  grace_period: 0s\n  rules:\n    - match: '*'\n"
                      "      keep_within: 7d\n")
    return root, key, policy


def test_gc_keeps_a_version_whose_time_it_cannot_read(tmp_path: Path) -> None:
    """gc took an unreadable `created` for "as old as can be": keep_within deleted a version
    stamped past UTC's range as 20,794 days old."""
    root, key, policy = _a_version_stamped(tmp_path, "9999-12-31T23:00:00-05:00")
    plan = _strict(_cli(root, "gc", "--dry-run", "--json", "--config", str(policy)).stdout)
    assert "x/a@v1" not in json.dumps(plan.get("versions_to_delete", plan)), plan
    _cli(root, "gc", "--yes", "--config", str(policy))
    assert key.exists()


def test_gc_and_du_say_a_time_they_cannot_read_is_unknown(tmp_path: Path) -> None:
    """gc kept such a version, but its plan and du showed the time they ran (age 0), and a
    tombstone recorded it as when the version was made."""
    root, _, policy = _a_version_stamped(tmp_path, "not a time")
    plan = _strict(_cli(root, "gc", "--dry-run", "--json", "--config", str(policy)).stdout)
    rows = [v for a in plan["plan"]["artifacts"] for v in a["kept"] + a["delete"]
            if v["version"] == 1]
    assert rows and rows[0]["created"] is None and rows[0]["age_seconds"] is None, rows
    du = _strict(_cli(root, "du", "x/a", "--versions", "--json").stdout)
    v1 = [v for a in du["artifacts"] for v in a["versions"] if v["version"] == 1]
    assert v1 and v1[0]["created"] is None, du
