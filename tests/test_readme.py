"""The README's examples, executed: every shell, Python and YAML block runs, in README order,
against one local lake, so the README cannot drift from the CLI.

* Shell blocks: each `ckptlake ...` line runs in-process (Typer's runner) and must exit 0 (0 or
  1 with `--exit-code`).  `# comments` and `\\` continuations are understood; of a pipeline only
  the ckptlake part runs (`| dot -Tsvg` needs Graphviz).  `$RANK`/`$WORLD_SIZE` are 0 and 1,
  `$SLURM_JOB_ID`/`$SLURM_RESTART_COUNT` 4711 and 0.
* Python blocks are executed; YAML blocks are loaded as ckptlake.yaml (and checked as a policy).
* A block preceded by `<!-- not-run: REASON -->` is skipped (S3, training-loop sketches, the
  set-up scripts); `<!-- install: ... -->` blocks run in tests/test_install.py;
  `<!-- file: NAME -->` writes the block to NAME in the working directory first.
* What the README presumes exists (a chunk cache; `base/model`, `gpt2/ckpt` and
  `gpt2/run-7/ckpt` with 3 versions each, a `gpt2-small/base`, 7
  checkpoints of `gpt2-small/run-7/ckpt`, the directories it pushes) is made by the fixture
  below.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

README = Path(__file__).parent.parent / "README.md"
_MARKER = re.compile(r"^<!-- (not-run|install|file): *(.*?) *-->$")


@dataclass
class Block:
    line: int  # of the opening fence
    info: str
    text: str
    marker: str | None = None  # "not-run", "install", "file"
    argument: str = ""


def blocks(text: str) -> list[Block]:
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            info, start = lines[i][3:].strip(), i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            block = Block(line=start + 1, info=info, text="\n".join(lines[i + 1:end]) + "\n")
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            if m := _MARKER.match(before.strip()):
                block.marker, block.argument = m.group(1), m.group(2)
            out.append(block)
            i = end + 1
        else:
            i += 1
    return out


def commands(text: str) -> list[list[str]]:
    """The ckptlake command lines of a shell block, as argv lists."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" | ", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        argv = shlex.split(os.path.expandvars(line), comments=True)
        if argv:
            out.append(argv)
    return out


def test_every_example_block_runs_or_says_why_not() -> None:
    found = blocks(README.read_text())
    assert len(found) >= 15
    for b in found:
        assert b.info in ("", "sh", "python", "yaml"), f"README.md:{b.line}: {b.info!r}"
        if b.marker == "not-run":
            assert b.argument, f"README.md:{b.line}: a not-run block must say why"
        if b.info in ("", "sh") and b.marker is None:
            for argv in commands(b.text):
                assert argv[0] == "ckptlake", f"README.md:{b.line}: {argv}"
    assert sum(b.marker == "install" for b in found) == 1


# ---- the world the README presumes ---------------------------------------------------------

def safetensors(path: Path, tensors: dict[str, list[float]]) -> None:
    """A minimal .safetensors file of float32 vectors (the format: u64 header length, JSON
    header, data), so that `diff` has tensors to compare."""
    header: dict[str, Any] = {}
    data = b""
    for name, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)],
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def model(path: Path, scale: float) -> None:
    """A small checkpoint: weights, a config, a tokenizer and optimizer state."""
    safetensors(path / "model.safetensors",
                {"embed": [scale * i for i in range(64)], "head": [1.0] * 16})
    (path / "config.json").write_text('{"n_layer": 12}\n')
    (path / "tokenizer").mkdir(exist_ok=True)
    (path / "tokenizer" / "vocab.json").write_text('{"a": 1}\n')
    (path / "optimizer").mkdir(exist_ok=True)
    (path / "optimizer" / "state.bin").write_bytes(os.urandom(2048))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    lake = tmp_path / "lake"
    monkeypatch.chdir(work)
    monkeypatch.setenv("CKPTLAKE_LAKE", lake.as_uri())
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.setenv("CKPTLAKE_CACHE", str(tmp_path / "cache"))  # `cache ls` needs one
    for step, scale in (("step_2000", 1.0), ("step_100", 1.5), ("step_300", 1.25)):
        model(work / "ckpt" / step, scale)
        (work / "ckpt" / step / "optimizer.bin").write_bytes(os.urandom(4096))
    model(work / "dist" / "model", 0.5)
    (work / "dist" / "model" / "config.json").write_text('{"n_layer": 12}\n')
    model(work / "out" / "model", 0.75)
    (work / "eval").mkdir()
    (work / "eval" / "results.json").write_text('{"hellaswag": 0.61}\n')
    (work / "params.yaml").write_text("lr: 3.0e-4\noptimizer: {name: adamw, beta1: 0.9}\n")
    setup = tmp_path / "setup"
    for version, scale in enumerate((2.0, 2.5, 3.0), start=1):
        model(setup / f"base{version}", scale)
        ok(["push", str(setup / f"base{version}"), "base/model", "--quiet"])
    ok(["push", str(setup / "base3"), "gpt2-small/base", "--quiet"])
    for version in (1, 2):  # an abandoned run, for `rm ARTIFACT --all`
        ok(["push", str(setup / f"base{version}"), "gpt2-small/run-3/ckpt", "--quiet"])
    for version in range(1, 4):  # 3 versions of two more checkpoints
        model(setup / f"gpt2-{version}", 6.0 + version)
        ok(["push", str(setup / f"gpt2-{version}"), "gpt2/ckpt", "--quiet"])
        ok(["push", str(setup / f"gpt2-{version}"), "gpt2/run-7/ckpt", "--quiet",
            "--metric", f"val_loss={3.0 - version / 10:g}"])
    # a run in progress: v1..v7 of its checkpoints, so the README's first push makes v8
    for version in range(1, 8):
        model(setup / f"run{version}", 4.0 + version)
        ok(["push", str(setup / f"run{version}"), "gpt2-small/run-7/ckpt", "--quiet",
            "--step", str(250 * version), "--metric", f"val_loss={3.0 - version / 10:g}"])
    return work


def ok(argv: list[str], where: str = "") -> Any:
    r = CliRunner().invoke(_app(), argv, catch_exceptions=False)
    allowed = (0, 1) if "--exit-code" in argv else (0,)
    assert r.exit_code in allowed, f"{where} ckptlake {shlex.join(argv)} -> exit " \
                                   f"{r.exit_code}\n{r.stdout}{r.stderr}"
    return r


def _app() -> Any:
    from ckptlake.cli.app import app

    return app


def run_yaml(block: Block, work: Path) -> None:
    from ckptlake.policy.config import load_config
    from ckptlake.policy.egress import load_egress
    from ckptlake.policy.retention import load_retention

    path = work / (block.argument if block.marker == "file" else "block.yaml")
    path.write_text(block.text)
    config = load_config(str(path))
    load_retention(config)
    load_egress(config)


def test_the_readme_examples_run(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One lake for the whole README; each block in a fresh copy of the working directory
    (sections reuse names like ./restore for different things), plus the files that `file:`
    blocks wrote before it."""
    import shutil

    ran = 0
    for b in blocks(README.read_text()):
        if b.marker in ("not-run", "install"):
            continue
        where = f"README.md:{b.line}:"
        cwd = world.parent / f"block-{b.line}"
        shutil.copytree(world, cwd, symlinks=True)
        monkeypatch.chdir(cwd)
        if b.marker == "file":
            for d in (world, cwd):
                (d / b.argument).write_text(b.text)
        if b.info == "yaml":
            run_yaml(b, cwd)
        elif b.info == "python":
            exec(compile(b.text, f"README.md:{b.line}", "exec"), {"__name__": "readme"})
        else:
            for argv in commands(b.text):
                argv = [a.replace("/data/lake", str(world.parent / "lake")) for a in argv]
                ok(argv[1:], where)
        ran += 1
    assert ran >= 10
