#!/bin/sh
# Runs every target for RUNS executions (default 10 million), one at a time, under nice, and
# prints the final libFuzzer statistics of each. Usage: fuzz/run-all.sh [RUNS] [TARGET...]
set -u
cd "$(dirname "$0")"
runs=${1:-10000000}
[ $# -gt 0 ] && shift
targets=${*:-"networks_annotation plugin_config nad_config cni_result cache_entry"}
mkdir -p logs
for t in $targets; do
    mkdir -p "corpus/$t"
    nice -n 19 cargo fuzz run --sanitizer none -O "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$runs" -print_final_stats=1 > "logs/$t.log" 2>&1
    echo "$t exit=$? $(grep -E 'stat::number_of_executed_units' "logs/$t.log")"
done
