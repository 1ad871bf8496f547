"""Tests for the survivors of a mutation review of the 2026-12-07 (night) session's code: each
fails on the mutated code, which printed, hid or allowed what the test names."""
from __future__ import annotations

import errno
import json
import struct
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake import redact as redact_module
from ckptlake.cli.app import app
from ckptlake.redact import redact

KEY = "0123456789abcdefSECRET"


def _run(root: Path, *args: str, code: int | None = 0) -> Any:
    r = CliRunner().invoke(app, [*args, "--lake", str(root)])
    if code is not None:
        assert r.exit_code == code, r.output
    return r


def _safetensors(path: Path, names: list[str]) -> None:
    header: dict[str, Any] = {}
    for i, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [4], "data_offsets": [16 * i, 16 * (i + 1)]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(16 * len(names)))


def test_an_unclosed_kept_span_is_redacted() -> None:  # M04
    assert KEY not in redact(redact_module._KEEP_OPEN + f"token={KEY}")


def test_diff_escapes_a_tensor_name_that_drives_the_terminal(tmp_path: Path) -> None:  # M09
    src = tmp_path / "s"
    src.mkdir()
    _safetensors(src / "m.safetensors", ["w\x1b[31mRED"])
    root = tmp_path / "lake"
    _run(root, "push", str(src), "d/s")
    data = bytearray((src / "m.safetensors").read_bytes())
    data[-1] = 1
    (src / "m.safetensors").write_bytes(bytes(data))
    _run(root, "push", str(src), "d/s")
    out = _run(root, "diff", "d/s@v1", "d/s@v2").stdout
    assert "\x1b" not in out and "w\\x1b[31mRED" in out, out


def test_paths_in_errors_quoted_escaped_or_plain(tmp_path: Path) -> None:  # M13, M18
    src = tmp_path / "s"
    (src / "key=2026" / "a b").mkdir(parents=True)
    (src / "key=2026" / "a b" / "f").write_text("f")
    (src / "key=2026\tx").mkdir()
    (src / "key=2026\tx" / "g").write_text("g")
    root = tmp_path / "lake"
    _run(root, "push", str(src), "d/c")
    out = _run(root, "cat", "d/c@v1", "key=2026/a b", code=2).output
    assert out.rstrip().endswith("ls d/c@v1 'key=2026/a b')"), out
    out = _run(root, "cat", "d/c@v1", "key=2026\tx", code=2).output
    assert "key=***" not in out and "key=2026\\tx in d/c@v1 is a directory" in out, out


def test_diff_json_names_added_dirs_and_untracked_files_exactly(tmp_path: Path) -> None:
    src = tmp_path / "s"  # M15, M16
    src.mkdir()
    (src / "a.txt").write_text("a")
    root = tmp_path / "lake"
    _run(root, "push", str(src), "d/j")
    (src / "key=1").mkdir()
    (src / "sig=1.safetensors").write_bytes(b"not a safetensors file at all")
    _run(root, "push", str(src), "d/j")
    (src / "sig=1.safetensors").write_bytes(b"still not a safetensors file")
    _run(root, "push", str(src), "d/j")
    doc = json.loads(_run(root, "diff", "d/j@v1", "d/j@v2", "--json").stdout)
    assert doc["files"]["dirs_added"] == ["key=1"], doc["files"]
    doc = json.loads(_run(root, "diff", "d/j@v2", "d/j@v3", "--json").stdout)
    assert "sig=1.safetensors" in doc["tensors"]["untracked_files"], doc["tensors"]


def test_a_pull_blocked_by_a_directory_names_it_exactly(tmp_path: Path) -> None:  # M20
    src = tmp_path / "s"
    src.mkdir()
    (src / "token=x").write_text("file")
    root = tmp_path / "lake"
    _run(root, "push", str(src), "d/p")
    dest = tmp_path / "dest"
    (dest / "token=x").mkdir(parents=True)
    (dest / "token=x" / "keep").write_text("k")
    r = _run(root, "pull", "d/p@v1", str(dest), "--json", code=None)
    assert f"{dest}/token=x is a directory" in json.loads(r.stdout)["error"]["message"], r.stdout


def test_a_metric_delta_clips_upward_too(tmp_path: Path) -> None:  # M21
    src = tmp_path / "s"
    src.mkdir()
    root = tmp_path / "lake"
    for i, v in enumerate(("-1e308", "1e308")):
        (src / "a").write_text(str(i))
        _run(root, "push", str(src), "d/m", "--metric", f"loss={v}")
    doc = json.loads(_run(root, "diff", "d/m@v1", "d/m@v2", "--json").stdout)
    assert doc["metrics"]["changed"]["loss"]["delta"] == sys.float_info.max


def test_lineage_of_a_tombstone_with_a_damaged_time(tmp_path: Path) -> None:  # M22
    from ckptlake.format import layout

    src = tmp_path / "s"
    src.mkdir()
    root = tmp_path / "lake"
    for i in range(2):
        (src / "a").write_text(str(i))
        _run(root, "push", str(src), "d/t")
    _run(root, "rm", "d/t@v1", "--yes")
    key = root / layout.tombstone_key("d/t", 1)
    tomb = json.loads(key.read_bytes())
    tomb["created"] = "not-a-time"
    key.write_text(json.dumps(tomb))
    node = json.loads(_run(root, "lineage", "d/t@v1", "--json").stdout)["nodes"][0]
    assert node["status"] == "expired" and node["created"] is None


def test_describe_value_strips_before_it_explains() -> None:  # M28
    from ckptlake.policy.config import describe_value

    assert "text to YAML" in describe_value(" 1e-2 ")


def test_a_naive_time_is_written_as_utc_in_any_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.format.times import time_text  # M33

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert time_text(datetime(2026, 1, 1)) == "2026-01-01T00:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_full_snapshot_disk_for_a_directory_save(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ckptlake  # M38
    from ckptlake import checkpointer as ck_mod
    from ckptlake.errors import UsageError

    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x" * 1000)

    def full(*args: object, **kwargs: object) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck_mod, "_materialize", full)
    with ckptlake.open((tmp_path / "lake").as_uri()) as lake:
        with lake.checkpointer("d/ck", snapshot="copy", snapshot_dir=tmp_path / "snaps") as ck:
            with pytest.raises(UsageError, match="no space left for the checkpoint's snapshot"):
                ck.save(src)


@pytest.mark.parametrize("err, expected", [
    (errno.EROFS, "mounted read-only"), (errno.ELOOP, "leads back to itself")])
def test_a_read_only_or_looping_local_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           err: int, expected: str) -> None:  # M44, M46
    from ckptlake.store import local

    src = tmp_path / "s"
    src.mkdir()
    (src / "a").write_text("a")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(err, "refused")

    monkeypatch.setattr(local, "_write_all", refuse)
    r = _run(tmp_path / "lake", "push", str(src), "d/r", code=None)
    assert r.exit_code == (4 if err == errno.EROFS else 2) and expected in r.output, r.output


def test_root_blocker_names_a_loop_of_links(tmp_path: Path) -> None:  # M47
    from ckptlake.store.local import LocalStore

    (tmp_path / "loopy").symlink_to("loopy")
    blocker = LocalStore(tmp_path / "loopy" / "lake").root_blocker()
    assert blocker is not None and blocker[0].endswith("a loop of symbolic links"), blocker
    r = _run(tmp_path / "loopy" / "lake", "ls", code=2)
    assert "leads back to itself" in r.output, r.output


def test_an_access_denied_403_is_about_credentials_whatever_the_clock() -> None:  # M61
    from botocore.stub import Stubber

    from ckptlake.errors import AccessDenied
    from ckptlake.store.s3 import S3Store

    s = S3Store("bucket", "p", endpoint_url="http://127.0.0.1:9")
    try:
        with Stubber(s._client) as stub:
            date = format_datetime(datetime.now(timezone.utc) + timedelta(hours=2), True)
            stub.add_client_error("head_object", service_error_code="AccessDenied",
                                  http_status_code=403,
                                  response_meta={"HTTPHeaders": {"date": date}})
            with pytest.raises(AccessDenied) as info:
                s.stat("k")
        assert "clock" not in str(info.value) and "credentials" in str(info.value)
    finally:
        s.close()


@pytest.mark.parametrize("arg, shown", [
    ("key=2026/.", "key=2026 in d/w@v1 is a directory"),
    ("key=2026/sub/..", "key=2026 in d/w@v1 is a directory"),
    ("./key=2026/./part.txt/", "key=2026/part.txt in d/w@v1 is a file, not a directory"),
    ("key=2026//part.txt/", "key=2026/part.txt in d/w@v1 is a file, not a directory"),
    ("key=2026/./nope", "leads to 'key=2026/nope'")])
def test_a_path_written_with_dots_is_shown_as_it_is(tmp_path: Path, arg: str,
                                                    shown: str) -> None:
    """The path an argument names was kept as it is only when it equalled the argument as
    text: `key=2026/.` printed `key=*** ... ls d/w@v1 key=***` (and lost the `)`)."""
    src = tmp_path / "s"
    (src / "key=2026" / "sub").mkdir(parents=True)
    (src / "key=2026" / "part.txt").write_text("p")
    (src / "key=2026" / "sub" / "f").write_text("f")
    root = tmp_path / "lake"
    _run(root, "push", str(src), "d/w")
    out = _run(root, "cat", "d/w@v1", arg, code=None).output
    assert shown in out and "key=***" not in out, out
