#!/usr/bin/env bash
# Start a local cluster in the foreground: three replicas on 127.0.0.1:7001-7003 and two
# TaskManagers (4 slots each). Data lives in ${DISPATCHER_DATA:-./data}; Ctrl-C stops
# everything; running the script again resumes the same cluster from its data directories.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/dispatcher
data=${DISPATCHER_DATA:-./data}
peers="1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
endpoints="127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
mkdir -p "$data"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for id in 1 2 3; do
  "$bin" serve --id "$id" --listen "127.0.0.1:700$id" --data-dir "$data/replica-$id" \
    --peers "$peers" 2> >(sed "s/^/[replica $id] /" >&2) &
  pids+=($!)
done
for id in 1 2; do
  "$bin" taskmanager --id "tm-$id" --slots 4 --work-dir "$data/tm-$id" --endpoints "$endpoints" \
    2> >(sed "s/^/[tm-$id] /" >&2) &
  pids+=($!)
done
echo "cluster starting; try: $bin cluster status --endpoints $endpoints" >&2
wait
