"""HF transformers: every checkpoint the `Trainer` saves becomes a lake version; resume from one.

    from ckptlake.torch import LakeTrainerCallback, pull_for_resume
    trainer = Trainer(..., callbacks=[LakeTrainerCallback(lake, "gpt2/run-7/ckpt")])
    trainer.train()                                     # checkpoint-N -> version at step N
    path = pull_for_resume(lake, "gpt2/run-7/ckpt@latest", args.output_dir)
    trainer.train(resume_from_checkpoint=path)

The callback hands each `output_dir/checkpoint-<step>` to a `Checkpointer` in `on_save`, which
the Trainer calls right after it wrote the directory (and after `save_total_limit` rotation
deleted older ones).  The checkpointer snapshots the directory there, in the training thread,
so the Trainer may delete or overwrite it at once, and uploads it in its background thread
while training goes on.  Snapshots are hard links when the filesystem has them: the Trainer
writes every checkpoint into a fresh directory and never rewrites it, which is exactly when
links are safe (a file rewritten in place anyway fails that upload loudly: see
checkpointer.py, "Snapshots").  A failed upload is raised by the next `on_save` or by
`on_train_end` (which waits for every upload), i.e. out of `trainer.train()`: a checkpoint
that did not reach the lake never goes unnoticed.

Imports transformers: `import ckptlake.torch` does not import this module until one of its
names is used.
"""
from __future__ import annotations

import errno
import inspect
import math
import os
import shutil
import stat
import tempfile
import uuid
from typing import TYPE_CHECKING, Any, Mapping, Sequence

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - the [hf] extra installs it
    raise ImportError("ckptlake.torch's transformers integration needs transformers and "
                      "accelerate: pip install 'ckptlake[hf]'") from exc

from ..checkpointer import SNAPSHOT_DIRNAME, Checkpointer, check_options
from ..core import catalog
from ..core.pull import _needed_dirs
from ..core.values import check_arg, check_inputs
from ..errors import AccessDenied, Conflict, UsageError
from ..format.refs import validate_artifact
from ._args import check_lake, check_version_fields

if TYPE_CHECKING:
    from ..format.manifest import Manifest
    from ..lake import Lake
    from ..results import PushResult

TRAINER_STATE_FILE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME
CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR

__all__ = ["LakeTrainerCallback", "NotATrainerCheckpoint", "pull_for_resume"]


class NotATrainerCheckpoint(UsageError):
    """The version exists but has no trainer_state.json: the Trainer cannot resume from it."""


def _open_lake(lake: "Lake | str") -> "Lake":
    if isinstance(lake, str):
        import ckptlake

        return ckptlake.open(lake)
    return lake


class LakeTrainerCallback(TrainerCallback):
    """Push every checkpoint the transformers `Trainer` saves to `artifact`, in the background.

    Each `checkpoint-<step>` directory becomes one version with the Trainer's global step as
    its step and, as its metrics, the latest value of every number of training in
    `state.log_history` (loss, grad_norm, learning_rate, epoch ...: a value logged at an
    earlier step stays until it is logged again; non-finite ones are left out), and the
    evaluation's (eval_*) only if it evaluated at that very step: a checkpoint that was not
    evaluated has no eval_loss.  So `@step=N`, `min:eval_loss` and the retention rules
    (`keep_best`) work on Trainer checkpoints.

    lake: a Lake, or a lake URL to open.  metadata / aliases: added to every version.
    Other keyword options go to `Lake.checkpointer` (keep_last, retention, on_busy,
    parents, inputs, exit_timeout, ...); `snapshot` defaults to "link" where the output
    directory's filesystem has hard links, else "copy".

    Lake retention (`keep_last`, the policy file) is separate from the Trainer's
    `save_total_limit`, which only deletes local directories: the lake keeps what its own
    rules keep.  In a distributed run only the world's process zero pushes, so the directory
    must be complete there (one node, or a shared filesystem); hyperparameter-search runs
    (which save under output_dir/run-*) are not supported.
    """

    def __init__(self, lake: "Lake | str", artifact: str, *,
                 metadata: Mapping[str, str] | None = None, aliases: Sequence[str] = (),
                 **checkpointer_options: Any) -> None:
        # checked here: the first on_save, maybe hours into the run, would find them bad
        validate_artifact(artifact)
        check_lake(lake, url=True)
        _, metadata, self.aliases = check_version_fields(None, metadata, aliases)
        self.lake = _open_lake(lake)
        self.artifact = artifact
        self.metadata = {"framework": f"transformers {transformers.__version__}", **metadata}
        self.options = dict(checkpointer_options)
        try:  # a misspelt option fails here, not after the first checkpoint of a long run
            inspect.signature(Checkpointer).bind(self.lake, artifact, **self.options)
        except TypeError as exc:
            raise UsageError(f"LakeTrainerCallback: {exc}",
                             hint="options are Lake.checkpointer's (keep_last, on_busy, ...)"
                             ) from None
        # Their values too (the checkpointer is made at on_train_begin); only the snapshot
        # mode, when not given, waits for output_dir.
        checked = {k: v for k, v in self.options.items()
                   if k in inspect.signature(check_options).parameters
                   and not (k == "snapshot" and v is None)}
        check_options(**checked)
        if "inputs" in self.options:
            check_inputs(self.options["inputs"])
        #: Results of every committed checkpoint, over all `train()` calls.
        self.results: list[PushResult] = []
        self._ck: Checkpointer | None = None
        self._seen = 0  # results of the current checkpointer already in self.results

    def __repr__(self) -> str:
        return f"LakeTrainerCallback({self.lake.url!r}, {self.artifact!r})"

    # ---- Trainer events ----------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Made here, so that a bad option value fails before the first training step.
        if state.is_world_process_zero:
            self._checkpointer(args.output_dir)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        step = int(state.global_step)
        path = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{step}")
        if not os.path.isdir(path):
            raise UsageError(f"the Trainer's checkpoint {path} does not exist after on_save",
                             hint="LakeTrainerCallback pushes output_dir/checkpoint-<step>; "
                                  "hyperparameter-search runs are not supported")
        ck = self._checkpointer(args.output_dir)
        try:
            # Raises the failure of an earlier upload, if one failed (checkpointer.py).
            ck.save(path, step=step, metrics=latest_metrics(state.log_history or [], step),
                    metadata=self.metadata, aliases=self.aliases)
        except Exception as exc:
            # It ends training: on_train_end will not come to close the checkpointer, which
            # would leave its thread and the snapshot directory in output_dir behind.
            # Closing waits for the uploads still queued; a failure of theirs is logged, the
            # one raised here wins (Checkpointer.__exit__).
            self._ck = None
            try:
                ck.__exit__(type(exc), exc, exc.__traceback__)
            finally:
                self._collect(ck)
            raise

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    # ---- explicit control --------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> list["PushResult"]:
        """Block until every pending upload is committed; raise the first background failure.
        Returns the results of all checkpoints committed so far."""
        if self._ck is not None:
            self._ck.wait(timeout)
            self._collect()
        return list(self.results)

    def close(self) -> list["PushResult"]:
        """Wait for pending uploads and stop the background thread (a later save starts a new
        one); raise the first background failure.  `on_train_end` calls it."""
        ck, self._ck = self._ck, None
        if ck is not None:
            try:
                ck.close()
            finally:
                self._collect(ck)
        return list(self.results)

    # ---- internals ---------------------------------------------------------------------------

    def _checkpointer(self, output_dir: str) -> "Checkpointer":
        if self._ck is None:
            options = dict(self.options)
            chosen = options.get("snapshot") is None
            if chosen:
                # Linked from output_dir/checkpoint-N into where the snapshots go: a
                # snapshot_dir on another filesystem failed the first save, hours in.
                base = options.get("snapshot_dir") or os.path.join(output_dir,
                                                                   SNAPSHOT_DIRNAME)
                options["snapshot"] = "link" if _can_hard_link(output_dir, os.fspath(base)) \
                    else "copy"
            self._ck = self.lake.checkpointer(self.artifact, **options)
            # A mode chosen here, not by the user: a link that fails after all (a checkpoint
            # on another mount) copies instead of failing the save.
            self._ck._link_falls_back = chosen
            self._seen = 0
        return self._ck

    def _collect(self, ck: "Checkpointer | None" = None) -> None:
        ck = ck or self._ck
        if ck is None:
            return
        new = ck.results[self._seen:]
        self._seen = len(ck.results)
        self.results.extend(new)


def latest_metrics(log_history: Sequence[Mapping[str, Any]], step: int) -> dict[str, float]:
    """What a checkpoint's version records as its metrics: the latest value of every finite
    number of training logged at or before `step`, and those of an evaluation logged at
    `step` itself ("step" and non-numbers left out).

    Why evaluations are not carried forward: a checkpoint that was never evaluated would get
    the eval_loss of an earlier one, and `@min:eval_loss` or keep_best (ties go to the newest)
    would pick it over the checkpoint that earned the score."""
    out: dict[str, float] = {}
    for entry in log_history:
        logged_at = entry.get("step")
        if isinstance(logged_at, int) and logged_at > step:
            continue
        evaluated = _evaluation_prefixes(entry)
        for key, value in entry.items():
            if key == "step" or not isinstance(key, str) or not key:
                continue
            if key.startswith(evaluated):
                if logged_at != step or isinstance(logged_at, bool):
                    out.pop(key, None)  # an older evaluation: not this checkpoint's
                    continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                out[key] = float(value)
            else:
                out.pop(key, None)  # a nan loss is the latest: don't report an older one
    return out


def _evaluation_prefixes(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The key prefixes of evaluation metrics in a log_history entry: "eval_", and the
    `metric_key_prefix` of an `evaluate()` that used another, known by the "<prefix>_runtime"
    every evaluation logs ("train_runtime" is training's summary)."""
    prefixes = {"eval_"}
    for key in entry:
        if isinstance(key, str) and key.endswith("_runtime") and key != "train_runtime":
            prefixes.add(key[:-len("runtime")])
    return tuple(prefixes)


def _can_hard_link(directory: str, into: str | None = None) -> bool:
    """Whether a file made in `directory` can be hard-linked into `into` (default: itself).
    Directories it had to make for the probe are removed again (empty, as they were not)."""
    made: list[str] = []
    try:
        os.makedirs(directory, exist_ok=True)
        target = into if into is not None else directory
        missing = os.path.abspath(target)
        while not os.path.lexists(missing):
            made.append(missing)
            missing = os.path.dirname(missing)
        os.makedirs(target, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ckptlake-link-", dir=directory)
    except OSError:
        _remove_dirs(made)
        return False
    os.close(fd)
    link = os.path.join(target, f"{os.path.basename(probe)}-{uuid.uuid4().hex[:8]}")
    try:
        os.link(probe, link)
        os.unlink(link)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)
        _remove_dirs(made)


def _remove_dirs(made: list[str]) -> None:
    for path in made:  # deepest first
        try:
            os.rmdir(path)
        except OSError:
            break


def pull_for_resume(lake: "Lake | str", ref: str, dest: str | os.PathLike[str], *,
                    force: bool = False) -> str:
    """Pull the Trainer checkpoint `ref` into `dest/checkpoint-<step>` and return that path,
    for `trainer.train(resume_from_checkpoint=path)` (with `dest` the Trainer's output_dir,
    `resume_from_checkpoint=True` finds it too, when it is the newest there).

    The ref is resolved once: a version pushed meanwhile cannot mix in.  NotFound names a ref
    that does not exist; NotATrainerCheckpoint (exit code 2) a version without
    trainer_state.json.  A destination holding other files is a Conflict unless `force`;
    files already there and identical are kept (a re-run downloads nothing).  With `force`,
    files that differ are replaced, and those the version lacks are removed once the version
    is in place: the Trainer loads scaler.pt, rng_state_<rank>.pth and the like whenever they
    are present, so one left over from another run would resume a different state silently
    (a plain pull leaves such files alone).  A pull that fails removes nothing.
    """
    check_lake(lake, url=True)
    check_arg("dest", dest, "path")
    check_arg("force", force, "bool")
    lake = _open_lake(lake)
    m = catalog.resolve(lake.store, ref)
    what = f"{m.artifact}@v{m.version}"
    if not any(f.path == TRAINER_STATE_FILE and f.symlink is None for f in m.files):
        raise NotATrainerCheckpoint(
            f"{what} (from {ref}) is not a transformers Trainer checkpoint: it has no "
            f"{TRAINER_STATE_FILE}",
            hint="resume from versions pushed by ckptlake.torch.LakeTrainerCallback")
    name = f"{CHECKPOINT_PREFIX}-{m.step}" if m.step is not None \
        else f"{CHECKPOINT_PREFIX}-v{m.version}"
    path = os.path.join(os.fspath(dest), name)
    extra = _not_in_version(path, m) if m.kind == "dir" else []
    if extra and not force:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise Conflict(f"{extra[0]} is not part of {what}{more}: the Trainer may load it "
                       "when resuming", hint="pass force=True to remove what the version "
                                             "lacks, or pull into an empty directory")
    lake.pull(what, path, force=force)
    if extra:
        # What the version now holds, as the file system resolves it: a link in `path` to a
        # directory inside it is that directory to the pull, which placed the version's files
        # in the link's target, so the target is no leftover (removed, it took them along).
        placed = [os.path.realpath(os.path.join(path, *p.split("/")))
                  for p in {*(f.path for f in m.files), *_needed_dirs(m)}]
        for leftover in extra:
            real = os.path.realpath(leftover)
            if not any(r == real or r.startswith(real.rstrip(os.sep) + os.sep) for r in placed):
                _remove(leftover)
    return path


def _not_in_version(root: str, m: "Manifest") -> list[str]:
    """What under the directory `root` the version `m` does not have (files, links, whole
    directories), files first: the error names the first, and a stray scaler.pt says more
    than a directory.  The pull's own staging directories are no leftovers (an interrupted
    pull's re-run resumes from them); what the version has at a path, the pull compares."""
    from ..core.pull import _TAG

    paths = {e.path for e in m.files}
    dirs = set(_needed_dirs(m))
    extra: list[str] = []

    def visit(rel: str) -> None:
        try:
            names = sorted(os.listdir(os.path.join(root, *rel.split("/")) if rel else root))
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing there yet, or a file where the version has a directory
        for name in names:
            sub = f"{rel}/{name}" if rel else name
            if not rel and name.startswith(_TAG):
                continue
            if sub in paths:
                continue
            full = os.path.join(root, *sub.split("/"))
            if sub in dirs:
                if not os.path.islink(full):  # a link there: the pull decides about it
                    visit(sub)
                continue
            extra.append(full)

    visit("")
    return sorted(extra, key=lambda p: (os.path.isdir(p) and not os.path.islink(p), p))


def _remove(path: str) -> None:
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise AccessDenied(f"cannot remove {exc.filename or path}, which the pulled version "
                               f"lacks: {exc.strerror}",
                               hint="remove it yourself before resuming: the Trainer would "
                                    "load it") from None
        raise
