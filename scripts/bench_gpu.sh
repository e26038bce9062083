#!/bin/sh
# The GPU table of README (issue 9), prepared to run in about 5 minutes on one GPU:
# vit-b-32 and vit-b-16 at batch 256 in bf16, CLIP and FLIP in eager mode, then CLIP compiled.
# Writes markdown and JSON into the folder given (default bench-gpu/).
#     sh scripts/bench_gpu.sh bench-gpu
set -e
out="${1:-bench-gpu}"
mkdir -p "$out"
common="--archs vit-b-32,vit-b-16 --precisions bf16 --batch-sizes 256 --warmup 3 --windows 3 --steps-per-window 5
        --eval-batch 256 --tokenizer-texts 2000 --data-images 16"
python scripts/bench.py $common --strategies clip,flip --json "$out/eager.json" --markdown "$out/eager.md"
python scripts/bench.py $common --strategies clip --compile --json "$out/compiled.json" --markdown "$out/compiled.md"
cat "$out/eager.md" "$out/compiled.md"
