#!/usr/bin/env python3
"""Summarises a soak run (benches/soak.sh) and plots it as an SVG with no plotting library.

soak_report.py CSV WRK_OUTPUT HUB_LOG PAYEDGE_STDERR SVG HUB_CLIENTS
"""
import csv
import json
import re
import sys

csv_path, wrk_path, hub_path, err_path, svg_path, hub_expected = sys.argv[1:7]
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(csv_path))]
if not rows:
    sys.exit("no samples")
wrk = open(wrk_path).read()
hub_lines = [json.loads(l) for l in open(hub_path) if l.startswith("{")]
hub = hub_lines[-1] if hub_lines else {}
stderr_lines = [l for l in open(err_path) if l.strip()]

after_minute = [r for r in rows if r["seconds"] >= 60] or rows
rss_minute = after_minute[0]["rss_kib"]
rss_end = rows[-1]["rss_kib"]
rss_change = (rss_end - rss_minute) / rss_minute * 100
fds = [r["fds"] for r in after_minute]
depth_max = max(r["events_queue_depth"] for r in rows)
requests = int(re.search(r"(\d+) requests in", wrk).group(1)) if "requests in" in wrk else 0
non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)) else 0
socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", wrk))
rate = re.search(r"Requests/sec:\s+([\d.]+)", wrk)

rss_ok = abs(rss_change) <= 5
# Flat: never above its value after the first minute (a leak grows; idle provider connections
# closing late in the run lower it).
fds_ok = max(fds) <= fds[0] + 5
missing = max(0, int(hub_expected) - hub.get("connected", 0))
errors = non_2xx + socket_errors + hub.get("closed", 0) + hub.get("errors", 0) + missing
print(f"soak: {int(rows[-1]['seconds'])} s, {requests} requests ({rate.group(1) if rate else '?'}/s), "
      f"hub {hub.get('connected', 0)} connections received {hub.get('received', 0)} events")
print(f"RSS after 1 min {rss_minute / 1024:.1f} MiB, at the end {rss_end / 1024:.1f} MiB "
      f"({rss_change:+.1f} %): {'goal met' if rss_ok else 'NOT met'} (within 5 %)")
print(f"descriptors after 1 min {int(fds[0])}, then {int(min(fds))}-{int(max(fds))}, at the end "
      f"{int(fds[-1])}: {'flat (no growth)' if fds_ok else 'NOT flat (grew)'}")
print(f"events queue depth at most {int(depth_max)}")
print(f"errors: {non_2xx} non-2xx, {socket_errors} socket errors, {hub.get('closed', 0)} hub "
      f"connections closed, {missing} of {hub_expected} hub connections never connected, "
      f"{len(stderr_lines)} lines on payedge's stderr: {'goal met' if errors == 0 else 'NOT met'}")

# Three panels sharing the time axis.
W, H, PAD, GAP = 900, 170, 60, 30
panels = [
    ("RSS (MiB)", [r["rss_kib"] / 1024 for r in rows], "#1f77b4"),
    ("open descriptors", [r["fds"] for r in rows], "#d62728"),
    ("hub connections", [r["hub_connections"] for r in rows], "#2ca02c"),
]
t = [r["seconds"] for r in rows]
t0, t1 = min(t), max(t) or 1
height = len(panels) * (H + GAP) + 40
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
       f'font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{height}" fill="white"/>']
for i, (label, values, colour) in enumerate(panels):
    top = 20 + i * (H + GAP)
    lo, hi = 0, max(values) * 1.1 or 1
    def x(s):
        return PAD + (s - t0) / ((t1 - t0) or 1) * (W - PAD - 20)
    def y(v):
        return top + H - (v - lo) / (hi - lo) * H
    out.append(f'<text x="{PAD}" y="{top - 5}" font-weight="bold">{label}</text>')
    out.append(f'<rect x="{PAD}" y="{top}" width="{W - PAD - 20}" height="{H}" fill="none" stroke="#999"/>')
    for frac in (0, 0.5, 1):
        v = lo + (hi - lo) * frac
        out.append(f'<text x="{PAD - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(t, values))
    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
for s in range(0, int(t1) + 1, 60):
    xs = PAD + (s - t0) / ((t1 - t0) or 1) * (W - PAD - 20)
    if xs >= PAD:
        out.append(f'<text x="{xs:.1f}" y="{height - 10}" text-anchor="middle">{s} s</text>')
out.append("</svg>")
open(svg_path, "w").write("\n".join(out) + "\n")
