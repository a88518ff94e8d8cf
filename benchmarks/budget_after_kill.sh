#!/usr/bin/env bash
# Whether a search killed mid-way and resumed keeps to its --time-budget: a 3-minute search of DATA (lite0 from
# WEIGHTS), `kill -9` of its driver KILL_AT seconds in, then the same command with --resume; prints both runs' wall
# times and what ended the search.
#   benchmarks/budget_after_kill.sh DATA/hymenoptera WEIGHTS [OUT] [KILL_AT]
set -euo pipefail
data=$1 weights=$2 out=${3:-$(mktemp -d)} kill_at=${4:-100}
python=${PYTHON:-.venv/bin/python}
args=("$data" --backbones tf_efficientnet_lite0 --weights "$weights" --time-budget 3m --out "$out" --dashboard-port 0)
start=$(date +%s.%N)
setsid "$python" -m search "${args[@]}" > "$out/killed.log" 2>&1 &
sleep "$kill_at"
kill -9 $! || true
sleep 3
killed=$(date +%s.%N)
task=$(basename "$data")
"$python" -c "import json, sys; d = json.load(open(sys.argv[1])); print('elapsed_s saved at the kill', d.get('elapsed_s'))" \
    "$out/$task/search.json"
"$python" -m search "${args[@]}" --resume > "$out/resumed.log" 2>&1
end=$(date +%s.%N)
echo "first run $(echo "$killed - $start" | bc) s (killed), resumed run $(echo "$end - $killed" | bc) s," \
    "both $(echo "$end - $start" | bc) s"
grep -E "search ended by|Saved model" "$out/$task/best.md"
