"""What a new user's read of README.md found, held to: links that resolve, `cat --json`,
summaries that say each thing once and in the right number, and errors that say what to do."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import catalog
from ckptlake.errors import NotFound, UnsafeManifest
from ckptlake.format import layout
from test_readme import safetensors  # the same minimal writer

ROOT = Path(__file__).parent.parent
KiB, MiB = 1024, 1024 * 1024


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# ---- README links ------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercased, punctuation other than hyphens dropped (so
    also the backticks of inline code), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file (outside code blocks); a repeated heading's
    gets -1, -2, ... as on GitHub."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} +(.*?)[ #]*$", line)):
            anchor = github_anchor(m.group(1))
            n = seen.get(anchor, 0)
            seen[anchor] = n + 1
            out.add(anchor if n == 0 else f"{anchor}-{n}")
    return out


def test_every_relative_link_and_anchor_in_the_readme_resolves() -> None:
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) >= 10
    broken = []
    for link in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", link):
            continue  # https:, mailto:
        path, _, fragment = link.partition("#")
        target = ROOT / (path or "README.md")
        if not target.exists():
            broken.append(f"{link}: no file {path}")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {path or 'README.md'}")
    assert not broken, broken


def test_the_anchor_rule_is_githubs() -> None:
    assert github_anchor("Reading in place: `torch.load(lake.open(...))` vs pull-then-load "
                         "(issue 14)") == \
        "reading-in-place-torchloadlakeopen-vs-pull-then-load-issue-14"
    assert github_anchor("`ckptlake watch`: for trainers that only write files") == \
        "ckptlake-watch-for-trainers-that-only-write-files"


# ---- cat --json ---------------------------------------------------------------------------------

@pytest.fixture
def lake_url(tmp_path: Path) -> str:
    return (tmp_path / "lake").as_uri()


def test_cat_takes_json_and_still_writes_the_file(tmp_path: Path, lake_url: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"n_layer": 12}\n')
    assert run("push", src, "m/a", "--lake", lake_url, "-q").exit_code == 0
    for argv in (["cat", "m/a", "config.json", "--lake", lake_url, "--json"],
                 ["--json", "cat", "m/a", "config.json", "--lake", lake_url]):
        r = run(*argv)
        assert r.exit_code == 0, r.output
        assert r.stdout_bytes == b'{"n_layer": 12}\n'
    r = run("cat", "m/a", "nope.json", "--lake", lake_url, "--json")
    assert r.exit_code == 3
    doc = json.loads(r.stdout)
    assert doc["error"]["type"] == "NotFound" and doc["error"]["exit_code"] == 3
    assert r.stderr.startswith("ckptlake: error: ")  # the line, as every command says it


def test_cat_json_warnings_go_to_stderr_unless_quiet(tmp_path: Path, lake_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """cat --json has no document to hold a warning (stdout is the file): stderr, and
    nothing with -q."""
    from ckptlake.lake import Lake

    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    assert run("push", src, "m/w", "--lake", lake_url, "-q").exit_code == 0
    real_cat = Lake.cat

    def cat(self: Any, *a: Any, on_warning: Any = None, **kw: Any) -> Any:
        on_warning("replica eu cannot be read")
        return real_cat(self, *a, **kw)

    monkeypatch.setattr(Lake, "cat", cat)
    r = run("cat", "m/w", "f.txt", "--lake", lake_url, "--json")
    assert r.exit_code == 0 and "warning: replica eu cannot be read" in r.stderr
    r = run("cat", "m/w", "f.txt", "--lake", lake_url, "--json", "-q")
    assert r.exit_code == 0 and r.stderr == "" and r.stdout_bytes == b"x"


def test_cat_json_after_part_of_the_file_adds_no_document(tmp_path: Path) -> None:
    """A corrupt third chunk: stdout holds the first two, and nothing else (a document there
    would read as the file's last bytes); the error is the stderr line and exit 5."""
    url = (tmp_path / "lake").as_uri()
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(3 * MiB + MiB // 2)
    (src / "big.bin").write_bytes(data)
    with ckptlake.open(url, chunk_size=MiB) as lake:
        lake.push(src, "m/a")
        m = catalog.load_manifest(lake.store, "m/a", 1)
    chunk = tmp_path / "lake" / layout.chunk_key(m.files[0].chunks[2].digest)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 1
    chunk.write_bytes(bytes(raw))
    r = run("cat", "m/a", "big.bin", "--lake", url, "--json")
    assert r.exit_code == 5
    assert r.stdout_bytes == data[:2 * MiB]
    assert "corrupt" in r.stderr


# ---- push summary: "(as N)" and "stored N" only when they say something ------------------------

def _push_result(**kw: Any) -> Any:
    from ckptlake.results import PushResult

    base = dict(lake="file:///l", artifact="a/b", version=2, step=None, files=1,
                bytes_scanned=64 * MiB, bytes_uploaded=64 * MiB, bytes_deduplicated=0,
                chunks_uploaded=4, chunks_deduplicated=0, aliases=[], seconds=1.0,
                bytes_sent=64 * MiB, bytes_stored=64 * MiB)
    return PushResult(**{**base, **kw})


def test_push_summary_leaves_out_sizes_that_print_the_same() -> None:
    from ckptlake.cli.output import push_summary

    # a few frame-header bytes apart: both print as 64.0 MiB
    text = push_summary(_push_result(bytes_sent=64 * MiB + 40, bytes_stored=64 * MiB + 40))
    assert "64.0 MiB uploaded," in text and "(as " not in text and "stored" not in text, text
    text = push_summary(_push_result(bytes_sent=40 * MiB, bytes_stored=40 * MiB))
    assert "64.0 MiB uploaded (as 40.0 MiB)" in text and "stored 40.0 MiB (0.62 of logical)" \
        in text, text


# ---- plurals, and a hint that names tensors -----------------------------------------------------

@pytest.fixture
def one_tensor(tmp_path: Path, lake_url: str) -> str:
    """m/t with two versions of a model.safetensors holding one tensor, `embed`."""
    for version, scale in ((1, 1.0), (2, 2.0)):
        safetensors(tmp_path / f"v{version}" / "model.safetensors",
                    {"embed": [scale * i for i in range(16)]})
        assert run("push", tmp_path / f"v{version}", "m/t", "--lake", lake_url,
                   "-q").exit_code == 0
    return lake_url


def test_show_counts_one_tensor_in_the_singular(one_tensor: str) -> None:
    r = run("show", "m/t@v1", "--lake", one_tensor)
    assert r.exit_code == 0, r.output
    assert "model.safetensors  (1 tensor)" in r.stdout, r.stdout


def test_ls_counts_one_tensor_in_the_singular(one_tensor: str) -> None:
    r = run("ls", "m/t@v1", "--lake", one_tensor)
    assert r.exit_code == 0 and "safetensors (1 tensor)" in r.stdout, r.stdout


def test_gc_refusal_counts_one_version_in_the_singular(one_tensor: str, tmp_path: Path
                                                        ) -> None:
    policy = tmp_path / "keep1.yaml"
    policy.write_text("retention:\n  rules:\n    - match: '*'\n      keep_last: 1\n")
    r = run("gc", "--policy", str(policy), "--lake", one_tensor)
    assert r.exit_code == 7 and "gc would delete 1 version and sweep" in r.stderr, r.stderr


def test_diff_values_counts_one_changed_tensor_in_the_singular(one_tensor: str) -> None:
    pytest.importorskip("numpy")
    r = run("diff", "m/t@v1", "m/t@v2", "--values", "--lake", one_tensor)
    assert r.exit_code == 0, r.output
    assert re.search(r"values: fetched .* for 1 changed tensor$", r.stdout, re.M), r.stdout
    assert "of 1 chunk)" in r.stdout, r.stdout


def test_an_unknown_tensor_is_answered_with_names_the_version_holds(one_tensor: str) -> None:
    pytest.importorskip("numpy")
    with ckptlake.open(one_tensor) as lake:
        with pytest.raises(NotFound) as e:
            lake.tensors("m/t", ["lm_head.weight"])
    assert "it holds 1 tensor: embed" in str(e.value), str(e.value)
    assert "show" not in str(e.value)  # show counts tensors, it does not name them


# ---- pull: a symlink out of DEST is named, with what to do ---------------------------------------

def test_a_symlink_leading_out_of_dest_is_named_with_the_remedy(tmp_path: Path,
                                                                 lake_url: str) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("x")
    assert run("push", src, "m/a", "--lake", lake_url, "-q").exit_code == 0
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(outside, dest / "sub")
    with ckptlake.open(lake_url) as lake, pytest.raises(UnsafeManifest) as e:
        lake.pull("m/a", dest)
    message = str(e.value)
    assert f"through the symlink {dest / 'sub'}, which leads outside" in message, message
    assert "remove or move that symlink, or pull into an empty directory" in message
    r = run("pull", "m/a", dest, "--lake", lake_url)
    assert r.exit_code == 5 and "remove or move that symlink" in r.stderr
    assert os.listdir(outside) == []
