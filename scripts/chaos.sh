#!/usr/bin/env bash
# Run the chaos suite on a release build: faults against a local cluster while clients work,
# then the checkers. All options go to `dispatcher chaos`, e.g.
#   scripts/chaos.sh --duration 1800 --replicas 5
#   scripts/chaos.sh --seed 1700000000 --faults kill-leader,split
# The report (and report.json, history.jsonl, executions.log, replica logs) stay in --dir.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec target/release/dispatcher chaos "$@"
