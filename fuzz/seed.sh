#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets in fuzz/corpus/<target>/ from what the
# repository already holds: the lit tests and zoo models (.dnn), the ONNX oracle models,
# the .npy golden files, the bundled .safetensors, the pipelines of the lit tests' RUN
# lines, ESCALATE programs that dnnc emits, and the device files.
# Usage: fuzz/seed.sh [DNNC]   (DNNC: a built dnnc binary; default target/release/dnnc)
set -euo pipefail
cd "$(dirname "$0")/.."
dnnc=${1:-target/release/dnnc}
out=fuzz/corpus
rm -rf "$out"
mkdir -p "$out"/{frontend,onnx,npy,safetensors,pipeline,escalate_asm,devices,plan}
n=0
seed() { # seed TARGET FILE
  cp "$2" "$1/$(basename "$(dirname "$2")")-$(basename "$2")-$((n++))"
}
for f in $(git ls-files 'lit-tests/*.dnn' 'models/*.dnn'); do seed "$out/frontend" "$f"; done
for f in $(git ls-files '*.onnx'); do seed "$out/onnx" "$f"; done
for f in $(git ls-files '*.npy' | head -200); do seed "$out/npy" "$f"; done
for f in $(git ls-files '*.safetensors'); do seed "$out/safetensors" "$f"; done
for f in passes/src/accpar/devices.toml; do seed "$out/devices" "$f"; done
printf 'tpu-v2:2,tpu-v3:2\n' > "$out/devices/array"
# Pipelines: every -p/--pipeline argument of the lit tests' RUN lines.
grep -rhoE -- "(-p|--pipeline) +('[^']*'|\"[^\"]*\"|[^ ]+)" lit-tests | sed -E "s/^(-p|--pipeline) +//; s/^['\"]//; s/['\"]$//" \
  | sort -u | while read -r p; do printf '%s' "$p" > "$out/pipeline/p$((n++))"; done
# ESCALATE programs, text and binary, of a small decomposed model.
if [ -x "$dnnc" ]; then
  tmp=$(mktemp -d)
  "$dnnc" escalate models/lenet5.dnn --emit asm -o "$tmp/lenet5.asm" >/dev/null
  "$dnnc" escalate models/lenet5.dnn --emit bin -o "$tmp/lenet5.bin" >/dev/null
  # The fuzzer mutates small inputs best: the first instructions of each stream too.
  head -c 4096 "$tmp/lenet5.bin" > "$tmp/lenet5-head.bin"
  head -n 60 "$tmp/lenet5.asm" > "$tmp/lenet5-head.asm"
  for f in "$tmp"/*; do [ -f "$f" ] && seed "$out/escalate_asm" "$f"; done
  rm -rf "$tmp"
  # Partition plans: every strategy of two small models.
  for model in lenet5 resnet18_cifar; do
    for s in dp owt hypar accpar; do
      "$dnnc" partition "models/$model.dnn" --devices tpu-v2:2,tpu-v3:2 --batch 64 --strategy "$s" \
        --emit-plan "$out/plan/$model-$s.json" >/dev/null 2>&1
    done
  done
fi
for t in "$out"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
