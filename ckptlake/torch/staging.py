"""`dcp.async_save` staging for LakeWriter: the copy of the state the upload reads while the
training loop goes on.

Why not torch's default (BlockingAsyncStager): the loop is blocked for the whole copy, and for
a CPU DTensor torch's `_create_cpu_state_dict` first deep-copies the tensor (a full copy into
fresh, page-faulting memory) only to replace its local tensor with a new empty one that
`_copy_state_dict` then fills: two copies, single-threaded under OMP_NUM_THREADS=1.  Here each
tensor is copied once, by several threads in slices (torch's copy_ releases the GIL), into
buffers that are either new or, with a cache, kept from the previous save of the artifact
(reused memory does not page-fault again); a new buffer's pages are mapped by one madvise
call per slice before its copy, not one fault per page (`populate`).  Measured in
docs/benchmarks.md ("async_save staging").

Safety: the staged state never aliases a tensor of the caller's: every tensor (plain, a
Parameter, a DTensor's local shard) is copied into a buffer only this module hands out, and a
cached buffer set is handed out again only after the save that used it released it (the
writer does once its rank's files are written), so two overlapping async saves of one
artifact never share buffers.  Non-tensor values are deep-copied (immutable ones passed
as they are), as torch's stager does.  Anything else torch may hold in a state dict (ShardedTensor, other tensor subclasses)
makes the whole state go through torch's own stager instead.
"""
from __future__ import annotations

import copy
import os
import threading
from typing import Any, Callable

from ..transfer.pool import Executor, cancel, wait_result

COPY_THREADS = max(1, min(4, os.cpu_count() or 1))
SLICE_BYTES = 8 << 20  # a large tensor is copied in slices of this size, one per task

Path = tuple[Any, ...]

# values staged as they are: nothing can change them after async_save returns
_IMMUTABLE = (bool, int, float, complex, str, bytes)

# artifact -> the buffer set of its last save, once released (at most one set per artifact:
# the memory a cache costs is one copy of the rank's state)
_CACHE: dict[str, dict[Path, Any]] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache(artifact: str | None = None) -> None:
    """Free the cached staging buffers of `artifact` (None: of every artifact)."""
    with _CACHE_LOCK:
        if artifact is None:
            _CACHE.clear()
        else:
            _CACHE.pop(artifact, None)


class _Unsupported(Exception):
    pass


class Staged:
    """One save's staged copy: `state` for torch, `release()` once nothing reads it."""

    def __init__(self, state: Any, buffers: dict[Path, Any], cache_key: str | None) -> None:
        self.state, self._buffers, self._key = state, buffers, cache_key

    def release(self) -> None:
        buffers, self._buffers = self._buffers, None
        if buffers is not None and self._key is not None:
            with _CACHE_LOCK:
                _CACHE[self._key] = buffers


def stage(state: dict[str, Any], *, cache_key: str | None,
          fallback: Callable[[dict[str, Any]], Any], threads: int = COPY_THREADS) -> Staged:
    """A copy of `state` whose tensors are on the CPU in memory nobody else holds.
    cache_key: reuse (and later keep) the buffers of the previous save under this key."""
    import torch

    with _CACHE_LOCK:
        old = _CACHE.pop(cache_key, None) if cache_key is not None else None
    old = old or {}
    buffers: dict[Path, Any] = {}
    copies: list[tuple[Any, Any]] = []

    def buffer(path: Path, src: Any) -> Any:
        b = old.get(path)
        fresh = b is None or b.shape != src.shape or b.dtype != src.dtype
        if fresh:
            b = torch.empty(src.shape, dtype=src.dtype)
        buffers[path] = b
        copies.append((b, src.detach(), fresh))
        return b

    def walk(v: Any, path: Path) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, path + (k,)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, path + (i,)) for i, x in enumerate(v)]
        if isinstance(v, tuple) and type(v) is tuple:
            return tuple(walk(x, path + (i,)) for i, x in enumerate(v))
        if not isinstance(v, torch.Tensor):
            if v is None or type(v) in _IMMUTABLE:
                return v
            # Any other value is copied now, as torch's stager deep-copies what it does not
            # know: passed by reference, a counter or numpy statistic the loop changed after
            # async_save returned was saved with its later value beside this step's tensors.
            try:
                return copy.deepcopy(v)
            except Exception as exc:  # noqa: BLE001 - torch's stager reports it its own way
                raise _Unsupported(type(v).__name__) from exc
        if type(v) in (torch.Tensor, torch.nn.Parameter):
            return buffer(path, v)
        from torch.distributed.tensor import DTensor

        if type(v) is DTensor:
            local = buffer(path, v.to_local())
            return DTensor.from_local(local, v.device_mesh, v.placements, run_check=False,
                                      shape=v.shape, stride=v.stride())
        raise _Unsupported(type(v).__name__)

    try:
        staged = walk(state, ())
    except _Unsupported:
        return Staged(fallback(state), {}, None)
    copy_all(copies, threads)
    return Staged(staged, buffers, cache_key)


def copy_all(pairs: list[tuple[Any, Any, bool]], threads: int) -> None:
    """dst.copy_(src) for every (dst, src, dst_is_fresh); large contiguous tensors in slices,
    by `threads`; a fresh destination slice is populated first (see `populate`)."""
    jobs: list[tuple[Any, Any, bool]] = []
    for dst, src, fresh in pairs:
        size = src.numel() * src.element_size()
        if (size >= 2 * SLICE_BYTES and src.dim() > 0 and src.is_contiguous()
                and dst.is_contiguous() and src.device.type == "cpu"):
            d, s = dst.view(-1), src.view(-1)
            step = max(1, SLICE_BYTES // src.element_size())
            jobs.extend((d[i:i + step], s[i:i + step], fresh) for i in range(0, d.numel(), step))
        else:
            jobs.append((dst, src, fresh and size >= SLICE_BYTES))

    def run(job: tuple[Any, Any, bool]) -> None:
        d, s, fresh = job
        if fresh:
            populate(d)
        d.copy_(s)

    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            run(job)
        return
    with Executor(max_workers=min(threads, len(jobs)),
                            thread_name_prefix="ckptlake-stage") as pool:
        futures = [pool.submit(run, job) for job in jobs]
        try:
            for fut in futures:
                wait_result(fut)  # (not pool.map: pool.Completions says why)
        except BaseException:
            cancel(futures)
            raise


_MADV_POPULATE_WRITE = 23  # Linux >= 5.14
_madvise: Any = None


def populate(t: Any) -> None:
    """Map the pages of a fresh contiguous CPU tensor's memory in one call (Linux
    MADV_POPULATE_WRITE) instead of one page fault per 4 KiB page during the copy.  Why:
    the faults are most of what the first `dcp.async_save` blocks for (docs/benchmarks.md,
    "async_save staging").  Nothing on other systems or older kernels (the copy faults them)."""
    global _madvise
    if _madvise is None:
        _madvise = _libc_madvise()
    if not _madvise or not t.is_contiguous():
        return
    page = os.sysconf("SC_PAGE_SIZE")
    start, end = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    first, last = -(-start // page) * page, end // page * page
    if last > first and _madvise(first, last - first, _MADV_POPULATE_WRITE) != 0:
        _madvise = False  # not supported here: stop trying


def _libc_madvise() -> Any:
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn
