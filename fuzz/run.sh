#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (what `cargo fuzz
# build` does, on the stable toolchain: sancov, --cfg fuzzing, debug assertions so that
# overflow is a crash) and runs each for a bounded time on its seed corpus.
# Usage: fuzz/run.sh SECONDS [TARGET...]    (default: every target; fuzz/seed.sh first;
# FUZZ_SEED sets libFuzzer's seed, 1 by default so that a CI run can be repeated;
# FUZZ_RUNS=N stops each target after N executions instead, SECONDS 0 then meaning no
# time limit; FUZZ_MAX_LEN caps the input length)
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run; make it a
# regression test (fuzz/regressions/<target>/, replayed by `cargo test -p dnnc-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frontend onnx npy safetensors pipeline escalate_asm devices plan)
export RUSTFLAGS="--cfg fuzzing -Cdebug-assertions -Coverflow-checks -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares"
# An explicit --target keeps the instrumentation out of build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked -p dnnc-fuzz --target "$host" --target-dir target/fuzz \
  $(printf -- '--bin %s ' "${targets[@]}")
declare -A dict=([frontend]=dnn [pipeline]=pipeline [devices]=devices [escalate_asm]=escalate [plan]=plan)
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  args=(-max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1)
  [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
  [ -n "${FUZZ_MAX_LEN:-}" ] && args+=(-max_len="$FUZZ_MAX_LEN")
  [ -n "${dict[$t]:-}" ] && args+=(-dict="fuzz/dict/${dict[$t]}.dict")
  echo "== fuzz $t for ${seconds}s${FUZZ_RUNS:+ or $FUZZ_RUNS executions}"
  if ! "target/fuzz/$host/release/$t" "${args[@]}" "fuzz/corpus/$t" 2> "fuzz/artifacts/$t.log"; then
    status=1
    tail -40 "fuzz/artifacts/$t.log"
  fi
  # Executions, peak memory and the final coverage line.
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "fuzz/artifacts/$t.log" | sort -u || true
  grep -E ' cov: ' "fuzz/artifacts/$t.log" | tail -1 || true
done
exit $status
