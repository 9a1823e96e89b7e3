#!/bin/sh
# Runs every target for RUNS executions (default 10 million) or SECONDS of wall time (default:
# no limit), one at a time, under nice, inputs up to 1 KiB (larger ones only slow the search: the
# annotation and config parsers are linear). Appends each run's execution count to
# logs/summary.txt. Usage: fuzz/run-all.sh [RUNS] [SECONDS] [TARGET...]
set -u
cd "$(dirname "$0")"
runs=${1:-10000000}
secs=${2:-0}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
targets=${*:-"networks_annotation plugin_config nad_config cni_result cache_entry sriov_config"}
mkdir -p logs
for t in $targets; do
    mkdir -p "corpus/$t"
    nice -n 10 cargo fuzz run --sanitizer none -O "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$runs" -max_total_time="$secs" -max_len=1024 -print_final_stats=1 \
        > "logs/$t.log" 2>&1
    rc=$?
    n=$(grep -E 'stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}')
    echo "$(date -u +%FT%TZ) $t exit=$rc executions=${n:-?}" | tee -a logs/summary.txt
done
