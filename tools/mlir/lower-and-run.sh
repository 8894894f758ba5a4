#!/usr/bin/env bash
# Lowers a model exported by `dnnc export-mlir --runner-entry` (tosa or linalg) with MLIR 22's own tools
# (tosa -> linalg -> bufferized loops -> LLVM) and runs it with mlir-runner; each output
# is printed by printMemrefF32.
#   usage: tools/mlir/lower-and-run.sh MODEL.mlir
# LLVM_BIN (default /usr/lib/llvm-22/bin) and LLVM_LIB (default /usr/lib/llvm-22/lib)
# say where MLIR 22 is.
set -euo pipefail
in=${1:?usage: $0 MODEL.mlir}
bin=${LLVM_BIN:-/usr/lib/llvm-22/bin}
lib=${LLVM_LIB:-/usr/lib/llvm-22/lib}
"$bin/mlir-opt" "$in" \
  --pass-pipeline="builtin.module(func.func(tosa-to-linalg-named,tosa-to-linalg,tosa-to-arith,tosa-to-tensor))" |
  "$bin/mlir-opt" --one-shot-bufferize="bufferize-function-boundaries" \
    --buffer-deallocation-pipeline --test-lower-to-llvm |
  "$bin/mlir-runner" -O3 -e dnnc_entry -entry-point-result=void \
    -shared-libs="$lib/libmlir_runner_utils.so,$lib/libmlir_c_runner_utils.so"
