#!/usr/bin/env bash
# Start a local cluster in the foreground: three replicas on 127.0.0.1:7001-7003 and two
# TaskManagers (4 slots each), with mutual TLS and tokens like a real deployment. Data lives in
# ${DISPATCHER_DATA:-./data}: certificates in tls/, the admin token in admin.token. Ctrl-C
# stops everything; running the script again resumes the same cluster from its data.
# INSECURE=1 runs without TLS and tokens instead (development on one machine only).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/dispatcher
data=${DISPATCHER_DATA:-./data}
peers="1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
endpoints="127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
mkdir -p "$data"
if [ "${INSECURE:-0}" = 1 ]; then
  serve_security=(--insecure)
  tm_security=(--insecure)
  client_env="export DISPATCHER_INSECURE=true"
else
  if [ ! -f "$data/tls/ca.pem" ]; then
    "$bin" certs init --out "$data/tls" --replicas 1,2,3 --taskmanagers tm-1,tm-2 --clients admin
  fi
  if [ ! -f "$data/admin.token" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | sed 's/^/dsp_/' >"$data/admin.token")
  fi
  serve_security=(--tls-dir "$data/tls" --bootstrap-token-file "$data/admin.token")
  tm_security=(--tls-dir "$data/tls")
  client_env="export DISPATCHER_TLS_DIR=$data/tls DISPATCHER_TOKEN=\$(cat $data/admin.token)"
fi
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for id in 1 2 3; do
  "$bin" serve --id "$id" --listen "127.0.0.1:700$id" --data-dir "$data/replica-$id" \
    --peers "$peers" "${serve_security[@]}" 2> >(sed "s/^/[replica $id] /" >&2) &
  pids+=($!)
done
for id in 1 2; do
  "$bin" taskmanager --id "tm-$id" --slots 4 --work-dir "$data/tm-$id" --endpoints "$endpoints" \
    "${tm_security[@]}" 2> >(sed "s/^/[tm-$id] /" >&2) &
  pids+=($!)
done
echo "cluster starting; in another terminal:" >&2
echo "  $client_env DISPATCHER_ENDPOINTS=$endpoints" >&2
echo "  $bin cluster status" >&2
wait
