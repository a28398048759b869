#!/usr/bin/env bash
# How long `cluster downgrade 1` takes (every replica: hold, the version lowered through the
# log, a new log segment, a snapshot in the older format, the log purged), and how soon the
# leader raises the version again after `--cancel`, on three replicas of the release build on
# loopback holding JOBS jobs of SHARDS shards (default 1000 × 4):
#
#   cargo build --release && JOBS=1000 SHARDS=100 scripts/upgrade-timings.sh
set -u
cd "$(dirname "$0")/.."
R=$PWD/target/release/dispatcher
VC=$(mktemp -d)
P="1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"
mkdir -p "$VC"
for i in 1 2 3; do $R serve --id $i --listen 127.0.0.1:710$i --data-dir $VC/d$i --peers $P --insecure >> $VC/r$i.log 2>&1 & echo $! > $VC/r$i.pid; done
export DISPATCHER_ENDPOINTS=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 DISPATCHER_INSECURE=true
sleep 3
for i in $(seq 1 ${JOBS:-1000}); do $R submit --name j$i --shards ${SHARDS:-4} -- true >/dev/null; done
version() { $R cluster status --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster_version"])'; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
for round in 1 2 3 4 5; do
  t0=$(ms); $R cluster downgrade 1 --output json > $VC/dg.json; t1=$(ms)
  $R cluster downgrade --cancel >/dev/null; t2=$(ms)
  while [ "$(version)" != 2 ]; do sleep 0.02; done; t3=$(ms)
  echo "round $round: downgrade $((t1-t0)) ms (snapshot at $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["replicas"][0]["snapshot_index"])' "$VC/dg.json")), raised again $((t3-t2)) ms after cancel"
done
ls -l "$VC"/d1/snapshots/ | tail -1
for i in 1 2 3; do kill $(cat $VC/r$i.pid); done
rm -rf "$VC"
