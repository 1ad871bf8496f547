#!/usr/bin/env bash
# Install ckptlake into ./.venv and run the main job on the embedded local lake:
# push a small example checkpoint, list it, pull it back, push again to show the dedup.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# editable_mode=compat: see scripts/test.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --config-settings editable_mode=compat -e .
ck=.venv/bin/ckptlake
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ckpt/step_1000/tokenizer"
.venv/bin/python - "$work/ckpt/step_1000" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(7)
with open(os.path.join(root, "model.bin"), "wb") as f:      # 48 MiB of "weights"
    f.write(rnd.randbytes(48 << 20))
with open(os.path.join(root, "optimizer.bin"), "wb") as f:  # 16 MiB of optimizer state
    f.write(rnd.randbytes(16 << 20))
for i in range(20):
    with open(os.path.join(root, "tokenizer", f"part{i}.json"), "w") as f:
        f.write('{"tokens": %d}\n' % rnd.randint(0, 1 << 30) * 50)
PY
set -x
$ck push "$work/ckpt/step_1000" demo/run-1/ckpt --step 1000 --metric loss=2.31 --meta lr=3e-4
$ck ls
$ck ls demo/run-1/ckpt
$ck pull demo/run-1/ckpt@step=1000 "$work/restore"
diff -r "$work/ckpt/step_1000" "$work/restore" && echo "restored bit-exact"
# step 2000: only the optimizer state changed -> only its chunk is uploaded
head -c 16777216 /dev/urandom > "$work/ckpt/step_1000/optimizer.bin"
$ck push "$work/ckpt/step_1000" demo/run-1/ckpt --step 2000 --metric loss=2.05 --alias best
$ck ls demo/run-1/ckpt
set +x
# Say what the demo left behind, and how to remove it (the lake is the one `ckptlake` picks:
# the embedded default unless --lake, $CKPTLAKE_LAKE or a config file says otherwise).
lake=$($ck ls --json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["lake"])')
echo
echo "demo: ckptlake is installed in ./.venv: run .venv/bin/ckptlake, or 'source .venv/bin/activate'"
echo "demo: the demo pushed demo/run-1/ckpt (two 64 MiB versions, 80 MiB stored) into the lake $lake"
case "$lake" in
    file://*) dir=${lake#file://}
        echo "demo: that lake now takes $(du -sh "$dir" | cut -f1) in $dir; if you pushed" \
             "nothing else there, remove it with: rm -rf '$dir'" ;;
esac
