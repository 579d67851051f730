#!/usr/bin/env python3
"""Draws the performance plots from the files one `scripts/bench` run wrote, as SVG.

usage: plot_figures.py RUN_DIR OUT_DIR

  latency.svg     a RemoteModule forward's round trip (mean, us) against payload size: remora over
                  TCP and over the same-host transport, PyTorch's RemoteModule, and the raw TCP
                  socket's echo of the same bytes (no RPC at all), from one run on one host
  throughput.svg  asynchronous 4 B calls per second: remora rpc_async and RemoteModule
                  forward_async over TCP and same-host, PyTorch's RemoteModule

Needs matplotlib (Debian's python3-matplotlib; `scripts/bootstrap bench` installs it).
"""
import os, re, sys

import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt

run, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
plt.rcParams["svg.hashsalt"] = "remora"  # the same figures make the same file


def figures(name):
    path = os.path.join(run, name)
    if not os.path.exists(path):
        return {}
    return {k: float(v) for k, v in (l.split() for l in open(path) if len(l.split()) == 2)}


def text(name):
    path = os.path.join(run, name)
    return open(path).read() if os.path.exists(path) else ""


sizes = [4, 4096, 1 << 20, 64 << 20]
labels = ["4 B", "4 KiB", "1 MiB", "64 MiB"]
tcp, local = figures("rpc.txt"), figures("rpc_local.txt")
pytorch = {}
for m in re.finditer(r"sync forward (\d+)B: ([\d.]+) us/call", text("pytorch.txt")):
    pytorch[int(m.group(1))] = float(m.group(2))
limits = text("limits.txt")
raw = {}
if m := re.search(r"round trip 8 B: p50 ([\d.]+) us", limits):
    raw[4] = float(m.group(1))
for m in re.finditer(r"tcp echo (\d+) B: mean ([\d.]+) us", limits):
    raw[int(m.group(1))] = float(m.group(2))
if m := re.search(r"tcp echo 64 MiB: ([\d.]+) us per echo", limits):
    raw[64 << 20] = float(m.group(1))

fig, ax = plt.subplots(figsize=(7, 4.5))
for name, series, style in [
    ("remora, TCP", {s: tcp.get(f"module_{s}B_mean_us") for s in sizes}, "o-"),
    ("remora, same host (unix socket + shared memory)", {s: local.get(f"module_{s}B_mean_us") for s in sizes}, "s-"),
    ("PyTorch RemoteModule (TensorPipe)", pytorch, "^--"),
    ("raw TCP socket echo, no RPC", raw, "x:"),
]:
    xs = [s for s in sizes if series.get(s)]
    if xs:
        ax.plot(xs, [series[s] for s in xs], style, label=name)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(sizes, labels)
ax.set_xlabel("tensor sent and returned (RemoteModule forward of an echo module)")
ax.text(0.99, 0.02, "raw socket probe: blocking threads (remora polls)", transform=ax.transAxes, ha="right", fontsize=7, alpha=0.7)
ax.set_ylabel("round trip, mean (us)")
ax.set_title("Round trip against payload, one host, loopback")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(out, "latency.svg"))

bars = [
    ("remora rpc_async, TCP", tcp.get("async_4B_calls_per_s")),
    ("remora rpc_async, same host", local.get("async_4B_calls_per_s")),
    ("remora forward_async, TCP", tcp.get("module_async_4B_calls_per_s")),
    ("remora forward_async, same host", local.get("module_async_4B_calls_per_s")),
]
if m := re.search(r"async forward 4B pipelined: ([\d.]+) calls", text("pytorch.txt")):
    bars.append(("PyTorch RemoteModule forward_async", float(m.group(1))))
bars = [(n, v) for n, v in bars if v]
fig, ax = plt.subplots(figsize=(7.5, 3.5))
ax.barh([n for n, _ in bars][::-1], [v for _, v in bars][::-1], color="#4c72b0")
for i, (_, v) in enumerate(bars[::-1]):
    ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
ax.set_xlabel("4 B calls/s (in flight: remora 20,000, PyTorch 5,000)")
ax.set_title("Asynchronous throughput, one caller, one host")
ax.set_xlim(0, max(v for _, v in bars) * 1.25)
fig.tight_layout()
fig.savefig(os.path.join(out, "throughput.svg"))
print(f"plots: {out}/latency.svg, {out}/throughput.svg")
