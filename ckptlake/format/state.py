"""Training state <-> (JSON skeleton, tensors): the encoding behind `save_state`/`load_state`.

A training state (model, optimizer, scheduler, RNG states, step) is a tree of dicts, lists and
tuples with tensors and plain values at the leaves.  Tensors go into a safetensors file (so diff
and partial reads see them); the tree itself goes into a small JSON "skeleton" that names each
tensor.  Reading it back never runs code (no pickle): the skeleton is data, decoded by the
closed set of node types below.  docs/format.md, "Training state", is the specification.

Node types (every JSON object is a tagged node, so user data can never be mistaken for one):
    null, true/false, a string, an integer        the value itself
    a number with a fraction or exponent          a float
    {"$float": "nan" | "inf" | "-inf"}           a non-finite float
    [node, ...]                                   a list
    {"$tuple": [node, ...]}                       a tuple
    {"$dict": [[key, node], ...]}                 a dict, in order; key: string, integer,
                                                  true/false, null or a finite float;
                                                  "ordered": true for an OrderedDict, and
                                                  "metadata": node for its `_metadata`
                                                  attribute (torch state_dict versions)
    {"$tensor": NAME, "framework": "pt" | "np"}   a tensor of the safetensors file
    ... plus "scalar": true for a numpy scalar (np.float32(1.0)), returned as one
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any, Callable, Iterator

from ..errors import UsageError
from .header import format_hint, is_format, shown

STATE_VERSION = 1
SKELETON_FILENAME = "ckptlake-state.json"
# safetensors' own header entry: never a tensor name (format/safetensors.py refuses it too).
RESERVED_NAME = "__metadata__"

# A tensor leaf seen by the walk: (generated name, value); the callback returns its framework
# ("pt" | "np") or None when the value is not a tensor/array.
TensorHook = Callable[[str, Any], "str | None"]


def _segment(key: Any) -> str:
    text = key if isinstance(key, str) else json.dumps(key)
    return text.replace("~", "~0").replace("/", "~1")


def _describe(path: tuple[str, ...]) -> str:
    # backslashreplace: a path holding a lone surrogate must still print (stderr is UTF-8)
    return ("/".join(path) or "the top level").encode("utf-8", "backslashreplace").decode()


def _check_text(text: str, what: str, path: tuple[str, ...]) -> None:
    """Refuse a string UTF-8 cannot encode (a lone surrogate, e.g. from a file name decoded
    with surrogateescape) while the state is walked: found later, it surfaced as a bare
    UnicodeEncodeError from writing the skeleton, naming nothing."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start:exc.end].encode("utf-8", "backslashreplace").decode()
        raise UsageError(f"state {what} at {_describe(path)} is not valid Unicode text: it holds "
                         f"the lone surrogate {bad} at character {exc.start}",
                         hint="fix the string before saving, e.g. "
                              "s.encode('utf-8', 'replace').decode()") from None


def encode(state: Any, tensor: TensorHook) -> dict[str, Any]:
    """The skeleton of `state`; `tensor(name, value)` is called once per tensor leaf, in a
    deterministic order, with a unique name (the leaf's path, "/"-joined, keys escaped
    "~" -> "~0", "/" -> "~1"; "~~N" appended if two paths escape to the same name, or if the
    path is RESERVED_NAME)."""
    # Taken from the start: safetensors keeps its own header entry under this name, so a
    # tensor of that name (a top-level key "__metadata__") would be overwritten by it.
    used: set[str] = {RESERVED_NAME}

    def name_for(path: tuple[str, ...]) -> str:
        base = "/".join(path) or "_"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}~~{n}"
        used.add(name)
        return name

    def walk(value: Any, path: tuple[str, ...], depth: int) -> Any:
        if depth > 200:
            raise UsageError(f"state is nested too deeply at {_describe(path)} (a cycle?)")
        if isinstance(value, str):
            _check_text(value, "string", path)
            return value
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int) and not _is_np_generic(value):
            return _int(value, f"state entry {_describe(path)}")
        if isinstance(value, float) and not _is_np_generic(value):
            return _float(value)
        if isinstance(value, dict):
            items = []
            for k, v in value.items():
                items.append([_key(k, path), walk(v, (*path, _segment(k)), depth + 1)])
            node: dict[str, Any] = {"$dict": items}
            if isinstance(value, OrderedDict):
                node["ordered"] = True
                meta = getattr(value, "_metadata", None)  # torch state_dict versions
                if isinstance(meta, dict):
                    node["metadata"] = walk(meta, (*path, "_metadata"), depth + 1)
            return node
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return {"$tuple": [walk(v, (*path, str(i)), depth + 1) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, (*path, str(i)), depth + 1) for i, v in enumerate(value)]
        name = name_for(path)
        framework = tensor(name, value)
        if framework is None:
            raise UsageError(f"state entry {_describe(path)} is a {type(value).__name__}; "
                             "save_state stores dicts, lists, tuples, tensors, numpy arrays, "
                             "numbers, strings, booleans and None (never pickled objects)",
                             hint="convert it (e.g. to a dict of plain values) before saving")
        leaf: dict[str, Any] = {"$tensor": name, "framework": framework}
        if _is_np_generic(value):
            leaf["scalar"] = True
        return leaf

    return {"ckptlake_state": STATE_VERSION, "root": walk(state, (), 0)}


def _is_np_generic(value: Any) -> bool:
    mod = type(value).__module__
    return mod == "numpy" and type(value).__name__ not in ("ndarray",) \
        and hasattr(value, "dtype") and getattr(value, "shape", None) == ()


# Python's JSON reader, like its int(), refuses integers of more than 4,300 digits
# (sys.get_int_max_str_digits): one bigger would be saved and never load.
MAX_INT_BITS = 13_000  # about 3,900 decimal digits


def _int(value: int, what: str) -> int:
    if int(value).bit_length() > MAX_INT_BITS:
        raise UsageError(f"{what} is an integer of about {int(value).bit_length() * 3 // 10} "
                         f"digits; save_state stores integers of up to {MAX_INT_BITS} bits",
                         hint="store it as a string (str(x)) and convert it back after loading")
    return int(value)


def _float(value: float) -> Any:
    if math.isnan(value):
        return {"$float": "nan"}
    if math.isinf(value):
        return {"$float": "inf" if value > 0 else "-inf"}
    return float(value)


def _key(key: Any, path: tuple[str, ...]) -> Any:
    if isinstance(key, str):
        _check_text(key, "dict key", (*path, _segment(key)))
        return key
    if key is None or isinstance(key, bool):
        return key
    if isinstance(key, int) and not _is_np_generic(key):
        return _int(key, f"a dict key under {_describe(path)}")
    if isinstance(key, float) and math.isfinite(key) and not _is_np_generic(key):
        return float(key)
    raise UsageError(f"state has a dict key {key!r} ({type(key).__name__}) under "
                     f"{_describe(path)}; keys must be strings, integers, booleans, None or "
                     "finite floats")


def dumps(skeleton: dict[str, Any]) -> bytes:
    """Deterministic bytes: the same state gives the same file (so a re-save dedups)."""
    return json.dumps(skeleton, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def tensor_refs(skeleton: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every {"$tensor": ...} node of a parsed skeleton."""
    stack = [skeleton.get("root")]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "$tensor" in node:
                yield node
            elif "$tuple" in node:
                stack.extend(node["$tuple"])
            elif "$dict" in node:
                stack.extend(v for _, v in node["$dict"])
                if "metadata" in node:
                    stack.append(node["metadata"])


def parse(raw: bytes, what: str) -> dict[str, Any]:
    """The skeleton in `raw`, checked for its version; `what` names the version in errors."""
    try:
        skeleton = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{what}: {SKELETON_FILENAME} is not valid JSON ({exc})") from None
    except RecursionError:
        skeleton = None
    if not isinstance(skeleton, dict) or "root" not in skeleton:
        raise UsageError(f"{what}: {SKELETON_FILENAME} is not a training-state skeleton")
    found = skeleton.get("ckptlake_state")
    if not is_format(found, STATE_VERSION):
        raise UsageError(f"{what}: its training-state format {shown(found)} is not supported "
                         f"by this ckptlake (it reads {STATE_VERSION})",
                         hint=format_hint(skeleton, "ckptlake_state"))
    bad = _malformed(skeleton["root"], 0)
    if bad is not None:
        raise UsageError(f"{what}: {SKELETON_FILENAME} is not a training-state skeleton "
                         f"({bad})")
    return skeleton


# encode refuses states nested deeper than 200; a few more levels for the nodes around them
_MAX_NODE_DEPTH = 210


def _malformed(node: Any, depth: int) -> str | None:
    """What is wrong with a skeleton node (None: nothing), checked in full before anything
    is built from it, so that tensor_refs and decode meet only the forms encode writes."""
    if depth > _MAX_NODE_DEPTH:
        return "nested too deeply"
    if node is None or isinstance(node, (bool, int, float, str)):
        return None
    if isinstance(node, list):
        return next((b for v in node if (b := _malformed(v, depth + 1)) is not None), None)
    if not isinstance(node, dict):
        return f"unknown node {str(node)[:60]}"
    kind = [k for k in ("$dict", "$tuple", "$float", "$tensor") if k in node]
    if len(kind) != 1:
        return f"unknown node {str(node)[:60]}"
    value = node[kind[0]]
    if kind[0] == "$tensor":
        return None if isinstance(value, str) else f"a tensor name {str(value)[:60]}"
    if kind[0] == "$float":
        return None if value in ("nan", "inf", "-inf") else f"a float {str(value)[:60]}"
    if not isinstance(value, list):
        return f"a {kind[0]} that is no list"
    if kind[0] == "$tuple":  # its items one level down, as encode counts them
        return next((b for v in value if (b := _malformed(v, depth + 1)) is not None), None)
    for item in value:
        if not (isinstance(item, list) and len(item) == 2
                and (item[0] is None or isinstance(item[0], (bool, int, float, str)))):
            return f"a dict item {str(item)[:60]}"
        if (b := _malformed(item[1], depth + 1)) is not None:
            return b
    return _malformed(node["metadata"], depth + 1) if "metadata" in node else None


def decode(skeleton: dict[str, Any], tensors: dict[str, Any], what: str) -> Any:
    """Rebuild the structure; `tensors` maps each referenced name to its loaded value."""

    def bad(node: Any) -> UsageError:
        return UsageError(f"{what}: unknown node in {SKELETON_FILENAME}: {str(node)[:80]}")

    def build(node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [build(v) for v in node]
        if not isinstance(node, dict) or len(node) == 0:
            raise bad(node)
        if "$dict" in node:
            items = [(_unkey(k), build(v)) for k, v in node["$dict"]]
            if not node.get("ordered"):
                return dict(items)
            out = OrderedDict(items)
            if "metadata" in node:
                out._metadata = build(node["metadata"])  # type: ignore[attr-defined]
            return out
        if "$tuple" in node:
            return tuple(build(v) for v in node["$tuple"])
        if "$float" in node:
            special = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
            if node["$float"] not in special:
                raise bad(node)
            return special[node["$float"]]
        if "$tensor" in node:
            if node["$tensor"] not in tensors:
                raise UsageError(f"{what}: tensor {node['$tensor']!r} of {SKELETON_FILENAME} "
                                 "is missing from the state's safetensors file")
            value = tensors[node["$tensor"]]
            if node.get("scalar"):
                value = value[()]
            return value
        raise bad(node)

    def _unkey(key: Any) -> Any:
        if key is None or isinstance(key, (bool, int, float, str)):
            return key
        raise bad(key)

    return build(skeleton["root"])


__all__ = ["STATE_VERSION", "SKELETON_FILENAME", "RESERVED_NAME", "encode", "decode", "dumps",
           "parse", "tensor_refs"]
