#!/usr/bin/env python3
"""bench/load/compare.py A.json B.json: two load-benchmark runs side by side.

For each step N found in both (and the call-rate step), one line per figure: A, B and B/A.
Lower is better for every figure but `achieved/s`. Standard library only.
"""
import json
import sys

FIGURES = [
    ("cpu_pct_per_call", "cpu %/call", ".4f"),
    ("cpu_pct_per_call_user", "  user", ".4f"),
    ("cpu_pct_per_call_sys", "  sys", ".4f"),
    ("cores", "cores", ".3f"),
    ("kib_per_call", "KiB/call", ".1f"),
    ("rss_peak_kib", "peak RSS KiB", ".0f"),
    ("invite_200_p99_ms", "INVITE>200 p99 ms", ".0f"),
    ("entry_to_refer_http_p50_ms", "#>REFER p50 ms", ".0f"),
    ("entry_to_refer_http_p99_ms", "#>REFER p99 ms", ".0f"),
    ("entry_to_refer_file_p99_ms", "#>REFER file p99", ".0f"),
    ("lateness_p99_ms", "lateness p99 ms", ".2f"),
    ("hold_lateness_p99_ms", "  in the hold", ".2f"),
    ("failed", "failed calls", ".0f"),
    ("machine_busy_cores", "machine busy cores", ".2f"),
]
RATE = [
    ("setup_rate", "achieved/s", ".1f"),
    ("failed", "failed calls", ".0f"),
    ("cpu_ms_per_call", "CPU ms/call", ".3f"),
    ("invite_200_p99_ms", "INVITE>200 p99 ms", ".0f"),
    ("entry_to_refer_http_p99_ms", "#>REFER p99 ms", ".0f"),
    ("lateness_p99_ms", "lateness p99 ms", ".2f"),
]


def cell(v, spec):
    return "-" if v is None else format(v, spec)


def rows(a, b, figures):
    for key, name, spec in figures:
        x, y = a.get(key), b.get(key)
        ratio = f"{y / x:.2f}x" if isinstance(x, (int, float)) and isinstance(
            y, (int, float)) and x else ""
        print(f"  {name:<20} {cell(x, spec):>12} {cell(y, spec):>12} {ratio:>8}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip())
    a, b = (json.load(open(p)) for p in sys.argv[1:])
    print(f"A: {a.get('label')} {a.get('version')} ({a.get('stamp')})")
    print(f"B: {b.get('label')} {b.get('version')} ({b.get('stamp')})")
    sa = {s["n"]: s for s in a.get("steps", []) if "error" not in s and "skipped" not in s}
    sb = {s["n"]: s for s in b.get("steps", []) if "error" not in s and "skipped" not in s}
    for n in sorted(set(sa) & set(sb)):
        print(f"{'N=' + str(n):<22} {'A':>12} {'B':>12} {'B/A':>8}")
        rows(sa[n], sb[n], FIGURES)
    ra, rb = a.get("rate_step"), b.get("rate_step")
    if ra and rb and "error" not in ra and "error" not in rb:
        head = f"rate {ra.get('rate')}/s vs {rb.get('rate')}/s"
        print(f"{head:<22} {'A':>12} {'B':>12} {'B/A':>8}")
        rows(ra, rb, RATE)
    print(f"largest N with every target: A {a.get('largest_n_all_targets')}, "
          f"B {b.get('largest_n_all_targets')}")


if __name__ == "__main__":
    main()
