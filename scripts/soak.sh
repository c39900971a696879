#!/usr/bin/env bash
# Soak test (not part of the test suite): SOAK_SECS (default 600) of normal PIN calls mixed
# with hostile traffic, all on loopback:
#   - PIN calls from 127.0.0.1 (SIPp: INVITE, RFC 4733 digits 1234#, REFER 202 + NOTIFY),
#     one new call every CALL_EVERY_MS (default 1000), each up ~8 s;
#   - calls from 127.0.0.3 for an organization whose HTTP CRM accepts and never answers
#     (they must still complete: crm_error -> failure extension after the CRM deadline);
#   - malformed SIP over UDP and TCP from 127.0.0.4 (mutated INVITEs, torture messages);
#   - a flood from 127.0.0.2, outside [sip] allow (must be dropped and counted);
#   - RTP garbage at the RTP port range.
# Then prints calls completed vs placed, rejections by reason, RSS and open fds at start,
# under load and settled (hostile traffic stopped, past Timer H), and whether the process
# ever restarted a loop or died.
# Target: every normal call completes, RSS and fds flat, no restart.
# Needs sipp (apt-get install -y sip-tester) and python3. Usage: scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SOAK_SECS:-600}
CALL_EVERY_MS=${CALL_EVERY_MS:-1000}
SIP_PORT=${SOAK_SIP_PORT:-5290}
ADMIN_PORT=${SOAK_ADMIN_PORT:-9290}
CRM_PORT=${SOAK_CRM_PORT:-9291}
root=$PWD
cargo build --release -q
dir=$(mktemp -d)
cat > "$dir/soak.toml" <<CFG
default_organization = "default"
[sip]
listen = ["udp:127.0.0.1:$SIP_PORT", "tcp:127.0.0.1:$SIP_PORT"]
# 127.0.0.2 is the stranger; 127.0.0.4 an allowed but broken peer, capped at 50 calls up
# so its junk INVITEs (never ACKed, each up for Timer H) cannot crowd out the real calls.
allow = ["127.0.0.1/32", "127.0.0.3/32", "127.0.0.4/32"]
denied = "drop"
max_calls = 500
max_calls_per_source = 50
[media]
rtp_bind = "127.0.0.1"
rtp_port_min = 30000
rtp_port_max = 31000
[prompts]
dir = "$root/sip-config/prompts"
[crm]
contacts = "$root/sip-config/contacts.toml"
[crms.hang]
kind = "http_lookup"
[crms.hang.http]
url = "http://127.0.0.1:$CRM_PORT/contacts?phone={phone}"
timeout_ms = 1500
retries = 0
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[[organization]]
name = "hanging-crm"
enabled = true
match_source = ["127.0.0.3/32"]
crm = "hang"
pbx_host = "127.0.0.1"
pin_success_ext = "1001"
pin_failed_ext = "1002"
[[organization]]
name = "default"
enabled = true
match_user = ["pincoderouting"]
pbx_host = "127.0.0.1"
pin_success_ext = "1001"
pin_failed_ext = "1002"
CFG
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${svc:-}" ] && kill "$svc" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# A CRM that accepts connections and never answers.
python3 - "$CRM_PORT" "$SECS" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(512); s.settimeout(1.0)
held, end = [], time.time() + int(sys.argv[2]) + 60
while time.time() < end:
    try:
        c, _ = s.accept(); held.append(c)
        held = held[-400:]
    except socket.timeout:
        pass
PY
pids+=($!)

./target/release/pincoderouting --log-level warn serve --config "$dir/soak.toml" >"$dir/service.log" 2>&1 &
svc=$!
sleep 1.5
metrics() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || python3 -c "
import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$ADMIN_PORT/metrics').read().decode())"; }
rss() { awk '/VmRSS/{print $2}' /proc/$svc/status; }
fds() { ls /proc/$svc/fd | wc -l; }
rss0=$(rss); fds0=$(fds)
echo "soak: ${SECS}s, pid $svc, start: rss ${rss0} KiB, fds ${fds0}"

# Normal PIN calls and hanging-CRM calls (SIPp, at a fixed rate for the whole duration).
cp scenarios/pcap/rfc4733_pin.pcap "$dir/dtmf.pcap"
placed=$(( SECS * 1000 / CALL_EVERY_MS ))
hang_placed=$(( placed / 5 ))
(cd "$dir" && sipp -sf "$root/scenarios/uac_pin_transfer.xml" 127.0.0.1:$SIP_PORT -i 127.0.0.1 \
    -m "$placed" -r 1 -rp "$CALL_EVERY_MS" -key caller +15551234567 -mp 40000 \
    -nostdin -timeout $(( SECS + 120 ))s -trace_stat -stf normal.csv -fd 5 >/dev/null 2>&1) &
normal=$!
(cd "$dir" && sipp -sf "$root/scenarios/uac_pin_transfer.xml" 127.0.0.1:$SIP_PORT -i 127.0.0.3 \
    -m "$hang_placed" -r 1 -rp $(( CALL_EVERY_MS * 5 )) -key caller +15551234567 -mp 42000 \
    -nostdin -timeout $(( SECS + 120 ))s -trace_stat -stf hang.csv -fd 5 >/dev/null 2>&1) &
hang=$!

# Hostile traffic, bounded in rate and in time.
python3 - "$SIP_PORT" "$SECS" <<'PY' &
import random, socket, struct, sys, time
port, secs = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(7)
inv = ("INVITE sip:pincoderouting@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{n};rport\r\n"
       "From: <sip:+15550000000@127.0.0.1>;tag=x\r\nTo: <sip:pincoderouting@127.0.0.1>\r\nCall-ID: hostile-{n}\r\n"
       "CSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.1:9>\r\nContent-Type: application/sdp\r\nContent-Length: 40\r\n\r\n"
       "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 9 RTP/AVP 0\r\n")
torture = [b"INVITE sip:x SIP/7.0\r\n\r\n", b"\x00" * 100, b"OPTIONS mailto:x SIP/2.0\r\nl: 3\r\nl: 4\r\n\r\n",
           b"X" * 70000, b"SIP/2.0 200 OK\r\n\r\n"]
def mutate(b):
    b = bytearray(b)
    for _ in range(rnd.randint(1, 8)):
        i = rnd.randrange(len(b))
        op = rnd.randrange(3)
        if op == 0: b[i] = rnd.randrange(256)
        elif op == 1: del b[i]
        else: b.insert(i, rnd.randrange(256))
    return bytes(b)
ok = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); ok.bind(("127.0.0.4", 0))
bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); bad.bind(("127.0.0.2", 0))
rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rtp.bind(("127.0.0.1", 0))
end, n = time.time() + secs, 0
while time.time() < end:
    n += 1
    # ~150 malformed datagrams/s from an allowed source (some are valid INVITEs of
    # calls that never ACK: they time out as a real bad PBX's would).
    ok.sendto(mutate(inv.format(n=n).encode()) if n % 10 else rnd.choice(torture)[:65000], ("127.0.0.1", port))
    # ~750/s from the stranger: dropped before parsing.
    for _ in range(5):
        bad.sendto(inv.format(n=n).encode(), ("127.0.0.1", port))
    # RTP garbage at the port range.
    rtp.sendto(bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 200))), ("127.0.0.1", rnd.randrange(30000, 31001, 2)))
    if n % 200 == 0:
        # Malformed SIP over TCP: a few messages, then garbage framing, then close.
        try:
            t = socket.create_connection(("127.0.0.1", port), timeout=1, source_address=("127.0.0.4", 0))
            t.sendall(mutate(inv.format(n=n).replace("UDP", "TCP").encode()))
            t.sendall(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n")
            t.close()
        except OSError:
            pass
    time.sleep(0.005)
PY
pids+=($!)

wait "$normal" || true
wait "$hang" || true
# Mid-soak sample (hostile traffic still on, junk calls up), then let everything settle:
# stop the hostile sender and wait past Timer H (32 s) so calls that were never ACKed end.
rss_mid=$(rss 2>/dev/null || echo dead); fds_mid=$(fds 2>/dev/null || echo dead)
kill "${pids[1]}" 2>/dev/null || true
sleep 40
rss1=$(rss 2>/dev/null || echo dead); fds1=$(fds 2>/dev/null || echo dead)
alive=yes; kill -0 "$svc" 2>/dev/null || alive=no
m=$(metrics || true)
col() { # CSV column by header name, last line
    python3 - "$1" "$2" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
print(rows[-1][rows[0].index(sys.argv[2])] if len(rows) > 1 else "?")
PY
}
ok_n=$(col "$dir/normal.csv" "SuccessfulCall(C)" 2>/dev/null || echo "?")
ok_h=$(col "$dir/hang.csv" "SuccessfulCall(C)" 2>/dev/null || echo "?")
echo "normal PIN calls: completed ${ok_n} of ${placed} placed"
echo "hanging-CRM calls: completed ${ok_h} of ${hang_placed} placed"
echo "rejections by reason:"
echo "$m" | grep '^pincoderouting_sip_rejections_total' | sed 's/^/  /' || echo "  (none)"
echo "$m" | grep -E '^pincoderouting_(sip_parse_errors_total|rtp_wrong_source_total|receive_loop_restarts_total|calls_panicked_total) ' | sed 's/^/  /'
echo "outcomes:"
echo "$m" | grep '^pincoderouting_calls_total' | sed 's/^/  /'
echo "rss KiB: start ${rss0}, under load ${rss_mid}, settled ${rss1}"
echo "open fds: start ${fds0}, under load ${fds_mid}, settled ${fds1}; process alive: ${alive}"
