#!/usr/bin/env bash
# Load test: N concurrent calls with RTP both ways (SIPp echoes our RTP), held for D ms
# (keep D under ~25 s: the PIN flow then stays in its first attempts, playing prompts and
# listening for digits, as a real caller's call would).
# Reports our process's CPU time and peak RSS. Usage: scripts/load.sh [calls] [hold_ms]
# Needs sipp (apt-get install -y sip-tester). Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-1000}
HOLD=${2:-20000}
PORT=5190
cargo build --release -q
dir=$(mktemp -d)
cat > "$dir/load.toml" <<CFG
default_organization = "default"
[sip]
listen = ["udp:127.0.0.1:$PORT"]
max_calls = 10000
# One SIPp source carries every call: no per-source limits here.
requests_per_sec = 0
calls_per_sec = 0
[media]
rtp_bind = "127.0.0.1"
rtp_port_min = 10000
rtp_port_max = 40000
[prompts]
dir = "$PWD/sip-config/prompts"
[crm]
contacts = "$PWD/sip-config/contacts.toml"
[[organization]]
name = "default"
enabled = true
pbx_host = "127.0.0.1"
pin_success_ext = "1001"
pin_failed_ext = "1002"
CFG
./target/release/pincoderouting --log-level warn serve --config "$dir/load.toml" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 1
ticks0=$(awk "{print \$14+\$15}" /proc/$pid/stat); u0=$(awk "{print \$14}" /proc/$pid/stat)
start=$(date +%s.%N)
# Rate 500/s so all calls are up together for most of the hold time.
(cd "$dir" && sipp -sf "$OLDPWD/scenarios/uac_basic.xml" 127.0.0.1:$PORT -i 127.0.0.1 \
  -l "$CALLS" -m "$CALLS" -r 500 -d "$HOLD" -rtp_echo -mp 6100 -max_socket 65000 \
  -nostdin -timeout 300s -trace_stat -fd 1 >/dev/null 2>&1) || echo "sipp reported failed calls"
end=$(date +%s.%N)
ticks1=$(awk "{print \$14+\$15}" /proc/$pid/stat); u1=$(awk "{print \$14}" /proc/$pid/stat)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
succ=$(tail -1 "$dir"/uac_basic_*_.csv 2>/dev/null | awk -F';' '{print $16}' || echo "?")
cpu=$(echo "($ticks1-$ticks0)/$hz" | bc -l)
wall=$(echo "$end-$start" | bc -l)
printf 'calls=%s hold_ms=%s wall_s=%.1f cpu_s=%.2f (user %.2f) avg_cores=%.3f peak_rss_kib=%s successful=%s\n' \
  "$CALLS" "$HOLD" "$wall" "$cpu" "$(echo "($u1-$u0)/$hz" | bc -l)" "$(echo "$cpu/$wall" | bc -l)" "$rss" "$succ"
