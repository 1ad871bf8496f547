"""`ckptlake __complete KIND WORD -- WORDS...`: what the shell scripts ask the lake at TAB time.

The static scripts (completions.py) know commands and options; for a REF or ARTIFACT argument
they run this, which prints candidates one per line:

* KIND `artifact`: artifact names starting with WORD, and `dir/` for a level of the name tree
  that has artifacts below it (the shell adds no space after those);
* KIND `ref`: the same, and once WORD has an `@`: ARTIFACT@latest, @ALIAS, @vN and @step=N
  (newest first, at most MAX_EACH of each kind);
* KIND `path` (`ckptlake __complete path WORD REF -- WORDS`): the paths inside the version REF
  names that start with WORD, one directory level at a time: `dir/` for a directory (the shell
  adds no space), the name for a file or a symlink.  `--include=WORD` keeps its `--include=`;
* KIND `alias` (`ckptlake __complete alias WORD REF -- WORDS`): the aliases of REF's artifact
  that start with WORD (`alias REF NAME`, `alias --delete ARTIFACT NAME`).

Why it is cheap: names come from delimiter listings along the typed path (one request per
level, one per matching child to tell an artifact from a directory), never a listing of the
whole tree; selectors from the listings of one artifact's @alias/, @v/ and @s/ (steps are in
the summary keys), no manifest is read.  Paths read ONE manifest, resolving REF as the
commands do (catalog.resolve: @vN is one GET, @latest a listing and a GET); the levels of a
version are cached VERSION_TTL seconds (a version's manifest never changes), what a REF other
than @vN resolves to only CACHE_TTL.  Results are cached per lake in
$XDG_CACHE_HOME/ckptlake/ for CACHE_TTL seconds, so repeated TABs do not ask again, and the
lake gets BUDGET seconds in all: after that the stale cached answer is printed, or nothing.
A TAB never waits on a slow lake, and never prints an error.

WORDS are the command line being completed; --lake/-l, --endpoint-url, --profile, --region
and --config are taken from it (bash splits `--lake=x` at '=': both forms are understood).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

CACHE_TTL = 10.0  # seconds an answer is reused without asking the lake
VERSION_TTL = 3600.0  # seconds the paths of a version (immutable) are reused
BUDGET = 1.0  # seconds the lake may take, after start-up
MAX_EACH = 100  # candidates of each selector kind (aliases, vN, step=N)
_CACHE_ENTRIES = 200
_LAKE_OPTIONS = {"--lake": "lake", "-l": "lake", "--endpoint-url": "endpoint_url",
                 "--profile": "profile", "--region": "region", "--config": "config"}


def lake_options(words: list[str]) -> dict[str, str]:
    """--lake and friends from the words of a command line (the last occurrence wins)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, value = word.partition("=")
        if name in _LAKE_OPTIONS and name.startswith("--") and eq and value:
            out[_LAKE_OPTIONS[name]] = value
        elif word in _LAKE_OPTIONS:
            j = i + 1
            if j < len(words) and words[j] == "=":  # bash: --lake = URL
                j += 1
            if j < len(words) - 1 or (j == len(words) - 1 and words[j]):
                out[_LAKE_OPTIONS[word]] = words[j]
            i = j
        i += 1
    return out


def _cache_dir() -> Path:
    value = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / ".cache"
    return base / "ckptlake"


class Cache:
    """One small JSON file per lake: query -> [time, answer]."""

    def __init__(self, lake_key: str) -> None:
        digest = hashlib.sha256(lake_key.encode()).hexdigest()[:20]
        self.path = _cache_dir() / f"complete-{digest}.json"
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False

    def get(self, query: str, *, fresh: bool, ttl: float = CACHE_TTL) -> Any:
        entry = self.data.get(query)
        if not isinstance(entry, list) or len(entry) != 2:
            return None
        if fresh and not 0 <= time.time() - float(entry[0]) <= ttl:
            return None
        return entry[1]

    def put(self, query: str, answer: Any) -> None:
        self.data[query] = [time.time(), answer]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        newest = sorted(self.data.items(), key=lambda kv: -float(kv[1][0]))[:_CACHE_ENTRIES]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(dict(newest), separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home: completion still works, uncached


class Lookups:
    """The lake questions completion asks, each answered from the cache when fresh."""

    def __init__(self, opener: Callable[[], Any], cache: Cache) -> None:
        self.opener, self.cache = opener, cache
        self._store: Any = None
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, int], Any] = {}

    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                self._store = self.opener()
            return self._store

    def ask(self, query: str, compute: Callable[[], Any], ttl: float = CACHE_TTL) -> Any:
        answer = self.cache.get(query, fresh=True, ttl=ttl)
        if answer is None:
            answer = compute()
            self.cache.put(query, answer)
        return answer

    def children(self, parent: str) -> list[str]:
        """Names one level below `parent` ('' or 'a/b/'), without the '@' records."""
        from ..format import layout

        def compute() -> list[str]:
            base = layout.ARTIFACTS_PREFIX + parent
            return sorted(p[len(base):-1] for p in self.store().list_prefixes(base)
                          if not p[len(base):].startswith("@"))

        return self.ask("children:" + parent, compute)

    def kind(self, path: str) -> list[bool]:
        """[is an artifact, has names below it] for 'a/b'."""
        from ..format import layout

        def compute() -> list[bool]:
            base = layout.ARTIFACTS_PREFIX + path + "/"
            subs = [p[len(base):] for p in self.store().list_prefixes(base)]
            return ["@v/" in subs, any(not s.startswith("@") for s in subs)]

        return self.ask("kind:" + path, compute)

    def selectors(self, artifact: str) -> dict[str, list[Any]]:
        """aliases, version numbers and steps of one artifact, from three listings."""
        from ..core.summary import summaries_from, usable
        from ..format import layout

        def compute() -> dict[str, list[Any]]:
            store = self.store()
            found: dict[str, list[Any]] = {}

            def listing(prefix: str) -> None:
                found[prefix] = list(store.list(prefix))

            threads = [threading.Thread(target=listing, args=(p,), daemon=True) for p in
                       (layout.aliases_prefix(artifact), layout.versions_prefix(artifact),
                        layout.summaries_prefix(artifact))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # an empty record (a removal cut short, a PUT cut after its head) is no alias
            aliases = sorted(parsed[1] for info in found[layout.aliases_prefix(artifact)]
                             if (parsed := layout.parse_alias_key(info.key))
                             and parsed[0] == artifact and info.size > 0)
            # an empty manifest (a PUT cut after its head) is no version (summary.committed_from)
            committed = {parsed[1]: info.modified
                         for info in found[layout.versions_prefix(artifact)]
                         if (parsed := layout.parse_version_key(info.key))
                         and parsed[0] == artifact and info.size > 0}
            summaries = summaries_from(artifact, found[layout.summaries_prefix(artifact)])
            steps = sorted({s.step for n, s in summaries.items()
                            if s.step is not None and usable(s, committed.get(n))},
                           reverse=True)
            return {"aliases": aliases, "versions": sorted(committed, reverse=True),
                    "steps": steps}

        return self.ask("selectors:" + artifact, compute)

    def version(self, ref: Any) -> int:
        """The version number a parsed non-@vN ref names (its manifest is kept for level())."""
        from ..core import catalog

        def compute() -> int:
            m = catalog.resolve(self.store(), ref)
            self._manifests[(m.artifact, m.version)] = m
            return m.version

        return int(self.ask(f"version:{ref}", compute))

    def level(self, artifact: str, version: int, parent: str) -> list[str]:
        """The names one level below `parent` ('' or 'a/b/') in a version, 'dir/' for a
        directory; empty directories are directories, symlinks are leaves."""
        from ..core.catalog import load_manifest

        def compute() -> list[str]:
            m = self._manifests.get((artifact, version))
            if m is None:
                m = self._manifests[(artifact, version)] = load_manifest(self.store(), artifact,
                                                                         version)
            found: set[str] = set()
            for path, is_dir in [(f.path, False) for f in m.files] + [(d, True) for d in m.dirs]:
                if not path.startswith(parent) or path == parent.rstrip("/"):
                    continue
                head, slash, _ = path[len(parent):].partition("/")
                found.add(head + "/" if slash or is_dir else head)
            return sorted(found)

        return self.ask(f"paths:{artifact}@v{version}:{parent}", compute, ttl=VERSION_TTL)


def names(lookups: Lookups, word: str) -> list[str]:
    """Artifact names (and 'dir/' levels) starting with word."""
    from ..transfer.pool import bounded_map

    parent = word[:word.rfind("/") + 1]
    fragment = word[len(parent):]
    matching = [parent + n for n in lookups.children(parent) if n.startswith(fragment)]
    out: list[str] = []
    kinds = dict(bounded_map(lambda p: (p, lookups.kind(p)), matching, workers=8,
                             name="ckptlake-complete"))
    for path in matching:
        is_artifact, has_below = kinds[path]
        if is_artifact:
            out.append(path)
        if has_below:
            out.append(path + "/")
    return out


def refs(lookups: Lookups, word: str) -> list[str]:
    if "@" not in word:
        return names(lookups, word)
    artifact, _, selector = word.partition("@")
    from ..format.refs import validate_artifact

    validate_artifact(artifact)
    got = lookups.selectors(artifact)
    groups = [["latest"], list(got["aliases"]), [f"v{n}" for n in got["versions"]],
              [f"step={s}" for s in got["steps"]]]
    out = []
    for group in groups:
        out += [f"{artifact}@{s}" for s in group if s.startswith(selector)][:MAX_EACH]
    return out


def paths(lookups: Lookups, word: str, ref: str) -> list[str]:
    """Paths of the version `ref` names below the directory typed in word, starting with it."""
    from ..format.refs import parse_ref

    option, eq, value = word.partition("=")
    keep, word = (option + eq, value) if eq and option.startswith("-") else ("", word)
    parsed = parse_ref(ref)
    version = int(parsed.value) if parsed.kind == "version" else lookups.version(parsed)
    parent = word[:word.rfind("/") + 1]
    fragment = word[len(parent):]
    return [keep + parent + n for n in lookups.level(parsed.artifact, version, parent)
            if n.startswith(fragment)]


def alias_names(lookups: Lookups, word: str, ref: str) -> list[str]:
    """The aliases of the artifact `ref` names that start with word (from the same cached
    listing as the @ALIAS selectors)."""
    from ..format.refs import parse_ref

    artifact = parse_ref(ref).artifact
    return [a for a in lookups.selectors(artifact)["aliases"] if a.startswith(word)]


def _opener(options: dict[str, str]) -> tuple[str, Callable[[], Any]]:
    """(the lake's cache key, a function opening its store); resolving the URL reads only the
    config file, never the network."""
    from ..policy.config import load_config, resolve_lake

    cfg = load_config(options.get("config"))
    url, _ = resolve_lake(options.get("lake"), cfg)
    endpoint = options.get("endpoint_url") or cfg.endpoint_url
    profile = options.get("profile") or cfg.profile
    region = options.get("region") or cfg.region

    def opener() -> Any:
        from ..store import open_store

        return open_store(url, endpoint_url=endpoint, profile=profile, region=region,
                          max_connections=12, connect_timeout=BUDGET, read_timeout=BUDGET)

    return f"{url}\n{endpoint}\n{profile}\n{region}", opener


def candidates(kind: str, word: str, words: list[str], *, budget: float = BUDGET,
               ref: str = "") -> list[str]:
    """The answer: from the cache if fresh, else from the lake within `budget` seconds (not
    counting start-up), else whatever the cache holds (a stale answer is better than none at
    a TAB), else nothing.  `ref`: the version whose paths KIND `path` completes."""
    key, opener = _opener(lake_options(words))
    cache = Cache(key)
    find: Callable[[Lookups, str], list[str]]
    if kind == "path":
        find = lambda lookups, w: paths(lookups, w, ref)  # noqa: E731
    elif kind == "alias":
        find = lambda lookups, w: alias_names(lookups, w, ref)  # noqa: E731
    else:
        find = refs if kind == "ref" else names
    try:  # a fresh cached answer needs no store at all (nor boto3's import)
        return find(Lookups(_no_lake, cache), word)
    except Exception:  # noqa: BLE001 - not all of it cached, or a word that has no answer
        pass
    store = opener()  # start-up (imports), no request: outside the lake's budget
    lookups = Lookups(lambda: store, cache)
    result: list[list[str]] = []

    def run() -> None:
        try:
            result.append(find(lookups, word))
        except Exception:  # noqa: BLE001 - unreachable lake, bad word: the cache may answer
            pass

    worker = threading.Thread(target=run, daemon=True, name="ckptlake-complete")
    worker.start()
    worker.join(budget)
    if result:
        cache.save()
        return result[0]
    # Too slow (or failed): answer from the cache alone, however old.
    stale = Lookups(_no_lake, _Stale(cache))
    try:
        return find(stale, word)
    except Exception:  # noqa: BLE001 - nothing cached for this word
        return []


def _no_lake() -> Any:
    raise LookupError("not cached")


class _Stale(Cache):
    """The cache, answering with whatever it holds, however old."""

    def __init__(self, cache: Cache) -> None:  # noqa: D107 - shares the loaded data
        self.data, self.path, self.dirty = cache.data, cache.path, False

    def get(self, query: str, *, fresh: bool, ttl: float = CACHE_TTL) -> Any:
        return super().get(query, fresh=False)

    def put(self, query: str, answer: Any) -> None:
        pass


def main(argv: list[str]) -> int:
    """Never fails loudly: a completion that errors prints nothing, exit 0."""
    usage = ("usage: ckptlake __complete artifact|ref WORD | path|alias WORD REF "
             "[-- WORDS...]\n")
    if len(argv) < 2 or argv[0] not in ("artifact", "ref", "path", "alias"):
        sys.stderr.write(usage)
        return 2
    kind, word, rest = argv[0], argv[1], argv[2:]
    ref = ""
    if kind in ("path", "alias"):
        if not rest or rest[0] == "--":
            sys.stderr.write(usage)
            return 2
        ref, rest = rest[0], rest[1:]
    words = rest[1:] if rest[:1] == ["--"] else rest
    try:
        found = candidates(kind, word, words, ref=ref)
    except Exception:  # noqa: BLE001 - a TAB must never show a traceback
        found = []
    sys.stdout.write("".join(c + "\n" for c in found))
    sys.stdout.flush()
    return 0
