#!/usr/bin/env bash
# Build every cargo-fuzz target in fuzz/ and run each one briefly.
# CI calls this; locally: FUZZ_SECONDS=120 scripts/fuzz-smoke.sh [TARGET...]
#
# cargo-fuzz needs nightly compiler flags (sanitizers, -Z options); the
# stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-25}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cargo fuzz build
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    dirs=("corpus/$t")
    if [ -d "seeds/$t" ]; then
        dirs+=("seeds/$t")
    fi
    echo "fuzz-smoke: $t for ${seconds}s"
    log="$(mktemp)"
    # The first directory collects new inputs; seeds are only read.
    if ! cargo fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        rm -f "$log"
        echo "fuzz-smoke: $t FAILED (the crashing input is in fuzz/artifacts/$t/)"
        exit 1
    fi
    grep -a -E 'Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
    rm -f "$log"
done
echo "fuzz-smoke: all targets passed"
