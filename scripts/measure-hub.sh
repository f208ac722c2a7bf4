#!/usr/bin/env bash
# Measures the release hub on this machine, next to its reference in the same run:
#   - cold start: process start until /healthz answers over TLS (fresh data dir,
#     including CA and key generation) and warm start (existing data dir);
#   - memory: resident set size of the idle hub;
#   - login latency: a password sign-in (one Argon2id verification) measured from a
#     client, next to the bare Argon2id hash cost (the floor) and their ratio.
# Loopback only; bounded counts. Usage: scripts/measure-hub.sh [LOGINS]
set -euo pipefail
cd "$(dirname "$0")/.."
logins=${1:-20}
cargo build --release -q -p palisade
cargo build --release -q -p palisade-crypto --example argon2_cost
bin=target/release/palisade
work=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="https://127.0.0.1:$port"

# Sets $pid and $started_ms (not a subshell, so $pid survives).
start_hub() {
  local t0; t0=$(date +%s.%N)
  "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/out.txt" 2>"$work/err.txt" &
  pid=$!
  for _ in $(seq 1 500); do
    if curl -s --cacert "$work/data/pki/ca.pem" "$url/healthz" >/dev/null 2>&1; then break; fi
    sleep 0.01
  done
  started_ms=$(python3 -c "print(f'{($(date +%s.%N) - $t0) * 1000:.0f}')")
}

start_hub
cold_ms=$started_ms
kill "$pid"; wait "$pid" 2>/dev/null || true
start_hub
warm_ms=$started_ms
sleep 1
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")

# An owner account to sign in with: sign up, then confirm through the e-mailed link.
jar="$work/cookies"
curl_h() { curl -s --cacert "$work/data/pki/ca.pem" -b "$jar" -c "$jar" "$@"; }
csrf() { python3 -c 'import re,sys; m=re.search(r"name=\"csrf\" value=\"([^\"]+)\"", sys.stdin.read()); print(m.group(1) if m else "")'; }
token=$(curl_h "$url/signup" | csrf)
curl_h -o /dev/null --data-urlencode "csrf=$token" --data-urlencode "username=bench-owner" \
  --data-urlencode "email=bench@example.org" --data-urlencode "password=orchid tractor velvet monsoon" "$url/signup"
for _ in $(seq 1 100); do ls "$work"/data/mail/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
link=$(grep -ho 'token=[A-Za-z0-9_-]*' "$work"/data/mail/*.eml | head -1)
token=$(curl_h "$url/verify-email?$link" | csrf)
curl_h -o /dev/null --data-urlencode "csrf=$token" --data-urlencode "${link}" "$url/verify-email"

times=()
for _ in $(seq 1 "$logins"); do
  rm -f "$jar"
  token=$(curl_h "$url/login" | csrf)
  t=$(curl_h -o /dev/null -w '%{time_total}' --data-urlencode "csrf=$token" \
    --data-urlencode "username=bench-owner" --data-urlencode "password=orchid tractor velvet monsoon" "$url/login")
  times+=("$t")
done
login_ms=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]*1000}')
floor_ms=$(target/release/examples/argon2_cost 10 | awk '{print $2}')

printf '%-44s %10s\n' "measure" "value"
printf '%-44s %10s\n' "cold start, fresh data dir (ms)" "$cold_ms"
printf '%-44s %10s\n' "warm start, existing data dir (ms)" "$warm_ms"
printf '%-44s %10s\n' "idle resident memory (KiB)" "$rss_kb"
printf '%-44s %10s\n' "password sign-in, median of $logins (ms)" "$login_ms"
printf '%-44s %10s\n' "reference: one Argon2id hash (ms)" "$floor_ms"
python3 -c "print(f'{\"ratio sign-in / Argon2id hash\":<44} {$login_ms / $floor_ms:10.2f}')"
