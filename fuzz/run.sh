#!/usr/bin/env bash
# Runs each fuzz target in turn for SECS seconds (default 600), one process at a time and
# niced: ./run.sh [SECS] [TARGET...]. Build first:
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O -a -s none)
# New inputs go to fuzz/corpus/<target> (not committed); crashes to fuzz/artifacts/<target>/.
# Each target's final stats (execs, coverage) are appended to fuzz/runs.txt.
set -u
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=${*:-sip sdp rtp info wav config}
bin=target/x86_64-unknown-linux-gnu/release
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
    start=$(date +%s)
    nice -n 15 "$bin/$t" "corpus/$t" "seeds/$t" "${dict[@]}" \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$t/" >"logs-$t.txt" 2>&1
    rc=$?
    end=$(date +%s)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs-$t.txt" | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "logs-$t.txt" | tail -1)
    echo "$(date -u +%FT%TZ) target=$t secs=$((end - start)) exit=$rc execs=${execs:-?} ${cov:-} crashes=$(ls "artifacts/$t" | wc -l)" | tee -a runs.txt
done
