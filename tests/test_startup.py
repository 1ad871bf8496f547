"""Start-up stays light (issue 13, item 4): what each way into the CLI imports, checked in a
fresh interpreter (sys.modules), never by the clock.

Every command pays its imports before its first request, so the expensive ones are kept off the
paths that do not need them: Typer and the command tree off the shell completion path; pydantic
(Typer's value coercion) off every path; botocore off local lakes; PyYAML unless a config file
is read; rich's live display unless stderr is a terminal; and the other commands' modules (and
the engine's push or pull half) off each command.  The numbers are in docs/benchmarks.md
(bench/startup_bench.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import typer

from ckptlake.cli import app as app_module

# Heavy, and needed by no local-lake command run outside a terminal.
HEAVY = ("pydantic", "boto3", "botocore", "urllib3", "yaml", "rich.progress", "rich.console",
         "rich.live")
COMMAND_MODULES = tuple(f"ckptlake.cli.{name}" for name in app_module.COMMANDS)

# Runs a command line through the console script's entry point in a fresh interpreter and
# prints {"code": exit code, "modules": [the modules of interest that got imported]}.
_PROBE = r"""
import json, os, sys
WATCH = json.loads(sys.argv[1])
real_exit = os._exit

def report(code):
    sys.stdout.flush()  # `cat` ends without a newline: the report gets a line of its own
    print("\n" + json.dumps({"code": code,
                             "modules": sorted(m for m in WATCH if m in sys.modules)}),
          file=sys.__stdout__, flush=True)

def _exit(code):  # `__complete` leaves with os._exit
    report(code)
    real_exit(code)

os._exit = _exit
sys.argv = ["ckptlake", *sys.argv[2:]]
from ckptlake.cli.main import main
try:
    main()
except SystemExit as exc:
    report(exc.code)
"""


def probe(args: list[str], watch: tuple[str, ...], *, cwd: Path,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(watch), *args],
                       capture_output=True, text=True, errors="replace", cwd=cwd,
                       stdin=subprocess.DEVNULL,
                       env={**os.environ, **(env or {})}, timeout=120)
    lines = [line for line in r.stdout.splitlines() if line.startswith('{"code"')]
    assert lines, f"no report; stdout={r.stdout!r} stderr={r.stderr!r}"
    return json.loads(lines[-1]) | {"stderr": r.stderr}


def imported_by(code: str, watch: tuple[str, ...]) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}\n"
         f"print(json.dumps(sorted(m for m in {list(watch)!r} if m in sys.modules)))"],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.fixture
def small_lake(tmp_path: Path) -> str:
    """A local lake holding demo/one@v1: one 1 KiB file."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_text(os.urandom(512).hex())
    url = "file://" + (tmp_path / "lake").as_posix()
    import ckptlake

    lake = ckptlake.open(url)
    try:
        lake.push(src, "demo/one")
    finally:
        lake.close()
    return url


# ---- the ways in, and what they import ---------------------------------------------------------

def test_entry_point_imports_no_typer() -> None:
    """The console script's module decides between `__complete` and the app before importing
    either."""
    assert imported_by("import ckptlake.cli.main",
                       ("typer", "rich", "ckptlake.cli.app", "ckptlake.lake", *HEAVY)) == []


def test_building_the_app_imports_no_command_and_no_pydantic() -> None:
    loaded = imported_by("import ckptlake.cli.app\nimport typer.main\n"
                         "typer.main.get_command(ckptlake.cli.app.app)",
                         ("ckptlake.lake", "rich", *HEAVY, *COMMAND_MODULES))
    assert loaded == []


def test_help_builds_every_command_without_pydantic(tmp_path: Path) -> None:
    got = probe(["--help"], ("pydantic", "boto3", "botocore", "yaml", "blake3", *COMMAND_MODULES),
                cwd=tmp_path, env={"COLUMNS": "100"})
    assert got["code"] == 0, got["stderr"]
    assert got["modules"] == sorted(COMMAND_MODULES)  # the help lists them all


@pytest.mark.parametrize("args,needs", [
    (["pull", "demo/one", "DEST"], ("blake3", "ckptlake.cli.pull", "ckptlake.core.pull")),
    (["pull", "demo/one", "DEST", "--concurrency", "2", "--include", "*.bin"],
     ("blake3", "ckptlake.cli.pull", "ckptlake.core.pull")),
    (["ls"], ("ckptlake.cli.ls",)),
    (["ls", "demo/one"], ("ckptlake.cli.ls",)),
    (["cat", "demo/one", "one.bin"], ("blake3", "ckptlake.cli.cat")),
    (["push", "SRC", "demo/two", "--step", "3", "--metric", "loss=1.5"],
     ("blake3", "ckptlake.cli.push", "ckptlake.core.push", "ckptlake.core.scan",
      "ckptlake.policy.retention")),  # the commit guard's grace period (core/gc_guard.py)
], ids=["pull", "pull-options", "ls", "ls-artifact", "cat", "push"])
def test_local_lake_command_imports(small_lake: str, tmp_path: Path, args: list[str],
                                    needs: tuple[str, ...]) -> None:
    """A local-lake command outside a terminal: its own module and the engine half it uses,
    nothing else (no botocore, no pydantic, no PyYAML without a config file, no rich bar;
    blake3, the hash of this new lake, only where bytes are hashed)."""
    args = [str(tmp_path / "dest") if a == "DEST" else str(tmp_path / "src") if a == "SRC"
            else a for a in args]
    watch = (*HEAVY, *COMMAND_MODULES, "ckptlake.core.push", "ckptlake.core.pull",
             "ckptlake.core.gc", "ckptlake.core.du", "ckptlake.core.scan", "blake3",
             # settings most commands never use: loaded when configured (or for gc / du)
             "ckptlake.policy.retention", "ckptlake.core.cache", "ckptlake.policy.replicas")
    got = probe([*args, "--lake", small_lake], watch, cwd=tmp_path)
    assert got["code"] == 0, got["stderr"]
    assert got["modules"] == sorted(needs)


def test_config_file_is_still_read(small_lake: str, tmp_path: Path) -> None:
    """PyYAML is imported when there is a config file, and its settings apply."""
    (tmp_path / "ckptlake.yaml").write_text(f"lake: {small_lake}\n")
    got = probe(["ls"], ("yaml",), cwd=tmp_path)
    assert got["code"] == 0, got["stderr"]
    assert got["modules"] == ["yaml"]
    assert small_lake in got["stderr"]


def test_shell_completion_imports_no_typer(small_lake: str, tmp_path: Path) -> None:
    got = probe(["__complete", "ref", "demo/", "--", "ckptlake", "pull", "--lake", small_lake,
                 "demo/"], ("typer", "rich", "blake3", *HEAVY, *COMMAND_MODULES), cwd=tmp_path)
    assert got["code"] == 0, got["stderr"]
    assert got["modules"] == []


def test_old_entry_point_still_works(tmp_path: Path) -> None:
    """Console scripts installed before the entry point moved call ckptlake.cli.app:main."""
    r = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['ckptlake', '--version']"
                        "\nfrom ckptlake.cli.app import main; main()"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ckptlake ")


def _push_one_kib(lake_url: str, tmp_path: Path) -> Path:
    """demo/one: a version of one 1 KiB file in the lake, pushed in process; its source dir."""
    import ckptlake

    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(os.urandom(1024))
    lake = ckptlake.open(lake_url)
    try:
        lake.push(src, "demo/one")
    finally:
        lake.close()
    return src


@pytest.mark.seaweedfs
def test_s3_pull_makes_one_botocore_client(s3_lake_url: str, tmp_path: Path) -> None:
    """An S3 pull creates one botocore session and one client (each costs ~0.05-0.1 s), never
    imports boto3, and makes no request it does not need before the first byte."""
    src = _push_one_kib(s3_lake_url, tmp_path)
    counting = (
        "import botocore.session\n"
        "counts = {'sessions': 0, 'clients': 0}\n"
        "_init, _create = botocore.session.Session.__init__, "
        "botocore.session.Session.create_client\n"
        "def init(self, *a, **k):\n"
        "    counts['sessions'] += 1\n"
        "    _init(self, *a, **k)\n"
        "calls = []\n"
        "def create(self, *a, **k):\n"
        "    counts['clients'] += 1\n"
        "    client = _create(self, *a, **k)\n"
        "    client.meta.events.register('before-call.s3', lambda model, **_: "
        "calls.append(model.name))\n"
        "    return client\n"
        "botocore.session.Session.__init__ = init\n"
        "botocore.session.Session.create_client = create\n"
        "import atexit\n"
        "atexit.register(lambda: print('COUNTS ' + json.dumps({**counts, 'calls': calls}), "
        "file=sys.__stdout__))\n")
    script = _PROBE.replace("from ckptlake.cli.main import main", counting +
                            "from ckptlake.cli.main import main")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(["boto3", "pydantic", "yaml"]),
                        "pull", "demo/one", str(tmp_path / "dest"), "--lake", s3_lake_url],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    report = json.loads(next(line for line in r.stdout.splitlines()
                             if line.startswith('{"code"')))
    assert report["code"] == 0, r.stderr
    assert report["modules"] == []
    counts = json.loads(next(line for line in r.stdout.splitlines()
                             if line.startswith("COUNTS "))[len("COUNTS "):])
    calls = counts.pop("calls")
    assert counts == {"sessions": 1, "clients": 1}
    # The version listing, its manifest, the chunk: no HEAD of the lake header (asked only when
    # the pull finds nothing), no HeadBucket (the egress estimate does not need the region).
    # the listing, the manifest, the chunk; then, before placing, whether the version still
    # exists (a version `rm` deleted meanwhile is not placed: its chunks are all still there).
    # The second listing: the summaries above @latest's version (a lost later version is said,
    # catalog.lost_above).
    assert calls == ["ListObjectsV2", "GetObject", "ListObjectsV2", "GetObject", "HeadObject"
                     ], calls
    assert (tmp_path / "dest" / "one.bin").read_bytes() == (src / "one.bin").read_bytes()



@pytest.mark.seaweedfs
def test_s3_pull_skips_awscrt_when_disabled(s3_lake_url: str, tmp_path: Path) -> None:
    """botocore imports awscrt (~30 ms) only to decide whether to sign with it; the suite runs
    with BOTO_DISABLE_CRT=true (conftest.py), so the answer is known without it."""
    pytest.importorskip("awscrt")  # installed by the [test] extra: otherwise nothing to skip
    _push_one_kib(s3_lake_url, tmp_path)
    got = probe(["pull", "demo/one", str(tmp_path / "dest"), "--lake", s3_lake_url],
                ("botocore.compat", "awscrt.auth", "_awscrt"), cwd=tmp_path,
                env={"BOTO_DISABLE_CRT": "true"})
    assert got["code"] == 0, got["stderr"]
    assert got["modules"] == ["botocore.compat"]


@pytest.mark.parametrize("disabled", [True, False], ids=["crt-disabled", "default"])
def test_botocore_decides_about_awscrt_as_before(disabled: bool) -> None:
    """Skipping botocore's awscrt import under BOTO_DISABLE_CRT=true changes nothing botocore
    decides: HAS_CRT is what botocore itself would set, and awscrt stays importable."""
    pytest.importorskip("awscrt")
    env = {k: v for k, v in os.environ.items() if k != "BOTO_DISABLE_CRT"}
    if disabled:
        env["BOTO_DISABLE_CRT"] = "true"
    code = ("import sys\n"
            "from ckptlake.store.s3 import _b\n"
            "_b()\n"
            "import botocore.compat\n"
            "before = '_awscrt' in sys.modules\n"
            "import awscrt.auth\n"
            "print(botocore.compat.HAS_CRT, before, awscrt.auth.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    has_crt, imported_before, name = r.stdout.split()
    assert has_crt == str(not disabled)
    assert imported_before == str(not disabled)
    assert name == "awscrt.auth"

# ---- the light value conversion gives what Typer's own gives -----------------------------------

SAMPLES = {
    str: ["x", "", "a b", "-", "ünï"],
    int: ["0", "1", "-1", "007", "12abc", "1.5", " 3", "+4", "1_000", "99999999999999999999",
          ""],
    float: ["0", "0.5", "1e3", "-2", "abc", "inf", "0.04", "5.", ".5", ""],
    Path: ["some/path", "", ".", "FILE", "DIR", "a//b/"],
}


def _samples(annotation: Any, tmp_path: Path) -> list[Any]:
    from typing import get_args, get_origin

    if get_origin(annotation) is list:
        items = _samples(get_args(annotation)[0], tmp_path)
        return [(), tuple(items[:1]), tuple(items[:3]), tuple(items)]
    out = SAMPLES.get(annotation, [])
    return [str(tmp_path / "file") if v == "FILE" else str(tmp_path) if v == "DIR" else v
            for v in out]


def _outcome(runtime: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        return "value", runtime.coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as exc:
        return "error", exc.format_message()


@pytest.mark.parametrize("name", app_module.COMMANDS)
def test_light_coercion_matches_typers(name: str, tmp_path: Path) -> None:
    if app_module._RuntimeParam is None:
        pytest.skip("this Typer has no coercion layer to bypass")
    from typer._coercion import build_runtime_param

    (tmp_path / "file").write_text("x")
    command = app_module.build_command(name)
    ctx = typer.Context(command, info_name=name)
    checked = 0
    for param in command.params:
        light = param.get_runtime_param()
        if param.type_descriptor.annotation is bool:
            continue  # flags: Typer converts no bool a flag already is
        assert isinstance(light, app_module._LightRuntimeParam), param.name
        typers = build_runtime_param(param.type_descriptor)
        for value in [None, *_samples(param.type_descriptor.annotation, tmp_path)]:
            if (param.multiple or param.nargs == -1) != isinstance(value, tuple) \
                    and value is not None:
                continue
            assert _outcome(light, value, param, ctx) == _outcome(typers, value, param, ctx), \
                (param.name, value)
            checked += 1
    assert checked > 0


# ---- requests before the first chunk -----------------------------------------------------------

def test_small_pull_does_not_ask_the_bucket_region(tmp_path: Path) -> None:
    """The egress estimate asks the bucket its region (a HeadBucket round trip) only when the
    answer can change the outcome: not for a pull that stays below the thresholds at any price,
    but still for `pull --estimate` and for a pull that could cross one."""
    from ckptlake.lake import Lake
    from ckptlake.policy.egress import EgressPolicy
    from ckptlake.store.memory import MemoryStore

    class FakeBucket(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.url = "s3://fake-bucket/lake"
            self.asked = 0

        def bucket_region(self) -> str:
            self.asked += 1
            return "us-east-1"

    store = FakeBucket()
    lake = Lake(store)
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(os.urandom(1024))
    lake.push(src, "demo/one")
    seen: list[Any] = []
    lake.pull("demo/one", tmp_path / "d1", egress=EgressPolicy(), on_estimate=seen.append)
    assert store.asked == 0
    assert seen[0].route == "unknown" and not seen[0].warn
    est = lake.estimate_pull("demo/one", tmp_path / "d2", egress=EgressPolicy())
    assert store.asked == 1 and est.lake_region == "us-east-1"
    pricey = EgressPolicy(price_per_gb={"same_region": 0.0, "inter_region": 1e9,
                                        "internet": 1e9}, warn_above_usd=1.0)
    seen.clear()
    lake.pull("demo/one", tmp_path / "d3", egress=pricey, on_estimate=seen.append)
    assert store.asked == 2
    assert seen[0].lake_region == "us-east-1" and seen[0].lake_region_origin == "bucket"


def test_botocore_loader_shortcuts_keep_other_services(moto_store: Any) -> None:
    """The shared botocore loader checks service names by directory and reads plain dicts
    (store/s3.py); clients of other services (STS, SSO: assume-role and SSO profiles make
    them) still load, and an unknown service is still refused."""
    import botocore.exceptions

    from ckptlake.store import s3

    loader = s3._b().loader
    assert isinstance(loader.file_loader, s3._PlainJSONFileLoader)
    assert {"s3", "sts", "sso", "sso-oidc"} <= set(loader.list_available_services("service-2"))
    assert "endpoints.json" not in loader.list_available_services("service-2")
    session = s3._botocore_session()
    assert session.create_client("sts").meta.service_model.service_name == "sts"
    with pytest.raises(botocore.exceptions.UnknownServiceError):
        session.create_client("no-such-service")
    model = loader.load_service_model("s3", "service-2")
    assert type(model) is dict and "GetObject" in model["operations"]


@pytest.mark.parametrize("name", app_module.COMMANDS)
def test_defaults_convert_without_pydantic(name: str) -> None:
    """Typer converts an option's default too when the option is not given: every default of
    every command must take the light path, or that command imports pydantic on every run."""
    if app_module._RuntimeParam is None:
        pytest.skip("this Typer has no coercion layer to bypass")
    command = app_module.build_command(name)
    ctx = typer.Context(command, info_name=name)
    for param in command.params:
        default = param.get_default(ctx)
        if default is None or isinstance(default, bool) or default in ((), []):
            continue
        value = app_module._light_value(param.type_descriptor.annotation,
                                        param.type_descriptor.parameter_info, default, param,
                                        ctx)
        assert value is not app_module._NO, (param.name, default)


def test_pull_from_no_lake_still_says_so(tmp_path: Path) -> None:
    """The lake check moved after the first NotFound: a pull from a location without a lake
    still says "no lake", and one of a missing artifact in a real lake still names it."""
    from typer.testing import CliRunner

    runner = CliRunner()
    nowhere = "file://" + (tmp_path / "nolake").as_posix()
    r = runner.invoke(app_module.app, ["pull", "demo/one", str(tmp_path / "d"), "--lake",
                                       nowhere])
    assert r.exit_code == 3 and "no lake at" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "nolake").exists()


def test_exit_skips_the_final_garbage_collections(tmp_path: Path) -> None:
    """The entry point freezes what is alive when the command is done: the interpreter's full
    collections at exit then skip it (0.05-0.1 s for an S3 command), and atexit still runs."""
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('FROZEN', gc.get_freeze_count() > 0))\n"
            "sys.argv = ['ckptlake', '--version']\n"
            "from ckptlake.cli.main import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [r.stdout.splitlines()[0], "FROZEN True"], r.stdout


_GC_PROBE = r"""
import gc, json, sys
sys.argv = ["ckptlake", *sys.argv[1:]]
import ckptlake.cli.output as output
seen = []
real = output.open_lake
def open_lake(*a, **k):
    seen.append(gc.isenabled())
    lake = real(*a, **k)
    seen.append(gc.isenabled())
    return lake
output.open_lake = open_lake
from ckptlake.cli.main import main
try:
    main()
except SystemExit as exc:
    print(json.dumps({"code": exc.code, "seen": seen, "after": gc.isenabled()}))
"""


@pytest.mark.parametrize("command", [["ls"], ["pull", "demo/one", "DEST"]])
def test_the_collector_is_off_for_start_up_and_back_on_for_the_work(
        small_lake: str, tmp_path: Path, command: list[str]) -> None:
    """The console script starts with the garbage collector off (no passes over the imports
    and the client's models) and open_lake turns it back on: a command's own work (watch runs
    for days) has its garbage collected as anywhere else."""
    args = [str(tmp_path / "dest") if a == "DEST" else a for a in command]
    r = subprocess.run([sys.executable, "-c", _GC_PROBE, *args, "--lake", small_lake],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    got = json.loads(r.stdout.splitlines()[-1])
    assert got == {"code": 0, "seen": [False, True], "after": True}, r.stderr
