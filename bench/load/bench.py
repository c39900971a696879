#!/usr/bin/env python3
"""bench/load/bench.py: the load benchmark's driver (start it with bench/load/run).

Per step of N concurrent calls it starts pincoderouting fresh on loopback with a bench
configuration (an HTTP lookup CRM, bench/load/crm.py, for the organization bench-http and a
file CRM of thousands of contacts for bench-file), places N SIPp PIN calls ramped up within a
few seconds, holds them (our prompt plays, then the call waits for the first key), measures
the process over the steady hold window, lets every caller send its PIN (RFC 4733, in-band or
SIP INFO), follows the REFER to our BYE, and reads SIPp's statistics, our /metrics and our
audit file. One summary line per step, then the largest N at which every target holds, and
a call-rate step. Results: bench/load/results/<stamp>-<label>.json and .csv.

Python 3 standard library only. See bench/load/README.md for what each column means.
"""

import argparse
import csv
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
HZ = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# The targets of issue 10 (see README.md).
TARGET_CPU_PCT_PER_CALL = 0.015  # % of one core per concurrent call
TARGET_KIB_PER_CALL = 32.0
TARGET_REFER_P99_MS = 10.0  # '#' -> REFER, calls whose CRM had answered (bench-http)
TARGET_LATENESS_P99_MS = 5.0  # strictly below

HTTP_PREFIX = "+15553"  # bench-http callers: +1 555 3nn nnnn
FILE_PREFIX = "+15554"  # bench-file callers: +1 555 4nn nnnn
PIN = "1234"  # what scenarios/pcap/rfc4733_pin.pcap and inband_pin.pcap type (then #)
HASHES = 256  # distinct argon2id hashes of PIN, cached, shared out over the file contacts

LATENESS = "pincoderouting_rtp_frame_lateness_seconds"
ENTRY_TO_REFER = "pincoderouting_pin_entry_to_refer_seconds"
IN_PROGRESS = "pincoderouting_calls_in_progress"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A step that could not be run (the service did not start, ...)."""


# ---------------------------------------------------------------------------------------
# Processes: every child is ours to end, always.

CHILDREN = []


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    CHILDREN.append(p)
    return p


def stop(p, first=signal.SIGTERM, grace=5.0):
    """Ends a child: `first`, then SIGKILL after `grace` seconds."""
    if p is None:
        return
    if p.poll() is None:
        try:
            p.send_signal(first)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all(grace=2.0):
    """Ends every child still running: SIGTERM to all, SIGKILL to those left after grace."""
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.time() + grace
    for p in list(CHILDREN):
        try:
            p.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        CHILDREN.remove(p)


class RtpSink:
    """Drops our RTP (and RTCP) to SIPp's media ports at the input hook (nftables), after
    the window.

    SIPp's pcap play sends each capture from a raw UDP socket of its own, bound to
    127.0.0.1, and every raw UDP socket gets a copy of every UDP datagram to that address:
    with a few hundred captures playing at once, each of our 50 frames/s per call was
    copied to every one of them (raw_local_deliver was 13 % of our CPU and the PIN phase
    ran the machine out of CPU). SIPp never reads our RTP (no -rtp_echo: its socket is
    full and drops it), so from the window's end the bench drops it before delivery. The
    window (cpu/call, KiB/call) is measured before, with our RTP delivered as always."""

    TABLE = "pcr_load_bench"
    active = None

    def __init__(self, mode, port):
        self.port = port
        self.on = False
        usable = os.geteuid() == 0 and shutil.which("nft") is not None
        if mode == "on" and not usable:
            raise Failed("--rtp-sink on needs root and nft (apt-get install -y nftables)")
        self.usable = usable and mode != "off"

    def start(self):
        if not self.usable or self.on:
            return
        rules = (f"table inet {self.TABLE} {{\n  chain input {{\n"
                 f"    type filter hook input priority 0;\n"
                 f"    udp dport {{ {self.port}, {self.port + 1} }} counter drop\n  }}\n}}\n")
        done = subprocess.run(["nft", "-f", "-"], input=rules, text=True,
                              capture_output=True)
        if done.returncode != 0:
            log(f"nft refused the RTP sink ({done.stderr.strip()}): our RTP goes to SIPp")
            self.usable = False
            return
        self.on = True
        RtpSink.active = self

    def dropped(self):
        if not self.on:
            return None
        out = subprocess.run(["nft", "list", "table", "inet", self.TABLE],
                             capture_output=True, text=True).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1)) if m else None

    def stop(self):
        if self.on:
            subprocess.run(["nft", "delete", "table", "inet", self.TABLE],
                           capture_output=True)
            self.on = False
            RtpSink.active = None


def on_signal(signum, _frame):
    # Interrupted: end the children at once (no drain), then unwind.
    signal.signal(signum, signal.SIG_IGN)
    log(f"signal {signum}: stopping")
    if RtpSink.active is not None:
        RtpSink.active.stop()
    stop_all(grace=1.0)
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------
# /proc and /metrics readings.

def proc_ticks(pid):
    """(user, system) CPU ticks of a process (all its threads), or (0, 0) when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0, 0


def proc_status(pid, key):
    """A /proc/PID/status value in KiB (VmRSS, VmHWM), or 0."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def machine_ticks():
    """(busy, total) ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def metrics(admin):
    try:
        return parse_metrics(http_get(f"http://{admin}/metrics")[1])
    except OSError:
        return {}


def parse_metrics(text):
    """Prometheus text -> {name: value} for unlabelled series and {name: {labels: value}}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            key, value = line.rsplit(" ", 1)
            value = float(value)
        except ValueError:
            continue
        if "{" in key:
            name, labels = key.split("{", 1)
            out.setdefault(name, {})[labels.rstrip("}")] = value
        else:
            out[key] = value
    return out


def buckets(m, name):
    """[(upper bound, cumulative count)] of a histogram, +Inf last."""
    b = []
    for labels, v in m.get(name + "_bucket", {}).items():
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        b.append((math.inf if le == "+Inf" else float(le), v))
    return sorted(b)


def bucket_delta(after, before):
    b0 = dict(before)
    return [(le, c - b0.get(le, 0.0)) for le, c in after]


def bucket_quantile(b, q):
    """Prometheus' histogram_quantile: linear within the bucket. (value, exact-bound flag);
    None when empty. Past the last finite bound: that bound, flagged."""
    if not b or b[-1][1] <= 0:
        return None
    rank = q * b[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in b:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def quantile(values, q):
    """Nearest-rank quantile of exact values, None when there are none."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(q * len(v)) - 1)]


# ---------------------------------------------------------------------------------------
# The bench's files: contacts (cached hashes), configuration, callers.

def cache_dir(args):
    d = args.cache or os.environ.get("PINCODEROUTING_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "pincoderouting-bench")
    os.makedirs(d, exist_ok=True)
    return d


def pin_hashes(args):
    """HASHES argon2id hashes of PIN (distinct salts), made once with `contacts hash-pin`
    and cached: hashing thousands at the shipped cost would take minutes per run."""
    path = os.path.join(cache_dir(args), f"pin-hashes-{HASHES}.txt")
    if os.path.exists(path):
        with open(path) as f:
            hashes = [h.strip() for h in f if h.strip().startswith("$argon2")]
        if len(hashes) >= HASHES:
            return hashes[:HASHES]
    log(f"making {HASHES} argon2id hashes of the bench PIN (once; cached in {path})")
    hashes = []
    for _ in range(HASHES):
        r = subprocess.run([args.bin, "--log-level", "error", "contacts", "hash-pin"],
                           input=PIN + "\n", capture_output=True, text=True, timeout=30)
        h = r.stdout.strip()
        if r.returncode != 0 or not h.startswith("$argon2"):
            raise Failed(f"contacts hash-pin failed: {r.stderr.strip()}")
        hashes.append(h)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(hashes) + "\n")
    os.replace(tmp, path)
    return hashes


def make_contacts(args, work):
    """The file CRM: args.contacts contacts of bench-file, imported with `contacts import`
    from a CSV whose pin column holds the cached hashes (stored as given, no hashing)."""
    hashes = pin_hashes(args)
    csv_path = os.path.join(work, "contacts.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "organization", "phones", "pin"])
        for i in range(args.contacts):
            w.writerow([f"f-{i}", f"Bench {i}", "bench-file", f"{FILE_PREFIX}{i:06d}",
                        hashes[i % len(hashes)]])
    path = os.path.join(work, "contacts.toml")
    r = subprocess.run([args.bin, "--log-level", "error", "contacts", "import", "--csv",
                        csv_path, "--file", path, "--country-code", "1"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise Failed(f"contacts import failed: {r.stderr.strip() or r.stdout.strip()}")
    return path


def write_config(args, work, step_dir, crm_url, hold_ms):
    hold_s = math.ceil(hold_ms / 1000)
    # The call waits for its first key through the hold: no timer may end it before.
    wait = hold_s + 60
    org = f"""
pbx_host = "127.0.0.1"
pin_success_ext = "1001"
pin_failed_ext = "1002"
min_digits = 4
max_digits = 8
first_digit_timeout_secs = {wait}
inter_digit_timeout_secs = 8
max_attempts = 3
transfer_timeout_secs = 30
country_code = "1"
"""
    lo, hi = args.rtp_range
    text = f"""# pincoderouting load benchmark (bench/load): written by bench.py, one per step.
default_organization = ""

[sip]
listen = ["udp:127.0.0.1:{args.sip_port}"]
max_calls = {min(20000, (hi - lo) // 2 + 1)}
allow = ["127.0.0.0/8"]
# SIPp is one source carrying every call: no per-source limits.
requests_per_sec = 0
calls_per_sec = 0
max_calls_per_source = 0
drain_timeout_secs = 5

[admin]
listen = "127.0.0.1:{args.admin_port}"
token_env = "PINCODEROUTING_BENCH_ADMIN_TOKEN_UNSET"

[media]
rtp_bind = "127.0.0.1"
public_address = "127.0.0.1"
rtp_port_min = {lo}
rtp_port_max = {hi}
# SIPp sends no RTP during the hold (only the PIN capture).
media_timeout_secs = {wait}
{"shared_socket = true" if args.shared_socket else ""}

[prompts]
dir = "{os.path.join(REPO, 'sip-config', 'prompts')}"

[crm]
kind = "file"
contacts = "{os.path.join(work, 'contacts.toml')}"

[crms.http]
kind = "http_lookup"
[crms.http.http]
url = "{crm_url}/contacts?phone={{phone}}&org={{org}}"
contacts_pointer = "/results"
timeout_ms = 3000
retries = 1

[audit]
file = "{os.path.join(step_dir, 'audit.log')}"

[[organization]]
name = "bench-http"
enabled = true
match_user = ["bench-http"]
crm = "http"
{org}
[[organization]]
name = "bench-file"
enabled = true
match_user = ["bench-file"]
{org}"""
    path = os.path.join(step_dir, "pincoderouting.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def plan_calls(args, n, seed, mix=None):
    """The N calls' rows: organization and method, shuffled with a fixed seed (the same
    step always places the same calls), numbers distinct within the step."""
    rng = random.Random(seed)
    n_file = round(n * args.file_share / 100)
    orgs = ["bench-file"] * n_file + ["bench-http"] * (n - n_file)
    shares = mix or args.mix
    counts = {m: int(n * s / 100) for m, s in shares.items()}
    counts["rfc4733"] += n - sum(counts.values())
    methods = [m for m, c in counts.items() for _ in range(c)]
    rng.shuffle(orgs)
    rng.shuffle(methods)
    rows, idx = [], {"bench-file": 0, "bench-http": 0}
    for org, method in zip(orgs, methods):
        i = idx[org]
        idx[org] += 1
        number = f"{FILE_PREFIX if org == 'bench-file' else HTTP_PREFIX}{i:06d}"
        rows.append((number, org, method))
    return rows


def write_callers(step_dir, rows):
    path = os.path.join(step_dir, "callers.csv")
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for number, org, method in rows:
            if method == "rfc4733":
                pts, rtpmap = "0 101", "101 telephone-event/8000"
            else:  # in-band tones (no telephone-event offered) or SIP INFO
                pts, rtpmap = "0 8", "8 PCMA/8000"
            f.write(f"{number};{org};{method};{PIN}#;{pts};{rtpmap}\n")
    return path


# ---------------------------------------------------------------------------------------
# One step.

class Service:
    def __init__(self, args, config, step_dir):
        self.args = args
        self.admin = f"127.0.0.1:{args.admin_port}"
        self.log_path = os.path.join(step_dir, "service.log")
        env = {k: v for k, v in os.environ.items() if k != "PINCODEROUTING_ADMIN_TOKEN"}
        self.logf = open(self.log_path, "w")
        self.p = spawn([args.bin, "--log-level", args.log_level, "serve", "--config", config],
                       stdout=self.logf, stderr=subprocess.STDOUT, env=env, cwd=step_dir)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise Failed(f"pincoderouting exited ({self.p.returncode}) at start: "
                             f"see {self.log_path}")
            try:
                if http_get(f"http://{self.admin}/readyz", 0.5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise Failed(f"pincoderouting not ready after 15 s: see {self.log_path}")

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        # SIGTERM drains (calls in progress end first, drain_timeout_secs = 5); a second
        # one ends them at once.
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.p.send_signal(signal.SIGTERM)
        stop(self.p, grace=5)
        self.logf.close()


def sipp_args(args, step_dir, callers, n, rate, hold_ms, limit, timeout_s):
    # The scenario is copied beside the captures it plays (where SIPp looks first).
    return ["sipp", "-sf", os.path.join(step_dir, "pin_call.xml"),
            f"127.0.0.1:{args.sip_port}", "-i", "127.0.0.1", "-p", str(args.sipp_port),
            "-mi", args.sipp_media_ip, "-mp", str(args.media_port),
            "-inf", callers, "-m", str(n), "-l", str(limit), "-r", str(rate),
            "-d", str(hold_ms), "-nostdin", "-timeout", f"{timeout_s}s",
            "-timeout_error", "-max_socket", "60000",
            # SIPp's SIP socket as deep as ours (4 MiB, up to net.core.rmem_max): with its
            # default a burst of our messages overflowed it, and a response lost there with
            # the next request kept made SIPp abort the call as "unexpected message".
            "-buff_size", str(4 << 20),
            "-trace_stat", "-stf", os.path.join(step_dir, "sipp_stat.csv"), "-fd", "1",
            "-trace_rtt", "-rtt_freq", "1",
            "-trace_err", "-error_file", os.path.join(step_dir, "sipp_errors.log")]


def sipp_final_stats(step_dir):
    """The last row of SIPp's -trace_stat file (cumulative counters)."""
    path = os.path.join(step_dir, "sipp_stat.csv")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def sipp_rtts(step_dir, rtd="1"):
    """Exact response times (ms) from SIPp's -trace_rtt file, and their dates: rtd 1 is
    INVITE -> 200, rtd 2 (3) an HTTP-CRM (file-CRM) INFO caller's `#` (its last INFO
    sent) -> our REFER received."""
    vals, dates = [], []
    for name in os.listdir(step_dir):
        if not name.endswith("_rtt.csv"):
            continue
        with open(os.path.join(step_dir, name)) as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 3 and parts[2].strip() == rtd:
                    try:
                        dates.append(float(parts[0]))
                        vals.append(float(parts[1]))
                    except ValueError:
                        pass
    return vals, dates


def read_audit(step_dir):
    recs = []
    try:
        with open(os.path.join(step_dir, "audit.log")) as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return recs


def prepare_step_dir(work, name):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    for pcap in ("rfc4733_pin.pcap", "inband_pin.pcap"):
        shutil.copy(os.path.join(REPO, "scenarios", "pcap", pcap), d)
    shutil.copy(os.path.join(HERE, "pin_call.xml"), d)
    return d


def run_calls(args, work, crm, name, n, rate, hold_ms, window=True, mix=None):
    """Runs one SIPp run of n calls against a fresh service; returns the measurements."""
    mix = mix or args.mix
    step_dir = prepare_step_dir(work, name)
    config = write_config(args, work, step_dir, crm.url, hold_ms)
    rows = plan_calls(args, n, seed=n, mix=mix)
    callers = write_callers(step_dir, rows)
    r = {"step": name, "n": n, "rate": rate, "hold_ms": hold_ms,
         "mix": mix, "file_share_pct": args.file_share,
         "planned": {m: sum(1 for x in rows if x[2] == m) for m in mix},
         "planned_file": sum(1 for x in rows if x[1] == "bench-file")}
    svc = Service(args, config, step_dir)
    sipp = None
    sink = RtpSink(args.rtp_sink, args.media_port)
    try:
        time.sleep(1.0)
        r["rss_idle_kib"] = proc_status(svc.pid, "VmRSS")
        crm_req0 = crm.requests()
        ramp_s = n / rate
        hold_s = hold_ms / 1000
        timeout_s = int(ramp_s + hold_s + 120)
        t0 = time.time()
        u0, s0 = proc_ticks(svc.pid)
        sipp_out = open(os.path.join(step_dir, "sipp.out"), "w")
        sipp = spawn(sipp_args(args, step_dir, callers, n, rate, hold_ms,
                               limit=max(n, 1), timeout_s=timeout_s),
                     cwd=step_dir, stdout=subprocess.DEVNULL, stderr=sipp_out)
        if window:
            measure_window(args, r, svc, sipp, crm, n, t0, hold_s)
        sink.start()
        r["rtp_sink"] = sink.on
        # Every call sends its PIN, is transferred and ends: wait for SIPp.
        try:
            sipp.wait(timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            log(f"{name}: SIPp still running after {timeout_s + 30} s: stopped")
            stop(sipp, grace=3)
        t_end = time.time()
        sipp_out.close()
        r["sipp_exit"] = sipp.returncode
        if sipp.returncode not in (0, 1):
            with open(os.path.join(step_dir, "sipp.out"), errors="replace") as f:
                r["sipp_stderr"] = f.read()[-2000:]
            log(f"{name}: SIPp exited {sipp.returncode}: {r['sipp_stderr'][-300:]}")
        # Calls still up on our side (a caller gave up): give them a moment to end.
        deadline = time.time() + 15
        while time.time() < deadline:
            if metrics(svc.admin).get(IN_PROGRESS, 0) == 0:
                break
            time.sleep(0.25)
        if svc.p.poll() is not None:
            r["service_exit"] = svc.p.returncode
            log(f"{name}: pincoderouting exited ({svc.p.returncode}) during the step: "
                f"see {svc.log_path}")
        m_end = metrics(svc.admin)
        u1, s1 = proc_ticks(svc.pid)
        r["run_s"] = round(t_end - t0, 2)
        r["run_cpu_s"] = round((u1 - u0 + s1 - s0) / HZ, 2)
        r["rss_peak_kib"] = proc_status(svc.pid, "VmHWM")
        r["left_in_progress"] = m_end.get(IN_PROGRESS)
        r["crm_requests"] = crm.requests() - crm_req0
        late_all = buckets(m_end, LATENESS)
        r["lateness_p99_ms"] = ms(bucket_quantile(late_all, 0.99))
        r["lateness_p50_ms"] = ms(bucket_quantile(late_all, 0.50))
        r["late_frames_skipped"] = m_end.get("pincoderouting_rtp_late_frames_skipped_total")
        e2r = buckets(m_end, ENTRY_TO_REFER)
        r["metrics_entry_to_refer_p50_ms"] = ms(bucket_quantile(e2r, 0.50))
        r["metrics_entry_to_refer_p99_ms"] = ms(bucket_quantile(e2r, 0.99))
        r["panics"] = m_end.get("pincoderouting_calls_panicked_total")
        r["loop_restarts"] = m_end.get("pincoderouting_receive_loop_restarts_total")
        r["rtp_sink_dropped"] = sink.dropped()
    finally:
        sink.stop()
        if sipp is not None:
            stop(sipp, grace=3)
        svc.stop()
    summarize_sipp(r, step_dir)
    summarize_audit(r, step_dir, rows)
    r["dir"] = step_dir
    return r


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def measure_window(args, r, svc, sipp, crm, n, t0, hold_s):
    """The steady hold window: from all N calls up (+ settle) to just before the first
    caller sends its PIN (t0 + hold: the first call's ACK comes after t0)."""
    window_end = t0 + hold_s - 0.5
    up_at = None
    peak = 0
    while time.time() < window_end and sipp.poll() is None:
        cur = metrics(svc.admin).get(IN_PROGRESS, 0)
        peak = max(peak, cur)
        if cur >= n:
            up_at = time.time()
            break
        time.sleep(0.1)
    r["ramp_s"] = round(up_at - t0, 2) if up_at else None
    if up_at is None:
        r["window_note"] = (f"only {int(peak)} of {n} calls up before the first PIN "
                            "(raise --hold-ms or the ramp rate)")
    a_at = time.time() + args.settle_s
    if a_at >= window_end - 1.0 or sipp.poll() is not None:
        r["window_s"] = None
        r["window_note"] = r.get("window_note") or "no steady window (hold too short)"
        return
    time.sleep(a_at - time.time())
    a = sample(svc, sipp, crm)
    time.sleep(max(0.0, window_end - time.time()))
    b = sample(svc, sipp, crm)
    w = b["t"] - a["t"]
    calls = (a["in_progress"] + b["in_progress"]) / 2
    r["window_s"] = round(w, 2)
    if w < 3:
        r["window_note"] = f"a short window ({w:.1f} s): raise --hold-ms for steadier figures"
    r["calls_up"] = calls
    r["rss_hold_kib"] = b["rss"]
    if calls > 0:
        cpu_u = (b["u"] - a["u"]) / HZ
        cpu_s = (b["s"] - a["s"]) / HZ
        r["cores"] = round((cpu_u + cpu_s) / w, 4)
        r["cores_user"] = round(cpu_u / w, 4)
        r["cores_sys"] = round(cpu_s / w, 4)
        r["cpu_pct_per_call"] = round(100 * (cpu_u + cpu_s) / w / calls, 5)
        r["cpu_pct_per_call_user"] = round(100 * cpu_u / w / calls, 5)
        r["cpu_pct_per_call_sys"] = round(100 * cpu_s / w / calls, 5)
        r["kib_per_call"] = round((b["rss"] - r["rss_idle_kib"]) / calls, 2)
    r["sipp_cores"] = round((b["sipp"] - a["sipp"]) / HZ / w, 3)
    r["crm_cores"] = round((b["crm"] - a["crm"]) / HZ / w, 3)
    r["machine_busy_cores"] = round((b["busy"] - a["busy"]) / HZ / w, 3)
    r["machine_cores"] = os.cpu_count()
    late = bucket_delta(b["late"], a["late"])
    r["hold_lateness_p99_ms"] = ms(bucket_quantile(late, 0.99))
    r["hold_frames"] = late[-1][1] if late else 0
    # The window's lateness histogram itself: [upper bound in ms, frames at or under it].
    r["hold_lateness_buckets"] = [["+Inf" if math.isinf(le) else round(le * 1000, 3), c]
                                  for le, c in late]
    r["hold_rtp_out_pps"] = round((b["rtp_out"] - a["rtp_out"]) / w, 1)


def sample(svc, sipp, crm):
    m = metrics(svc.admin)
    u, s = proc_ticks(svc.pid)
    su, ss = proc_ticks(sipp.pid)
    cu, cs = proc_ticks(crm.p.pid)
    busy, _ = machine_ticks()
    return {"t": time.time(), "u": u, "s": s, "rss": proc_status(svc.pid, "VmRSS"),
            "in_progress": m.get(IN_PROGRESS, 0), "late": buckets(m, LATENESS),
            "rtp_out": m.get("pincoderouting_rtp_packets_total", {}).get('direction="out"', 0),
            "sipp": su + ss, "crm": cu + cs, "busy": busy}


def summarize_sipp(r, step_dir):
    st = sipp_final_stats(step_dir)

    def num(k):
        try:
            return int(float(st.get(k, "")))
        except ValueError:
            return None

    r["attempted"] = num("TotalCallCreated")
    r["completed"] = num("SuccessfulCall(C)")
    r["failed"] = num("FailedCall(C)")
    # SIPp sent one of its requests again: we had not answered within 500 ms.
    r["sipp_retransmissions"] = num("Retransmissions(C)")
    r["sipp_failures_by_reason"] = {
        k[len("Failed"):-len("(C)")]: num(k) for k in st
        if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and num(k)}
    rtt, dates = sipp_rtts(step_dir)
    r["invite_200_p50_ms"] = quantile(rtt, 0.50)
    r["invite_200_p99_ms"] = quantile(rtt, 0.99)
    r["invite_200_max_ms"] = max(rtt) if rtt else None
    if len(dates) > 1 and max(dates) > min(dates):
        # The 200s' dates: one per call set up, INVITE -> 200 apart from the INVITE's.
        r["setup_rate"] = round((len(dates) - 1) / ((max(dates) - min(dates)) / 1000), 1)
    # `#` -> REFER on the wire, as SIPp saw it (INFO callers only: SIPp knows when it
    # sent their `#`; a capture's keys leave from SIPp's play thread).
    # The HTTP CRM's callers (the target's), and apart the file CRM's (argon2 included).
    for key, rtd in (("info_wire_refer", "2"), ("info_wire_refer_file", "3")):
        wire, _ = sipp_rtts(step_dir, rtd)
        r[f"{key}_n"] = len(wire)
        r[f"{key}_p50_ms"] = quantile(wire, 0.50)
        r[f"{key}_p99_ms"] = quantile(wire, 0.99)
        r[f"{key}_max_ms"] = max(wire) if wire else None
    entries = sipp_error_entries(step_dir)
    kinds = {}
    for e in entries:
        k = error_kind(e)
        kinds[k] = kinds.get(k, 0) + 1
    r["sipp_error_counts"] = kinds
    r["sipp_errors"] = [e[:400] for e in entries if error_kind(e) != "dead call"][:5]


def sipp_error_entries(step_dir):
    """SIPp's -trace_err entries (one per event, each starting with its date), less the
    expected ones: the INFO gap's receive timeouts and the pcap look-up notice."""
    try:
        with open(os.path.join(step_dir, "sipp_errors.log"), errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    parts = re.split(r"(?=\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t)", text)
    return [p.strip() for p in parts
            if p.strip() and not p.startswith("The following events")
            and "jumping to label" not in p and "prefers looking for pcap" not in p]


def error_kind(entry):
    for key, kind in (("unexpected message", "unexpected message"),
                      ("unexpected BYE", "unexpected BYE"), ("Dead call", "dead call"),
                      ("watchdog", "SIPp overloaded (watchdog)"),
                      ("Max retrans", "max retransmissions"), ("timeout", "timeout")):
        if key in entry:
            return kind
    return "other"


def summarize_audit(r, step_dir, rows):
    recs = [x for x in read_audit(step_dir) if x.get("kind") == "call"]
    refused = [x for x in read_audit(step_dir) if x.get("kind") != "call"]
    outcomes = {}
    for x in recs:
        k = str(x.get("outcome"))
        outcomes[k] = outcomes.get(k, 0) + 1
    r["audit_calls"] = len(recs)
    r["audit_refused"] = len(refused)
    r["outcomes"] = outcomes
    by_org = {}
    for x in recs:
        o = by_org.setdefault(str(x.get("organization")), {})
        o[str(x.get("outcome"))] = o.get(str(x.get("outcome")), 0) + 1
    r["outcomes_by_org"] = by_org
    r["verified"] = outcomes.get("verified", 0)
    r["transferred"] = sum(1 for x in recs if x.get("transferred"))
    sources = {}
    for x in recs:
        k = str(x.get("digit_source"))
        sources[k] = sources.get(k, 0) + 1
    r["digit_sources"] = sources
    by_org = {}
    for x in recs:
        if x.get("entry_to_refer_ms") is not None:
            by_org.setdefault(x.get("organization"), []).append(x["entry_to_refer_ms"])
    allv = [v for vs in by_org.values() for v in vs]
    r["entry_to_refer_p50_ms"] = quantile(allv, 0.50)
    r["entry_to_refer_p99_ms"] = quantile(allv, 0.99)
    for org, key in (("bench-http", "http"), ("bench-file", "file")):
        v = by_org.get(org, [])
        r[f"entry_to_refer_{key}_n"] = len(v)
        r[f"entry_to_refer_{key}_p50_ms"] = quantile(v, 0.50)
        r[f"entry_to_refer_{key}_p99_ms"] = quantile(v, 0.99)
        r[f"entry_to_refer_{key}_max_ms"] = max(v) if v else None
    crm = [x["crm_latency_ms"] for x in recs
           if x.get("organization") == "bench-http" and x.get("crm_latency_ms") is not None]
    r["crm_latency_p99_ms"] = quantile(crm, 0.99)
    # A few non-verified records, for the report (no PINs are ever in them).
    bad = [x for x in recs if x.get("outcome") != "verified"]
    r["not_verified_examples"] = [
        {k: x.get(k) for k in ("call_id", "organization", "caller", "outcome", "attempts",
                               "attempt_results", "digit_source", "digits", "reason",
                               "transfer_outcome", "crm_latency_ms", "answer_to_verdict_ms",
                               "duration_ms")} for x in bad[:5]]


def judge(r, n):
    """Which targets this step misses (an empty list: all hold)."""
    miss = []
    if r.get("service_exit") is not None:
        miss.append("crashed")
    if not (r.get("failed") == 0 and r.get("completed") == n and r.get("attempted") == n):
        miss.append("success")
    if r.get("verified") != n:
        miss.append("verified")
    c = r.get("cpu_pct_per_call")
    if c is None or c > TARGET_CPU_PCT_PER_CALL:
        miss.append("cpu")
    k = r.get("kib_per_call")
    if k is None or k > TARGET_KIB_PER_CALL:
        miss.append("mem")
    e = r.get("entry_to_refer_http_p99_ms")
    w = r.get("info_wire_refer_p99_ms")
    if e is None or e > TARGET_REFER_P99_MS or (w is not None and w > TARGET_REFER_P99_MS):
        miss.append("refer")
    lat = r.get("lateness_p99_ms")
    if lat is None or lat >= TARGET_LATENESS_P99_MS:
        miss.append("lateness")
    return miss


def fmt(v, spec="", none="-"):
    if v is None:
        return none
    return format(v, spec)


def step_line(r):
    n = r["n"]
    return (f"N={n:<6} ok={fmt(r.get('completed'))}/{n} failed={fmt(r.get('failed'))} "
            f"verified={r.get('verified')}/{n} "
            f"cpu/call={fmt(r.get('cpu_pct_per_call'), '.4f')}% "
            f"(usr {fmt(r.get('cpu_pct_per_call_user'), '.4f')} "
            f"sys {fmt(r.get('cpu_pct_per_call_sys'), '.4f')}) "
            f"cores={fmt(r.get('cores'), '.3f')} "
            f"KiB/call={fmt(r.get('kib_per_call'), '.1f')} "
            f"peakRSS={fmt(r.get('rss_peak_kib') and r['rss_peak_kib'] / 1024, '.0f')}MiB "
            f"inv>200 p99={fmt(r.get('invite_200_p99_ms'), '.0f')}ms "
            f"#>REFER p50/p99={fmt(r.get('entry_to_refer_http_p50_ms'), '.0f')}/"
            f"{fmt(r.get('entry_to_refer_http_p99_ms'), '.0f')}ms "
            f"(file {fmt(r.get('entry_to_refer_file_p50_ms'), '.0f')}/"
            f"{fmt(r.get('entry_to_refer_file_p99_ms'), '.0f')}; "
            f"wire INFO {fmt(r.get('info_wire_refer_p50_ms'), '.0f')}/"
            f"{fmt(r.get('info_wire_refer_p99_ms'), '.0f')}) "
            f"late p99={fmt(r.get('lateness_p99_ms'), '.2f')}ms "
            f"(hold {fmt(r.get('hold_lateness_p99_ms'), '.2f')}) "
            f"rtx={fmt(r.get('sipp_retransmissions'))} "
            f"busy={fmt(r.get('machine_busy_cores'), '.2f')}/{os.cpu_count()} "
            f"{'PASS' if not r['miss'] else 'miss:' + ','.join(r['miss'])}")


def rate_line(r):
    n = r["n"]
    return (f"RATE {r['rate']}/s x {r['duration_s']}s: attempted={fmt(r.get('attempted'))} "
            f"ok={fmt(r.get('completed'))} failed={fmt(r.get('failed'))} "
            f"verified={r.get('verified')}/{n} achieved={fmt(r.get('setup_rate'), '.1f')}/s "
            f"cores={fmt(r.get('run_cores'), '.2f')} "
            f"cpu/call={fmt(r.get('cpu_ms_per_call'), '.2f')}ms "
            f"inv>200 p99={fmt(r.get('invite_200_p99_ms'), '.0f')}ms "
            f"#>REFER p99={fmt(r.get('entry_to_refer_http_p99_ms'), '.0f')}ms "
            f"(wire INFO {fmt(r.get('info_wire_refer_p99_ms'), '.0f')}ms) "
            f"late p99={fmt(r.get('lateness_p99_ms'), '.2f')}ms "
            f"rtx={fmt(r.get('sipp_retransmissions'))} "
            f"{'PASS' if not r['miss'] else 'miss:' + ','.join(r['miss'])}")


# ---------------------------------------------------------------------------------------

class Crm:
    def __init__(self, args, work):
        self.log = open(os.path.join(work, "crm.log"), "w")
        self.p = spawn([sys.executable, os.path.join(HERE, "crm.py"), "--port", "0",
                        "--prefix", HTTP_PREFIX, "--count", "1000000", "--pin", PIN],
                       stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.p.stdout.readline().strip()
        if not line.startswith("listening "):
            raise Failed(f"the bench CRM did not start: {line!r}")
        self.url = line.split(" ", 1)[1]

    def requests(self):
        try:
            return json.loads(http_get(f"{self.url}/stats")[1])["requests"]
        except (OSError, ValueError, KeyError):
            return 0


def port_free(port, kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    if kind == socket.SOCK_STREAM:
        # As the service binds it: a TIME_WAIT left by the last step is no obstacle.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def parse_mix(text):
    mix = {"rfc4733": 0, "inband": 0, "info": 0}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in mix:
            raise argparse.ArgumentTypeError(f"--mix: unknown method {k!r}")
        mix[k.strip()] = float(v)
    if abs(sum(mix.values()) - 100) > 0.01:
        raise argparse.ArgumentTypeError("--mix: the shares must add up to 100")
    return mix


def main():
    p = argparse.ArgumentParser(
        prog="bench/load/run", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True,
                   help="the pincoderouting binary (bench/load/run: --bin, "
                        "$PINCODEROUTING_BIN, or it builds target/release/pincoderouting)")
    p.add_argument("--steps", default="500,1000,2000,4000,8000",
                   help="concurrent calls per step, comma-separated ('' = none)")
    p.add_argument("--hold-ms", type=int, default=20000,
                   help="how long each call waits after the answer before its PIN")
    p.add_argument("--ramp-s", type=float, default=8.0,
                   help="each step's calls are placed within about this long")
    p.add_argument("--ramp-rate", type=int, default=0,
                   help="calls per second while ramping up (0: N / --ramp-s, at least 20, "
                        "at most --max-ramp-rate)")
    p.add_argument("--max-ramp-rate", type=int, default=200,
                   help="the ramp's (and so the PIN phase's) highest rate: SIPp plays each "
                        "capture on a thread and a raw socket of its own, and beyond ~200 "
                        "captures a second SIPp, not the service, runs out of CPU")
    p.add_argument("--rate", "--rate-step", type=int, default=500,
                   help="the call-rate step: short calls per second (0: no rate step)")
    p.add_argument("--duration", type=int, default=20, help="the call-rate step's seconds")
    p.add_argument("--mix", type=parse_mix, default=parse_mix("rfc4733=80,inband=10,info=10"),
                   help="how callers send the PIN, in %% (default rfc4733=80,inband=10,info=10)")
    p.add_argument("--rate-mix", type=parse_mix, default=parse_mix("info=100"),
                   help="how the call-rate step's callers send the PIN (default info=100: "
                        "SIPp plays a capture on a thread and raw socket of its own, and at "
                        "hundreds a second SIPp, not the service, runs out of CPU)")
    p.add_argument("--file-share", type=float, default=10.0,
                   help="%% of calls to the file-CRM organization (argon2id per call)")
    p.add_argument("--contacts", type=int, default=5000,
                   help="contacts in the file CRM (at least the file calls of a step)")
    p.add_argument("--label", default="", help="a name for this run in the results' names")
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--cache", default="", help="where the argon2id hashes are cached")
    p.add_argument("--sip-port", type=int, default=5290)
    p.add_argument("--sipp-port", type=int, default=5291)
    p.add_argument("--admin-port", type=int, default=9290)
    p.add_argument("--media-port", type=int, default=7100, help="SIPp's media port")
    p.add_argument("--sipp-media-ip", default="127.0.0.3",
                   help="SIPp's media address (-mi), a loopback address apart from ours: "
                        "SIPp binds each playing capture's raw socket to it, and a raw socket "
                        "gets a copy of every UDP datagram to its address")
    p.add_argument("--rtp-sink", choices=["auto", "on", "off"], default="auto",
                   help="after the window, drop our RTP to SIPp's media port with nftables "
                        "before delivery, so SIPp's raw pcap sockets do not each get a copy "
                        "(auto: when root and nft are there)")
    p.add_argument("--rtp-range", default="20000-60000", help="our RTP ports")
    p.add_argument("--settle-s", type=float, default=1.0,
                   help="wait after all calls are up before the window opens")
    p.add_argument("--log-level", default="warn", help="the service's log level")
    p.add_argument("--shared-socket", action="store_true",
                   help="[media] shared_socket = true (one RTP port per call loop, frames "
                        "sent with sendmmsg). SIPp's pcap play sends every call's RTP from one "
                        "port, which a shared socket cannot tell apart: use with --mix info=100")
    args = p.parse_args()
    # Absolute: the service runs in each step's directory.
    args.bin = os.path.abspath(args.bin)
    args.rtp_range = tuple(int(x) for x in args.rtp_range.split("-"))
    steps = [int(x) for x in args.steps.replace(" ", "").split(",") if x]

    if os.environ.get("PCR_BENCH_OWN_GROUP") == "1":
        # Started by bench/load/run, which ends this whole group however the run ends.
        os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for port, kind in ((args.sip_port, socket.SOCK_DGRAM), (args.sipp_port, socket.SOCK_DGRAM),
                       (args.media_port, socket.SOCK_DGRAM),
                       (args.admin_port, socket.SOCK_STREAM)):
        if not port_free(port, kind):
            sys.exit(f"bench/load: port {port} is in use (another bench or test running?)")

    if args.rtp_sink == "auto" and not RtpSink("auto", args.media_port).usable:
        log("no nft, or not root: our RTP goes to SIPp in the PIN phase too (see --rtp-sink)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    # Default label: the build's git revision (from --version), else the binary's name.
    rev = version.split("(git ", 1)[1].split(")", 1)[0] if "(git " in version else ""
    label = "".join(c if c.isalnum() or c in "-_." else "_"
                    for c in (args.label or rev or os.path.basename(args.bin)))
    work = tempfile.mkdtemp(prefix="pcr-load-")
    os.makedirs(args.results, exist_ok=True)
    out_base = os.path.join(args.results, f"{stamp}-{label}")
    meta = {"stamp": stamp, "label": label, "bin": os.path.abspath(args.bin),
            "version": version, "host": socket.gethostname(), "cores": os.cpu_count(),
            "cpu": cpu_model(), "kernel": os.uname().release, "sipp": sipp_version(),
            "command": " ".join(sys.argv), "hold_ms": args.hold_ms, "mix": args.mix,
            "rate_mix": args.rate_mix, "file_share_pct": args.file_share, "contacts": args.contacts,
            "targets": {"cpu_pct_per_call_max": TARGET_CPU_PCT_PER_CALL,
                        "kib_per_call_max": TARGET_KIB_PER_CALL,
                        "entry_to_refer_http_p99_ms_max": TARGET_REFER_P99_MS,
                        "lateness_p99_ms_below": TARGET_LATENESS_P99_MS},
            "steps": [], "rate_step": None}
    log(f"{version}; {os.cpu_count()} cores; work dir {work}; results {out_base}.json")
    print(f"# {version}  bin={meta['bin']}  {meta['cpu']} x{os.cpu_count()}  "
          f"hold={args.hold_ms}ms mix={fmt_mix(args.mix)} rate-mix={fmt_mix(args.rate_mix)} "
          f"file-CRM share={args.file_share:g}%",
          flush=True)
    crm = None
    try:
        need_file = max([round(n * args.file_share / 100) for n in steps]
                        + [round(args.rate * args.duration * args.file_share / 100)])
        if need_file > args.contacts:
            args.contacts = need_file
        make_contacts(args, work)
        crm = Crm(args, work)
        for n in steps:
            if 2 * n + 200 > nofile:
                log(f"N={n}: skipped: needs ~{2 * n + 200} open files, ulimit -n is {nofile}")
                meta["steps"].append({"n": n, "skipped": f"ulimit -n {nofile}"})
                print(f"N={n:<6} SKIPPED: needs ~{2 * n + 200} open files, ulimit -n is "
                      f"{nofile}", flush=True)
                continue
            rate = args.ramp_rate or min(args.max_ramp_rate,
                                         max(20, math.ceil(n / args.ramp_s)))
            # The PIN phase comes at the ramp's rate; the hold outlasts the ramp by 10 s
            # at least, so that every call is up for a steady window before the first PIN.
            hold_ms = max(args.hold_ms, math.ceil(n / rate * 1000) + 10000)
            log(f"step N={n}: ramp {rate}/s, hold {hold_ms} ms")
            try:
                r = run_calls(args, work, crm, f"step-{n}", n, rate, hold_ms)
            except Failed as e:
                r = {"n": n, "error": str(e)}
                log(f"N={n}: {e}")
            r["miss"] = judge(r, n) if "error" not in r else ["error"]
            meta["steps"].append(r)
            print(step_line(r) if "error" not in r else f"N={n:<6} ERROR {r['error']}",
                  flush=True)
            if r.get("window_note"):
                log(f"N={n}: {r['window_note']}")
            write_results(out_base, meta)
        passing = [r["n"] for r in meta["steps"] if r.get("miss") == []]
        meta["largest_n_all_targets"] = max(passing) if passing else None
        but_cpu = [r["n"] for r in meta["steps"] if r.get("miss") in ([], ["cpu"])]
        meta["largest_n_all_but_cpu"] = max(but_cpu) if but_cpu else None
        if steps:
            print(f"largest N with every target held: "
                  f"{meta['largest_n_all_targets'] if passing else 'none'}; "
                  f"with every target but CPU per call: "
                  f"{meta['largest_n_all_but_cpu'] or 'none'}", flush=True)
        if args.rate > 0 and args.duration > 0:
            n = args.rate * args.duration
            if 2 * min(n, args.rate * 10) + 200 > nofile:
                log("rate step: ulimit -n may be too low")
            log(f"rate step: {args.rate} calls/s for {args.duration} s ({n} short calls)")
            try:
                r = run_calls(args, work, crm, "rate", n, args.rate, 0, window=False,
                              mix=args.rate_mix)
                r["duration_s"] = args.duration
                if r.get("run_s"):
                    r["run_cores"] = round(r["run_cpu_s"] / r["run_s"], 3)
                    r["cpu_ms_per_call"] = round(1000 * r["run_cpu_s"] / n, 3)
                miss = ["crashed"] if r.get("service_exit") is not None else []
                if not (r.get("failed") == 0 and r.get("completed") == n):
                    miss.append("success")
                if r.get("verified") != n:
                    miss.append("verified")
                if (r.get("setup_rate") or 0) < 0.95 * args.rate:
                    miss.append("rate")
                r["miss"] = miss
                print(rate_line(r), flush=True)
            except Failed as e:
                r = {"n": n, "error": str(e), "miss": ["error"]}
                print(f"RATE ERROR {e}", flush=True)
            meta["rate_step"] = r
        write_results(out_base, meta)
        print(f"# results: {out_base}.json, {out_base}.csv", flush=True)
    except Failed as e:
        log(f"cannot run: {e}")
        sys.exit(2)
    finally:
        stop_all()
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


CSV_COLUMNS = ["n", "attempted", "completed", "failed", "verified", "audit_calls",
               "cpu_pct_per_call", "cpu_pct_per_call_user", "cpu_pct_per_call_sys", "cores",
               "kib_per_call", "rss_idle_kib", "rss_hold_kib", "rss_peak_kib",
               "invite_200_p50_ms", "invite_200_p99_ms", "entry_to_refer_http_p50_ms",
               "entry_to_refer_http_p99_ms", "entry_to_refer_file_p50_ms",
               "entry_to_refer_file_p99_ms", "info_wire_refer_p50_ms",
               "info_wire_refer_p99_ms", "metrics_entry_to_refer_p99_ms",
               "lateness_p99_ms", "hold_lateness_p99_ms", "window_s", "ramp_s",
               "late_frames_skipped", "sipp_retransmissions", "left_in_progress",
               "sipp_cores", "crm_cores", "machine_busy_cores", "miss"]


def write_results(base, meta):
    with open(base + ".json.tmp", "w") as f:
        json.dump(meta, f, indent=1, default=str)
    os.replace(base + ".json.tmp", base + ".json")
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind"] + CSV_COLUMNS + ["setup_rate"])
        rows = [("step", r) for r in meta["steps"]]
        if meta.get("rate_step"):
            rows.append(("rate", meta["rate_step"]))
        for kind, r in rows:
            vals = [r.get(c) for c in CSV_COLUMNS + ["setup_rate"]]
            vals = [" ".join(v) if isinstance(v, list) else v for v in vals]
            w.writerow([kind] + ["" if v is None else v for v in vals])


def fmt_mix(mix):
    return ",".join(f"{k}={v:g}" for k, v in mix.items())


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def sipp_version():
    try:
        r = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5)
        for line in (r.stdout + r.stderr).splitlines():
            if "SIPp" in line:
                return line.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "?"


if __name__ == "__main__":
    main()
