"""First-hour mistakes with locations and sizes, each refused (exit 2) or not reported wrongly.

An --endpoint-url with a path (a bucket pasted onto it) or a fragment is a usage error, not a
lake "not found"; `gc --policy '~/x.yaml'` expands `~` as --config does; a bare
`--max-bandwidth 50` (rclone's --bwlimit means KiB/s) is refused; and the `--exclude /lake/`
that push asks for when the lake is inside SOURCE is not reported as matching nothing on the
first push, before the lake's directory exists.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.cli.output import parse_bandwidth
from ckptlake.errors import UsageError
from ckptlake.store import open_store


from test_cli import run, src  # noqa: F401  (src: a fixture)


# ---- --endpoint-url with a path --------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8333/bucket",
                                      "http://127.0.0.1:8333/bucket/lake",
                                      "https://s3.example.com:9000#x"])
def test_an_endpoint_holding_the_lakes_bucket_or_a_fragment_is_a_usage_error(
        endpoint: str) -> None:
    with pytest.raises(UsageError) as exc:
        open_store("s3://bucket/lake", endpoint_url=endpoint)
    assert "it names the server alone" in exc.value.message
    assert "http(s)://host[:port]" in (exc.value.hint or "")


def test_the_hint_names_the_server_and_where_the_bucket_goes() -> None:
    with pytest.raises(UsageError) as exc:
        open_store("s3://mybucket/lake", endpoint_url="http://127.0.0.1:8333/mybucket")
    assert "the lake's bucket 'mybucket'" in exc.value.message
    assert "http://127.0.0.1:8333," in exc.value.hint and "s3://mybucket/" in exc.value.hint


def test_an_endpoint_under_another_path_is_a_gateways_and_opens() -> None:
    """A server behind a reverse proxy may be served under a path: botocore prefixes it."""
    open_store("s3://bucket/lake", endpoint_url="http://127.0.0.1:8333/s3").close()


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8333", "http://127.0.0.1:8333/"])
def test_an_endpoint_without_a_path_still_opens(endpoint: str) -> None:
    open_store("s3://bucket/lake", endpoint_url=endpoint).close()


def test_an_endpoint_with_a_query_stays_a_usage_error() -> None:
    with pytest.raises(UsageError):
        open_store("s3://bucket/lake", endpoint_url="http://127.0.0.1:8333/?x=1")


def test_the_cli_refuses_an_endpoint_with_a_bucket_in_it(tmp_path: Path) -> None:
    r = run("ls", "--lake", "s3://mybucket/lake", "--endpoint-url", "http://127.0.0.1:1/mybucket")
    assert r.exit_code == 2, r.stderr
    assert "holds the lake's bucket" in r.stderr and "Traceback" not in r.stderr


def test_a_config_file_endpoint_with_a_path_is_refused_too(tmp_path: Path) -> None:
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text("lake: s3://mybucket/lake\nendpoint_url: http://127.0.0.1:1/mybucket\n")
    with pytest.raises(UsageError, match="holds the lake's bucket"):
        ckptlake.open(config=str(cfg))


# ---- gc --policy '~/...' ---------------------------------------------------------------------

def test_gc_policy_expands_the_home_directory(tmp_path: Path, src: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "ret.yaml").write_text('retention:\n  rules:\n    - match: "*"\n      keep_last: 1\n')
    monkeypatch.setenv("HOME", str(home))
    lake = (tmp_path / "lake").as_uri()
    assert run("push", src, "p/x", "--lake", lake, "--quiet").exit_code == 0
    r = run("gc", "--policy", "~/ret.yaml", "--lake", lake, "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "not found" not in r.stderr


# ---- --max-bandwidth with no unit ------------------------------------------------------------

@pytest.mark.parametrize("text", ["1", "50", "1023", " 50 "])
def test_a_bare_small_bandwidth_is_refused_with_a_unit_hint(text: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_bandwidth(text)
    assert "give a unit" in (exc.value.hint or "") and "KiB" in exc.value.hint


@pytest.mark.parametrize("text, expected", [("1024", 1024), ("1B", 1), ("50KiB", 50 << 10),
                                            ("50MiB", 50 << 20), ("64 MiB", 64 << 20),
                                            ("32MB", 32 * 10**6), ("16777216", 1 << 24)])
def test_documented_bandwidth_forms_still_work(text: str, expected: int) -> None:
    assert parse_bandwidth(text) == expected


def test_push_with_a_bare_bandwidth_exits_2(tmp_path: Path, src: Path) -> None:
    r = run("push", src, "p/x", "--lake", tmp_path / "lake", "--max-bandwidth", "50")
    assert r.exit_code == 2, r.stderr
    assert "give a unit" in r.stderr and not (tmp_path / "lake").exists()


# ---- --exclude /lake/ on the first push ------------------------------------------------------

def _self_push(src: Path, *extra: str) -> Any:
    return run("push", src, "proj/self", "--lake", src / "lake", "--exclude", "/lake/", *extra)


def test_the_suggested_exclude_is_not_said_to_match_nothing_on_the_first_push(src: Path) -> None:
    first = run("push", src, "proj/self", "--lake", src / "lake")
    assert first.exit_code == 2 and "--exclude /lake/" in first.stderr
    r = _self_push(src)
    assert r.exit_code == 0, r.stderr
    assert "matched nothing" not in r.stderr and (src / "lake").is_dir()


def test_the_library_and_watch_leave_the_lake_exclude_unsaid_too(src: Path) -> None:
    """The rule is scan's (the local lake is what it is told to avoid), so Lake.push and a
    watch of a directory holding the lake say it as the CLI does."""
    from ckptlake.watch import Watcher

    with ckptlake.open(f"file://{src / 'lake'}") as lake:
        r = lake.push(src, "proj/lib", exclude=["/lake/", "/nothing-here/"])
        assert [w for w in r.warnings if "matched nothing" in w] == [
            "--exclude '/nothing-here/' matched nothing"]
    root = src.parent / "runs"
    (root / "step_1").mkdir(parents=True)
    (root / "step_1" / "w.bin").write_bytes(b"w")
    events: list[Any] = []
    with ckptlake.open(f"file://{root / 'step_1' / 'lake'}") as lake:
        Watcher(lake, root, "proj/w", settle=0, exclude=("/lake/",),
                on_event=events.append).poll_once()
        assert [v.step for v in lake.versions("proj/w")] == [1]
    assert not any("matched nothing" in e.message for e in events), events


def test_dry_run_and_json_leave_the_lake_exclude_unsaid_too(src: Path) -> None:
    r = _self_push(src, "--dry-run")
    assert r.exit_code == 0 and "matched nothing" not in r.stderr
    r = _self_push(src, "--json")
    assert r.exit_code == 0, r.stderr
    assert not any("matched nothing" in w for w in json.loads(r.stdout)["warnings"])


def test_other_excludes_that_match_nothing_are_still_said(src: Path) -> None:
    r = _self_push(src, "--exclude", "*.nope")
    assert r.exit_code == 0, r.stderr
    assert "--exclude '*.nope' matched nothing" in r.stderr
    assert "'/lake/' matched nothing" not in r.stderr


def test_an_exclude_of_a_lake_outside_source_is_still_said(tmp_path: Path, src: Path) -> None:
    r = run("push", src, "p/x", "--lake", tmp_path / "lake", "--exclude", "/lake/")
    assert r.exit_code == 0, r.stderr
    assert "--exclude '/lake/' matched nothing" in r.stderr


# ---- a URL with one slash ----------------------------------------------------------------------

@pytest.mark.parametrize("given,meant", [("file:/tmp/lake", "file:///tmp/lake"),
                                         ("s3:/bucket/x", "s3://bucket/x"),
                                         ("S3:bucket/x", "s3://bucket/x")])
def test_a_url_with_one_slash_is_no_directory_named_after_its_scheme(
        tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch, given: str,
        meant: str) -> None:
    """Taken as a relative path, `--lake file:/tmp/lake` was a lake in ./file:/tmp/lake,
    created by the first push."""
    monkeypatch.chdir(tmp_path)
    r = run("push", src, "x/y", "--lake", given)
    assert r.exit_code == 2, r.output
    assert f"(write {meant} (./{given} for a directory" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    monkeypatch.setenv("CKPTLAKE_LAKE", given)
    r = run("ls")
    assert r.exit_code == 2 and "$CKPTLAKE_LAKE" in r.stderr, r.output
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text(f"lake: {given}\n")
    monkeypatch.delenv("CKPTLAKE_LAKE")
    r = run("ls", "--config", cfg)
    assert r.exit_code == 2 and "lake: in" in r.stderr, r.output


def test_a_directory_named_like_a_scheme_is_still_reachable(tmp_path: Path, src: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("push", src, "x/y", "--lake", "./file:/lake")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "file:" / "lake").is_dir()
    # a name that only looks like scheme:rest, of no object store, is a directory as before
    r = run("push", src, "x/y", "--lake", "data:2024/lake")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data:2024" / "lake").is_dir()


@pytest.mark.parametrize("value", ["50", "'50'", "1000"])
def test_the_config_files_max_bandwidth_takes_no_bare_small_number_either(
        tmp_path: Path, value: str) -> None:
    from ckptlake.errors import ConfigError
    from ckptlake.policy.config import load_config

    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text(f"max_bandwidth: {value}\n")
    with pytest.raises(ConfigError, match="bytes per second, surely not what was meant") as exc:
        load_config(str(cfg))
    assert "KiB" in (exc.value.hint or "")
    cfg.write_text("max_bandwidth: 50KiB\n")
    assert load_config(str(cfg)).max_bandwidth == 50 * 1024
    cfg.write_text("max_bandwidth: 1024\n")
    assert load_config(str(cfg)).max_bandwidth == 1024


@pytest.mark.parametrize("args", [["gc", "--dry-run", "--policy", "~nosuchuser-ckl/p.yaml"],
                                  ["ls", "--config", "~nosuchuser-ckl/c.yaml"],
                                  ["ls", "--lake", "~nosuchuser-ckl/lake"]])
def test_a_tilde_of_an_unknown_user_is_a_missing_path_not_an_internal_error(
        args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Path.expanduser raises RuntimeError for ~nosuchuser; a shell leaves it as written."""
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 3, r.output
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert "~nosuchuser-ckl/" in r.stderr
