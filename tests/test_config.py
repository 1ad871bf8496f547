"""Config file discovery, validation (with exact file/line/key in errors) and lake resolution."""
from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from ckptlake.errors import EXIT_NOT_FOUND, EXIT_USAGE, ConfigError, NotFound, UsageError
from ckptlake.policy.config import (
    KNOWN_KEYS,
    Config,
    check_chunk_size,
    check_concurrency,
    check_timeout,
    default_lake_dir,
    find_config,
    format_size,
    load_config,
    parse_seconds,
    parse_size,
    resolve_lake,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB, GiB = 2**20, 2**30


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake HOME and an empty cwd, so no test can see (or touch) the real user's files."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "CKPTLAKE_CONFIG", "CKPTLAKE_LAKE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(work)
    return tmp_path


def write(path: Path, text: str) -> Path:
    """Write `text` as is; an indented triple-quoted block starts on line 1 of the file."""
    if text.startswith("\n "):
        text = textwrap.dedent(text)[1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(str(write(tmp_path / "cfg" / "ckptlake.yaml", text)))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return info.value


# ------------------------------------------------------------------------------------------
# find_config


def test_no_config_anywhere_is_none_and_an_empty_config() -> None:
    assert find_config(None) is None
    assert load_config() == Config()


def test_xdg_default_under_home(isolated: Path) -> None:
    path = write(isolated / "home" / ".config" / "ckptlake" / "ckptlake.yaml", "lake: /x\n")
    assert find_config(None) == path


def test_xdg_config_home_overrides_home(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / "home" / ".config" / "ckptlake" / "ckptlake.yaml", "lake: /home-one\n")
    xdg = isolated / "xdg"
    path = write(xdg / "ckptlake" / "ckptlake.yaml", "lake: /xdg-one\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert find_config(None) == path
    assert load_config().lake == "/xdg-one"


def test_relative_xdg_config_home_is_ignored(isolated: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(isolated / "home" / ".config" / "ckptlake" / "ckptlake.yaml", "lake: /x\n")
    write(isolated / "work" / "rel" / "ckptlake" / "ckptlake.yaml", "lake: /rel\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", "rel")
    assert find_config(None) == path


def test_cwd_beats_xdg(isolated: Path) -> None:
    write(isolated / "home" / ".config" / "ckptlake" / "ckptlake.yaml", "lake: /xdg\n")
    path = write(isolated / "work" / "ckptlake.yaml", "lake: /cwd\n")
    assert find_config(None) == path
    assert load_config().lake == "/cwd"


def test_cwd_directory_named_like_the_file_is_skipped(isolated: Path) -> None:
    (isolated / "work" / "ckptlake.yaml").mkdir()
    assert find_config(None) is None


def test_env_beats_cwd(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / "work" / "ckptlake.yaml", "lake: /cwd\n")
    env = write(isolated / "env.yaml", "lake: /env\n")
    monkeypatch.setenv("CKPTLAKE_CONFIG", str(env))
    assert find_config(None) == env
    assert load_config().lake == "/env"


def test_explicit_beats_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKPTLAKE_CONFIG", str(write(isolated / "env.yaml", "lake: /env\n")))
    explicit = write(isolated / "explicit.yaml", "lake: /explicit\n")
    assert find_config(str(explicit)) == explicit
    assert load_config(str(explicit)).lake == "/explicit"


def test_explicit_relative_path_is_from_cwd(isolated: Path) -> None:
    path = write(isolated / "work" / "sub" / "c.yaml", "lake: /x\n")
    assert find_config("sub/c.yaml") == path
    assert Path(load_config("sub/c.yaml").source or "").is_absolute()


def test_explicit_tilde_is_expanded(isolated: Path) -> None:
    path = write(isolated / "home" / "c.yaml", "lake: /x\n")
    assert find_config("~/c.yaml") == path


def test_explicit_missing_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even with a perfectly good fallback around, a named file that is missing is an error.
    write(isolated / "work" / "ckptlake.yaml", "lake: /cwd\n")
    with pytest.raises(NotFound, match="config file not found: nope.yaml") as info:
        load_config("nope.yaml")
    assert info.value.exit_code == EXIT_NOT_FOUND  # a missing local path, as for --policy
    assert "--config" in str(info.value)


def test_explicit_directory_is_not_a_config(isolated: Path) -> None:
    with pytest.raises(UsageError, match="config file not found.*is a directory"):
        find_config(str(isolated))


def test_env_missing_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / "work" / "ckptlake.yaml", "lake: /cwd\n")
    monkeypatch.setenv("CKPTLAKE_CONFIG", str(isolated / "gone.yaml"))
    with pytest.raises(NotFound, match=r"config file not found.*\$CKPTLAKE_CONFIG"):
        find_config(None)


def test_empty_env_is_unset(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(isolated / "work" / "ckptlake.yaml", "lake: /cwd\n")
    monkeypatch.setenv("CKPTLAKE_CONFIG", "")
    assert find_config(None) == path


# ------------------------------------------------------------------------------------------
# Valid files


def test_full_config_and_lines(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
        # comment
        lake: s3://bucket/prefix
        endpoint_url: http://localhost:9000
        profile: dev
        region: eu-west-1
        chunk_size: 64 MiB
        concurrency: 32

        retention:
          grace_period: 24h
          rules:
            - match: "a/*"
              keep_last: 5
              keep_best: {metric: loss, count: 2}
            - match: b
              keep_all: true
        egress:
          warn_above_usd: 1.5
    """)
    assert config.source == str(tmp_path / "cfg" / "ckptlake.yaml")
    assert (config.lake, config.endpoint_url, config.profile, config.region) == (
        "s3://bucket/prefix", "http://localhost:9000", "dev", "eu-west-1")
    assert config.chunk_size == 64 * MiB
    assert config.concurrency == 32
    assert config.retention == {
        "grace_period": "24h",
        "rules": [{"match": "a/*", "keep_last": 5, "keep_best": {"metric": "loss", "count": 2}},
                  {"match": "b", "keep_all": True}],
    }
    assert config.egress == {"warn_above_usd": 1.5}
    assert config.lines == {
        "lake": 2, "endpoint_url": 3, "profile": 4, "region": 5, "chunk_size": 6,
        "concurrency": 7, "retention": 9, "retention.grace_period": 10,
        "retention.rules": 11, "retention.rules[0]": 12, "retention.rules[0].match": 12,
        "retention.rules[0].keep_last": 13, "retention.rules[0].keep_best": 14,
        "retention.rules[0].keep_best.metric": 14, "retention.rules[0].keep_best.count": 14,
        "retention.rules[1]": 15, "retention.rules[1].match": 15,
        "retention.rules[1].keep_all": 16, "egress": 17, "egress.warn_above_usd": 18,
    }


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "---\n...\n",
                                  "null\n", "~\n"])
def test_empty_file_is_empty_config(tmp_path: Path, text: str) -> None:
    config = load_text(tmp_path, text)
    assert config == Config(source=str(tmp_path / "cfg" / "ckptlake.yaml"))


def test_null_values_mean_unset(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
        endpoint_url:
        profile: ~
        region: null
        chunk_size:
        concurrency:
        retention:
        egress:
    """)
    assert config.endpoint_url is config.profile is config.region is None
    assert config.chunk_size is config.concurrency is None
    assert config.retention is config.egress is None
    assert config.lines["egress"] == 7


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbflake: /x\n")
    assert load_config(str(path)).lake == "/x"


def test_merge_keys_and_aliases(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
        retention:
          rules:
            - &base
              match: a
              keep_last: 3
            - <<: *base
              match: b
    """)
    assert config.retention == {"rules": [{"match": "a", "keep_last": 3},
                                          {"match": "b", "keep_last": 3}]}
    assert config.lines["retention.rules[1].match"] == 7
    assert config.lines["retention.rules[1].keep_last"] == 5  # where the value is written


def test_alias_bomb_is_cheap(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):  # 10**12 leaves if expanded naively
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    body = "\n".join("  " + line for line in levels)
    start = time.monotonic()
    config = load_text(tmp_path, "retention:\n" + body + "\n")
    assert time.monotonic() - start < 2
    assert config.retention is not None and len(config.retention) == 12
    assert config.line_of("retention.a11[3][2]") == config.lines["retention.a11[3]"] == 12


def test_line_of_falls_back_to_parent() -> None:
    config = Config(lines={"retention": 3, "retention.rules[0]": 5})
    assert config.line_of("retention.rules[0].keep_last") == 5
    assert config.line_of("retention.other") == 3
    assert config.line_of("egress.x") is None
    assert config.line_of("retention") == 3


# ------------------------------------------------------------------------------------------
# Errors: each names the file, the exact line and the key


@pytest.mark.parametrize(("text", "line", "key", "message"), [
    ("lake: /x\nconcurrency: eight\n", 2, "concurrency", "must be an integer, got 'eight'"),
    ("concurrency: '8'\n", 1, "concurrency", "must be an integer, got '8'"),
    ("concurrency: 8.0\n", 1, "concurrency", "must be an integer, got 8.0"),
    ("concurrency: true\n", 1, "concurrency", "must be an integer, got true"),
    ("concurrency: [8]\n", 1, "concurrency", "must be an integer, got a list"),
    ("\n\nconcurrency: 0\n", 3, "concurrency", "must be between 1 and 256, got 0"),
    ("concurrency: 257\n", 1, "concurrency", "must be between 1 and 256, got 257"),
    ("concurrency: -1\n", 1, "concurrency", "must be between 1 and 256, got -1"),
    ("concurrency:\n  eight\n", 2, "concurrency", "must be an integer"),  # the value's line
    ("chunk_size: 512KiB\n", 1, "chunk_size", "between 1MiB and 1GiB, got 512KiB"),
    ("chunk_size: 2GiB\n", 1, "chunk_size", "between 1MiB and 1GiB, got 2GiB"),
    ("chunk_size: 1048575\n", 1, "chunk_size", "got 1048575 bytes"),
    ("chunk_size: 16M\n", 1, "chunk_size", "unknown size unit"),
    ("chunk_size: lots\n", 1, "chunk_size", "not a size: 'lots'"),
    ("chunk_size: 1.5e+7\n", 1, "chunk_size", "must be a size in bytes or a string like 16MiB"),
    ("chunk_size: 16777216.0\n", 1, "chunk_size", "got 16777216.0"),
    ("chunk_size: 1.5e7\n", 1, "chunk_size", "not a size: '1.5e7'"),  # YAML 1.1: a string
    ("chunk_size: true\n", 1, "chunk_size", "got true"),
    ("part_size: 4MiB\n", 1, "part_size", "between 5MiB and 1GiB, got 4MiB"),
    ("part_size: 16M\n", 1, "part_size", "unknown size unit"),
    ("multipart_threshold: 6GiB\n", 1, "multipart_threshold", "between 5MiB and 5GiB, got 6GiB"),
    ("multipart_threshold: [1]\n", 1, "multipart_threshold", "must be a size in bytes"),
    ("lake: /x\nread_timeout: 0\n", 2, "read_timeout",
     "must be more than 0 and at most 3600 seconds, got 0"),
    ("read_timeout: -5\n", 1, "read_timeout", "got -5"),
    ("read_timeout: 2h\n", 1, "read_timeout", "not a number of seconds: '2h'"),
    ("read_timeout: 61m\n", 1, "read_timeout", "at most 3600 seconds, got 3660"),
    ("read_timeout: soon\n", 1, "read_timeout", "not a number of seconds: 'soon'"),
    ("read_timeout: true\n", 1, "read_timeout",
     "must be a number of seconds or a string like 90s, got true"),
    ("read_timeout: .inf\n", 1, "read_timeout", "got inf"),
    ("read_timeout: .nan\n", 1, "read_timeout", "got nan"),
    ("read_timeout: [60]\n", 1, "read_timeout", "got a list"),
    ("\nconnect_timeout: 0s\n", 2, "connect_timeout", "must be more than 0"),
    ("connect_timeout: {s: 1}\n", 1, "connect_timeout", "got a mapping"),
    ("lake: ''\n", 1, "lake", "must be a non-empty string, got ''"),
    ("lake: '   '\n", 1, "lake", "must be a non-empty string"),
    ("lake:\n", 1, "lake", "must be a non-empty string, got null"),
    ("lake: 42\n", 1, "lake", "must be a non-empty string, got 42"),
    ("lake: {bucket: x}\n", 1, "lake", "must be a non-empty string, got a mapping"),
    ("profile: 7\n", 1, "profile", "must be a non-empty string, got 7"),
    ("region: ''\n", 1, "region", "must be a non-empty string"),
    ("endpoint_url: localhost:9000\n", 1, "endpoint_url", "must be an http:// or https:// URL"),
    ("endpoint_url: 'http://'\n", 1, "endpoint_url", "must be an http:// or https:// URL"),
    ("retention: 5\n", 1, "retention", "must be a mapping of settings, got 5"),
    ("egress:\n  - a\n", 2, "egress", "must be a mapping of settings, got a list"),
    ("lake: /x\nbucket: y\n", 2, "bucket", "unknown key"),
    ("lake: /x\nconcurrency: !!int abc\n", 2, "concurrency", "invalid value"),
    ("egress:\n  x: !!python/object:os.system ls\n", 2, "egress.x", "invalid value"),
    ("retention:\n  when: !custom x\n", 2, "retention.when", "invalid value"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                       message: str) -> None:
    error = config_error(tmp_path, text)
    path = str(tmp_path / "cfg" / "ckptlake.yaml")
    assert (error.path, error.line, error.key) == (path, line, key)
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}: {key}: ")
    assert error.exit_code == EXIT_USAGE


@pytest.mark.parametrize(("typo", "suggestion"), [
    ("chunksize", "chunk_size"), ("chunk-size", "chunk_size"), ("concurency", "concurrency"),
    ("read-timeout", "read_timeout"), ("connect_timout", "connect_timeout"),
    ("endpoint", "endpoint_url"), ("regoin", "region"), ("retension", "retention"),
    ("Lake", "lake"),
])
def test_unknown_key_suggests_the_close_one(tmp_path: Path, typo: str, suggestion: str) -> None:
    error = config_error(tmp_path, f"lake: /x\n\n{typo}: 1\n")
    assert (error.line, error.key) == (3, typo)
    assert error.hint == f"did you mean `{suggestion}`?"
    assert f"did you mean `{suggestion}`?" in str(error)


def test_unknown_key_far_from_any_lists_the_valid_ones(tmp_path: Path) -> None:
    error = config_error(tmp_path, "bucket: x\n")
    assert error.hint is not None and "did you mean" not in error.hint
    assert all(key in error.hint for key in KNOWN_KEYS)


def test_non_string_top_level_key(tmp_path: Path) -> None:
    error = config_error(tmp_path, "lake: /x\n1: 2\n")
    assert error.line == 2 and "keys must be names, got 1" in error.message


def test_complex_key(tmp_path: Path) -> None:
    error = config_error(tmp_path, "retention:\n  ? [a, b]\n  : 1\n")
    assert error.line == 2 and "keys must be plain names, got a list" in error.message


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    error = config_error(tmp_path, """
        concurrency: 4
        lake: /x
        concurrency: 8
    """)
    assert (error.line, error.key) == (3, "concurrency")
    assert "duplicate key (first set on line 1)" in error.message


def test_duplicate_nested_key(tmp_path: Path) -> None:
    error = config_error(tmp_path, """
        retention:
          rules:
            - match: a
              keep_last: 1
              keep_last: 2
    """)
    assert (error.line, error.key) == (5, "retention.rules[0].keep_last")
    assert "duplicate key (first set on line 4)" in error.message


def test_duplicate_in_flow_mapping(tmp_path: Path) -> None:
    error = config_error(tmp_path, "egress:\n  price_per_gb: {internet: 1, internet: 2}\n")
    assert (error.line, error.key) == (2, "egress.price_per_gb.internet")


def test_merge_key_overridden_by_explicit_is_not_a_duplicate(tmp_path: Path) -> None:
    config = load_text(tmp_path, "retention:\n  a: &a {x: 1}\n  b: {<<: *a, x: 2}\n")
    assert config.retention == {"a": {"x": 1}, "b": {"x": 2}}


def test_recursive_alias(tmp_path: Path) -> None:
    error = config_error(tmp_path, "retention:\n  a: &x [1, *x]\n")
    assert error.line == 2 and "alias refers to the value that contains it" in error.message


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("lake: /x\nconcurrency: 8\n  extra: 1\n", 3, "mapping values are not allowed here"),
    ("lake: /x\nretention: [1,\n", 3, "expected the node content"),
    ("lake: /x\nretention: {a: 1\nregion: x\n", 3, "while parsing a flow mapping on line 2"),
    ("lake: 'unclosed\n", 2, "while scanning a quoted scalar on line 1"),
    ("retention:\n\tgrace: 1\n", 2, "cannot start any token"),
    ("lake: /x\n---\nlake: /y\n", 2, "but found another document"),
    ("lake: /x\nregion: \x07\n", 2, "unacceptable character #x0007"),
])
def test_yaml_syntax_errors_have_lines(tmp_path: Path, text: str, line: int,
                                       fragment: str) -> None:
    error = config_error(tmp_path, text)
    assert error.line == line and error.key is None
    assert str(error).startswith(f"{tmp_path / 'cfg' / 'ckptlake.yaml'}:{line}: invalid YAML: ")
    assert fragment in error.message


def test_tab_indentation_hint(tmp_path: Path) -> None:
    assert "tabs" in (config_error(tmp_path, "retention:\n\tgrace: 1\n").hint or "")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"lake: /x\nregion: \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8") as info:
        load_config(str(path))
    assert info.value.line == 2


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("- lake: /x\n", 1, "got a list"),
    ("\njust a string\n", 2, "got the value 'just a string'"),
])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    error = config_error(tmp_path, text)
    assert error.line == line and "top level must be a mapping" in error.message
    assert fragment in error.message


# ------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(("text", "expected"), [
    ("16MiB", 16 * MiB), ("64 MiB", 64 * MiB), ("1GiB", GiB), ("512KiB", 512 * 1024),
    ("32MB", 32 * 10**6), ("1kb", 1000), ("2TB", 2 * 10**12), ("1TiB", 2**40),
    ("16mib", 16 * MiB), ("  8MiB  ", 8 * MiB), ("100", 100), ("100B", 100), ("0", 0),
    ("1.5MiB", 1572864), ("0.5KiB", 512), ("2.5MB", 2_500_000), ("007", 7),
    (16777216, 16777216), (0, 0),
])
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", "MiB", "16 MiB B", "-1MiB", "+1MiB", "1e6", "1,000", "0x10", "16Mi", "16mibs",
    "1.5", "0.1KiB", "1.MiB", ".5MiB", "16M", "16k", "1G", "16\nMiB", "٣MiB",
])
def test_parse_size_rejects_junk(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("value", [True, -1, 1.5, None, [16]])
def test_parse_size_rejects_non_sizes(value: object) -> None:
    with pytest.raises(UsageError):
        parse_size(value)  # type: ignore[arg-type]


def test_ambiguous_unit_hint_names_both_spellings() -> None:
    with pytest.raises(UsageError) as info:
        parse_size("16M")
    assert "16MiB" in (info.value.hint or "") and "16MB" in (info.value.hint or "")


@pytest.mark.parametrize(("text", "expected"), [
    ("1MiB", MiB), ("1GiB", GiB), (MiB, MiB), ("1048576", MiB), ("16MiB", 16 * MiB),
    ("1.5 MiB", 1572864), ("1000MB", 10**9),
])
def test_chunk_size_in_range(tmp_path: Path, text: str | int, expected: int) -> None:
    value = text if isinstance(text, int) else f"'{text}'"
    assert load_text(tmp_path, f"chunk_size: {value}\n").chunk_size == expected


@pytest.mark.parametrize("value", [MiB - 1, GiB + 1, 0, 10**6])
def test_check_chunk_size_bounds(value: int) -> None:
    with pytest.raises(UsageError):
        check_chunk_size(value)


@pytest.mark.parametrize(("text", "expected"), [
    ("60", 60.0), ("2.5", 2.5), ("'90s'", 90.0), ("'2 m'", 120.0), ("0.5s", 0.5), ("3600", 3600.0),
    ("1m", 60.0), ("~", None), ("", None),
])
def test_timeouts_in_seconds(tmp_path: Path, text: str, expected: float | None) -> None:
    config = load_text(tmp_path, f"connect_timeout: {text}\nread_timeout: {text}\n")
    assert config.connect_timeout == config.read_timeout == expected
    assert (config.lines["connect_timeout"], config.lines["read_timeout"]) == (1, 2)


def test_timeout_errors_hint_at_the_default(tmp_path: Path) -> None:
    assert "60 (seconds) is the default" in (config_error(tmp_path, "read_timeout: 0\n").hint or "")
    assert "10 (seconds) is the default" in (
        config_error(tmp_path, "connect_timeout: 0\n").hint or "")
    assert "90s" in (config_error(tmp_path, "read_timeout: x\n").hint or "")


def test_parse_seconds_and_check_timeout() -> None:
    assert parse_seconds(7) == 7.0 and parse_seconds("7") == 7.0 and parse_seconds("1.5m") == 90.0
    for junk in ("", "7h", "-1", "1e3", "s", True, None, [1]):
        with pytest.raises(UsageError):
            parse_seconds(junk)  # type: ignore[arg-type]
    assert check_timeout(0.1) == 0.1 and check_timeout(3600) == 3600.0
    for bad in (0, -1, 3600.5, float("nan"), float("inf"), True, "60", None):
        with pytest.raises(UsageError) as info:
            check_timeout(bad, "read timeout")  # type: ignore[arg-type]
        assert str(info.value).startswith("read timeout ")


@pytest.mark.parametrize("value", [0, 257, True, "8"])
def test_check_concurrency_bounds(value: object) -> None:
    with pytest.raises(UsageError):
        check_concurrency(value)  # type: ignore[arg-type]
    assert check_concurrency(1) == 1 and check_concurrency(256) == 256


def test_format_size() -> None:
    assert [format_size(n) for n in (16 * MiB, GiB, 1536, 1000, 0)] == [
        "16MiB", "1GiB", "1536 bytes", "1000 bytes", "0 bytes"]


# ------------------------------------------------------------------------------------------
# Lake resolution


def test_default_lake_dir_under_home(isolated: Path) -> None:
    assert default_lake_dir() == isolated / "home" / ".local" / "share" / "ckptlake" / "lake"


def test_default_lake_dir_honours_xdg_data_home(isolated: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(isolated / "data"))
    assert default_lake_dir() == isolated / "data" / "ckptlake" / "lake"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    assert default_lake_dir() == isolated / "home" / ".local" / "share" / "ckptlake" / "lake"


def test_resolve_lake_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(source="/etc/ck/ckptlake.yaml", lake="s3://from-config/p")
    monkeypatch.setenv("CKPTLAKE_LAKE", "s3://from-env/p")
    assert resolve_lake("s3://from-flag/p", config) == ("s3://from-flag/p", "--lake")
    assert resolve_lake(None, config) == ("s3://from-env/p", "$CKPTLAKE_LAKE")
    monkeypatch.delenv("CKPTLAKE_LAKE")
    assert resolve_lake(None, config) == ("s3://from-config/p",
                                          "lake: in /etc/ck/ckptlake.yaml")
    monkeypatch.setenv("XDG_DATA_HOME", str(isolated / "data"))
    assert resolve_lake(None, Config()) == (
        (isolated / "data" / "ckptlake" / "lake").as_uri(), "embedded default")


def test_resolve_lake_default_is_a_file_url_under_home(isolated: Path) -> None:
    url, origin = resolve_lake(None, Config())
    assert url == "file://" + str(isolated / "home" / ".local/share/ckptlake/lake")
    assert origin == "embedded default"


@pytest.mark.parametrize("value", ["", "  ", "\n"])
def test_an_empty_env_lake_is_an_error_not_the_default(monkeypatch: pytest.MonkeyPatch,
                                                       value: str) -> None:
    """A CI secret that did not arrive (`CKPTLAKE_LAKE: ${{ secrets.LAKE }}`): read as unset,
    the job published to the runner's own disk (the embedded default) with exit 0."""
    monkeypatch.setenv("CKPTLAKE_LAKE", value)
    for config in (Config(), Config(source="/c.yaml", lake="s3://b/p")):
        with pytest.raises(UsageError, match=r"\$CKPTLAKE_LAKE is set but empty"):
            resolve_lake(None, config)
    assert resolve_lake("s3://b/q", Config())[0] == "s3://b/q"  # --lake still wins
    monkeypatch.delenv("CKPTLAKE_LAKE")
    assert resolve_lake(None, Config(source="/c.yaml", lake="s3://b/p"))[1] == "lake: in /c.yaml"


def test_an_empty_env_lake_fails_the_push_with_exit_2(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("CKPTLAKE_LAKE", "")
    (tmp_path / "f.bin").write_bytes(b"x")
    r = CliRunner().invoke(app, ["push", str(tmp_path / "f.bin"), "ci/model", "--json"])
    assert r.exit_code == 2, r.output
    assert "CKPTLAKE_LAKE is set but empty" in json.loads(r.stdout)["error"]["message"]
    assert not list((tmp_path / "home").rglob("ckptlake.json")), "no lake was created"


def test_empty_cli_lake_is_an_error() -> None:
    with pytest.raises(UsageError, match="--lake is empty"):
        resolve_lake("", Config())


def test_plain_paths_become_file_urls(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = isolated / "work"
    assert resolve_lake("/mnt/shared/lake", Config())[0] == "file:///mnt/shared/lake"
    assert resolve_lake("lakes/../lake", Config())[0] == (work / "lake").as_uri()
    assert resolve_lake("~/lake", Config())[0] == (isolated / "home" / "lake").as_uri()
    monkeypatch.setenv("CKPTLAKE_LAKE", "rel")
    assert resolve_lake(None, Config())[0] == (work / "rel").as_uri()
    assert resolve_lake("file:///mnt/x", Config())[0] == "file:///mnt/x"


def test_relative_lake_in_config_is_relative_to_the_config_file(isolated: Path) -> None:
    path = write(isolated / "home" / ".config" / "ckptlake" / "ckptlake.yaml", "lake: ./lake\n")
    config = load_config()
    assert config.source == str(path)
    assert resolve_lake(None, config) == ((path.parent / "lake").as_uri(), f"lake: in {path}")


# ------------------------------------------------------------------------------------------
# The example file


def test_example_file_loads_and_documents_every_key() -> None:
    example = REPO_ROOT / "ckptlake.example.yaml"
    config = load_config(str(example))
    assert {key for key in config.lines if "." not in key and "[" not in key} == set(KNOWN_KEYS)
    text = example.read_text(encoding="utf-8")
    assert all(f"\n# {key}:" in text for key in KNOWN_KEYS if key not in ("retention", "egress"))
    assert config.lake == "s3://my-bucket/lakes/team"
    assert config.chunk_size == 16 * MiB and config.concurrency == 8
    assert (config.connect_timeout, config.read_timeout) == (10, 60)
    assert config.retention == {
        "grace_period": "24h",
        "storage_price_per_gb_month": 0.023,
        "rules": [
            {"match": "*/*/ckpt", "keep_last": 5, "keep_every_steps": 10000,
             "keep_best": {"metric": "val_loss", "mode": "min", "count": 2},
             "keep_within": "7d"},
            {"match": "*/*/model", "keep_all": True},
        ],
    }
    assert config.egress == {
        "lake_region": "us-east-1",
        "client_region": "eu-west-1",
        "price_per_gb": {"same_region": 0.0, "inter_region": 0.02, "internet": 0.09},
        "warn_above_usd": 1.00,
        "confirm_above_usd": 25.00,
    }
    assert config.line_of("retention.rules[0].keep_last") is not None


# ---- the working directory's config must be the user's ----------------------------------------

def test_a_cwd_config_others_may_write_is_refused_until_named(isolated: Path) -> None:
    """Read without being named, ./ckptlake.yaml chose the endpoint even an explicit --lake
    talked to, with the user's credentials: whoever could write it (a cloned repository, a
    shared directory) could redirect a push.  As git does: the user's own, or named."""
    import os

    from ckptlake.policy.config import load_config

    cfg = isolated / "work" / "ckptlake.yaml"
    cfg.write_text("endpoint_url: http://127.0.0.1:9\n")
    os.chmod(cfg, 0o666)
    with pytest.raises(ConfigError, match="others may write it") as err:
        load_config()
    assert "--config ./ckptlake.yaml" in (err.value.hint or "")
    assert load_config("ckptlake.yaml").endpoint_url == "http://127.0.0.1:9"  # named: used
    os.chmod(cfg, 0o664)  # group-writable, the user's own (umask 002): fine
    assert load_config().endpoint_url == "http://127.0.0.1:9"
    if os.getuid() == 0:
        os.chown(cfg, 1234, -1)
        os.chmod(cfg, 0o644)
        with pytest.raises(ConfigError, match="belongs to uid 1234, not you"):
            load_config()


def test_a_config_endpoint_is_named_next_to_the_lake(isolated: Path) -> None:
    import ckptlake

    (isolated / "work" / "ckptlake.yaml").write_text("endpoint_url: http://127.0.0.1:9\n")
    lake = ckptlake.open("s3://corp/team")
    assert "endpoint http://127.0.0.1:9 from endpoint_url: in" in lake.origin


@pytest.mark.parametrize("text", ["retention: " + "[" * 5000 + "]" * 5000,
                                  "a: " + "{a: " * 3000 + "1" + "}" * 3000])
def test_a_config_nested_too_deeply_is_a_config_error(isolated: Path, text: str) -> None:
    from ckptlake.policy.config import load_config

    (isolated / "work" / "deep.yaml").write_text(text)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config("deep.yaml")


def test_a_huge_config_is_refused_without_reading_it_all(isolated: Path) -> None:
    from ckptlake.policy.config import MAX_CONFIG_BYTES, load_config

    (isolated / "work" / "big.yaml").write_bytes(b"#" * (MAX_CONFIG_BYTES + 10))
    with pytest.raises(ConfigError, match="larger than 4 MiB"):
        load_config("big.yaml")
    with pytest.raises(ConfigError, match="larger than 4 MiB"):
        load_config("/dev/zero")


def test_a_number_too_large_for_a_float_is_a_config_error(tmp_path: Path) -> None:
    """A 400-digit integer in the config (a price, a duration) made math.isfinite raise
    OverflowError: an internal error instead of the line that is wrong."""
    from ckptlake.errors import ConfigError
    from ckptlake.policy.egress import load_egress

    path = tmp_path / "c.yaml"
    path.write_text("egress:\n  warn_above_usd: " + "9" * 400 + "\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="warn_above_usd"):
        load_egress(load_config(str(path)))


def test_a_config_of_another_user_or_root_its_group_may_write_is_refused(
        isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group-writable is fine for the user's own file (umask 002), not for another's or root's:
    any member of its group could choose the endpoint a push sends the user's data to.  The
    user is faked, so that this runs as root (the file root's) and as anyone else alike."""
    import os

    from ckptlake.policy.config import load_config

    cfg = isolated / "work" / "ckptlake.yaml"
    cfg.write_text("endpoint_url: http://127.0.0.1:9\n")
    owner = cfg.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1000)
    os.chmod(cfg, 0o664)
    with pytest.raises(ConfigError, match="others may write it"):
        load_config()
    os.chmod(cfg, 0o644)
    if owner == 0:  # root's, and only root may write it: trusted, as git trusts it
        assert load_config().endpoint_url == "http://127.0.0.1:9"
    else:
        with pytest.raises(ConfigError, match=f"belongs to uid {owner}, not you"):
            load_config()


def test_cache_size_from_the_environment_applies_to_the_configs_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node with a small disk lowers the size with $CKPTLAKE_CACHE_SIZE and keeps the
    config's directory."""
    from ckptlake.policy.config import _parse, resolve_cache

    monkeypatch.delenv("CKPTLAKE_CACHE", raising=False)
    monkeypatch.setenv("CKPTLAKE_CACHE_SIZE", "2GiB")
    setting = resolve_cache(_parse("cache:\n  dir: c\n  size: 1GiB\n",
                                   str(tmp_path / "ckptlake.yaml")))
    assert (setting.dir, setting.size) == (str(tmp_path / "c"), 2 * 2**30)


def test_a_piped_configs_relative_paths_are_the_working_directorys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config <(printf 'lake: ./lake')` is /dev/fd/63: its relative lake: and cache.dir
    resolved against /dev/fd, a lake there "not found"."""
    import os
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.bin").write_bytes(b"x")
    script = ("import os, sys\n"
              "r, w = os.pipe()\n"
              "os.write(w, b'lake: ./lake\\ncache:\\n  dir: ./cache\\n'); os.close(w)\n"
              "from ckptlake.cli.app import app\n"
              "sys.argv = ['ckptlake', 'push', 'f.bin', 'p/f', '--config', f'/dev/fd/{r}']\n"
              "app()\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={k: v for k, v in {**os.environ, "CKPTLAKE_CACHE": ""}.items()
                            if k != "CKPTLAKE_LAKE"},
                       pass_fds=(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"file://{tmp_path}/lake (lake: in /dev/fd/" in r.stderr, r.stderr
    assert (tmp_path / "lake" / "ckptlake.json").exists()


@pytest.mark.parametrize("path", ["x:/lake", "data:2024/lake", "ab:cd"])
def test_a_name_with_a_colon_of_no_object_store_is_a_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    from ckptlake.policy.config import resolve_lake, Config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CKPTLAKE_LAKE", raising=False)
    url, origin = resolve_lake(path, Config())
    assert url == (tmp_path / path).as_uri() and origin == "--lake"


def test_a_config_on_stdin_from_a_file_resolves_against_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config /dev/stdin < conf.yaml`: /dev/stdin is then that file (a regular file), and
    its directory was /dev: the lake went to /dev/rel-lake."""
    import os
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf.yaml").write_text("lake: rel-lake\n")
    with open(tmp_path / "conf.yaml", "rb") as stdin:
        r = subprocess.run([sys.executable, "-m", "ckptlake", "ls", "--config", "/dev/stdin"],
                           stdin=stdin, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "CKPTLAKE_LAKE"})
    assert f"using lake file://{tmp_path}/rel-lake (lake: in /dev/stdin)" in r.stderr, r.stderr


@pytest.mark.parametrize("key", ["aws_secret_access_key", "aws_access_key_id", "token",
                                 "password", "api_key"])
def test_a_credential_key_in_the_config_is_named_and_told_where_credentials_go(
        tmp_path: Path, key: str) -> None:
    """The message went through the redaction as `KEY: unknown key (valid keys: lake`, a
    secret-named pair: it read `aws_secret_access_key: ***, endpoint_url, ...`."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    cfg = tmp_path / "k.yaml"
    cfg.write_text(f"lake: {tmp_path / 'lake'}\n{key}: abc123\n")
    for extra in ([], ["--json"]):
        r = CliRunner().invoke(app, ["ls", "--config", str(cfg), *extra])
        assert r.exit_code == 2, r.output
        assert f"k.yaml:2 (key {key}): unknown key" in r.output, r.output
        assert "credentials never go in ckptlake.yaml" in r.output and "***" not in r.output
        assert "abc123" not in r.output


def test_a_dotted_credential_key_keeps_its_message(tmp_path: Path) -> None:
    """`credentials.file:` was judged by its last part (`file`), so the redaction still ate
    `credentials.file: unknown key (valid keys: ...`."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text("credentials.file: ~/.aws/credentials\n")
    r = CliRunner().invoke(app, ["ls", "--config", str(cfg)])
    assert r.exit_code == 2 and "(key credentials.file): unknown key" in r.output, r.output
    assert "***" not in r.output
