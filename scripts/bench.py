#!/usr/bin/env python3
"""vtepd benchmark: userspace VXLAN (vtepd) against the kernel's flannel.1.

Builds a two-node testbed out of network namespaces for every row and every
round, measures, tears it down, and reports medians and ratios to the kernel
VXLAN row (B):

  A   raw veth underlay        node A 192.0.2.1 -> node B 192.0.2.2, no overlay
  B   kernel VXLAN (flannel.1) pod 10.244.1.2 -> pod 10.244.2.2 via flannel.1,
                               set up exactly like Flannel's vxlan backend
  C   vtepd VXLAN              same pods, vtepd instead of flannel.1
  C0  vtepd packet-per-syscall vtepd --no-offload --batch 1
  D   kernel host-gw           (optional) pods routed over the underlay, no
                               encapsulation; Flannel's host-gw backend
  E   vtepd IPIP               (optional) vtepd's IPIP backend (Calico's IPIP
                               mode): TUN + raw sockets, pod MTU 1480
  F   vtepd host-gw            (optional) vtepd's host-gw backend: the same
                               kernel routes as D, installed by vtepd

Rows run interleaved (A B C C0 A B C C0 ...) so slow drifts of the machine hit
every row alike. Figures per row: TCP throughput with 1 and 4 streams, 64-byte
UDP packets received per second and loss, ping RTT mean and p99 (one every
10 ms) and mean back to back, CPU seconds per GB moved (see NOTES below, also
printed and stored in bench.json).

Adding a row: write `def setup_xxx(tb, opts, **kw) -> Endpoints` (build the
data path on the Testbed `tb`, return who talks to whom) and list it in
ROW_REGISTRY with a key and a label; `--rows` picks rows by key.

Run as root:  sudo python3 scripts/bench.py [--rounds 3] [--time 5] [--out bench-out]
Outputs: table on stdout, progress on stderr, OUT/bench.json, OUT/bench.svg.
Exit status: 0 all rows measured, 3 some row failed in every round, 2 usage.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- #
# addressing plan (documentation ranges + Flannel's default pod network)
# --------------------------------------------------------------------------- #

NODES = {
    #     underlay IP     pod subnet        VTEP MAC              bridge IP     pod IP
    "A": ("192.0.2.1", "10.244.1.0/24", "02:00:00:00:00:01", "10.244.1.1", "10.244.1.2"),
    "B": ("192.0.2.2", "10.244.2.0/24", "02:00:00:00:00:02", "10.244.2.1", "10.244.2.2"),
}
PEER = {"A": "B", "B": "A"}
VNI, VXLAN_PORT, OVERLAY_MTU = 1, 8472, 1450

NOTES = [
    "Rows run interleaved (A B C ... A B C ...); each row/round builds and deletes its own namespaces.",
    "Overlay rows measure pod->pod (pod netns -> veth -> cni0 bridge -> overlay -> cni0 -> pod, MTU 1450); "
    "row A measures node->node on the bare veth underlay (MTU 1500).",
    "TCP: iperf3 -J -t T [-P 4], figure = receiver goodput (sum_received.bits_per_second). bench.json "
    "also has each test's retransmits and the reordering the sender's TCP saw (TcpExt TCPSACKReorder in "
    "the client's netns): a forwarder that splits a flow across workers shows there first.",
    "UDP GSO: scripts/lib/udp_gso.py, one sendmsg with UDP_SEGMENT per 40 datagrams of 1200 B (as QUIC "
    "stacks send) for T seconds, received with UDP_GRO; figure = bytes received / the sender's seconds, "
    "loss = datagrams not received.",
    "UDP 64 B: iperf3 -u -l 64 -b RATE (0 = unlimited), figure = packets the receiving iperf3 counted "
    "per second ((packets - lost_packets) / seconds); loss % as reported by iperf3 (sequence gaps), "
    "which includes drops at the receiving socket.",
    "RTT: ping -c N -i 0.01, every reply's time= parsed; mean and p99 (nearest rank) in microseconds. "
    "Back to back: ping -c 10N -A (the next request leaves when the reply is in), mean; no idle "
    "wake-ups in it, so it shows the cost of each hop itself.",
    "All CPU figures are taken over the 1-stream TCP test and divided by GB (1e9 bytes) of TCP payload "
    "received by iperf3; all namespaces share one kernel, so both 'nodes' are on this machine's bill.",
    "CPU s/GB involved: utime+stime of every process involved, summed: the iperf3 client (rusage of "
    "the reaped child), the iperf3 server, the vtepd processes of both nodes with all their threads "
    "(/proc/PID/stat utime+stime+cutime+cstime deltas), and the ksoftirqd/N threads. Kernel work in "
    "their syscalls and softirq work run on their stack is included (this kernel uses tick-based "
    "accounting without IRQ_TIME_ACCOUNTING, which charges softirq ticks to the interrupted task); "
    "softirq ticks that hit unrelated tasks are not. Robust to other load on the machine.",
    "CPU s/GB whole machine: busy time of all CPUs (user+nice+system+irq+softirq+steal from /proc/stat) "
    "over the same interval: everything above plus any unrelated load. Background load is sampled "
    "before the run (background_cpu_cores in bench.json) and NOT subtracted.",
    "CPU s/GB vtepd only: the vtepd part of the 'involved' figure (both nodes).",
    "Ratios: median of the row / median of row B (kernel VXLAN); for RTT and CPU lower is better; losses have none (a ratio of two loss rates means nothing). "
    "round_ratios_to_B: each round's figure / row B's in the same round (rows of a round run back to back, so the pair shares the machine's state); the table shows their range.",
]


# --------------------------------------------------------------------------- #
# small utilities
# --------------------------------------------------------------------------- #


class BenchError(Exception):
    """A failure with a one-line reason meant for the report."""


def run(cmd: list[str], timeout: float = 30, check: bool = True, input: Optional[str] = None
        ) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(cmd)}")
    except FileNotFoundError:
        raise BenchError(f"command not found: {cmd[0]}")
    if check and p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise BenchError(f"`{shlex.join(cmd)}` exited {p.returncode}: {msg[-1] if msg else ''}")
    return p


def tail(path: Path, n: int = 5) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def cpu_times() -> dict[str, int]:
    """Aggregate 'cpu' line of /proc/stat, in clock ticks."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return {n: int(v) for n, v in zip(names, parts[1:9])}


def busy_seconds(t0: dict, t1: dict) -> dict[str, float]:
    d = {k: (t1[k] - t0[k]) / CLK_TCK for k in t0}
    d["busy"] = sum(d[k] for k in ("user", "nice", "system", "irq", "softirq", "steal"))
    return d


def proc_cpu_seconds(pid: int) -> Optional[float]:
    """utime+stime+cutime+cstime of a process (all threads), seconds; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Progress:
    """One updating status line on stderr (a plain line per update when not a tty)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.width = 0

    def __call__(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:5.0f}s] {msg}"
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns - 1
            line = line[:cols]
            sys.stderr.write("\r" + line.ljust(self.width) + "\r" + line)
            self.width = len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()
            self.width = 0


# --------------------------------------------------------------------------- #
# Testbed: namespaces, links and processes of one row in one round
# --------------------------------------------------------------------------- #


class Testbed:
    """Two nodes (netns A and B, underlay veth0 192.0.2.1/24 <-> 192.0.2.2/24,
    ip_forward on) plus, on request, a cni0 bridge and a pod netns per node.

    Netns names are "vb<pid>-<tag>-<node>", unique to this run. close() kills
    every process started here or found running in these namespaces (by pid)
    and deletes the namespaces; it runs even on Ctrl-C/SIGTERM.
    """

    def __init__(self, tag: str, workdir: Path) -> None:
        self.prefix = f"vb{os.getpid()}-{tag}"
        self.dir = workdir / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        self.namespaces: list[str] = []
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.closed = False

    # -- namespaces ---------------------------------------------------------
    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def add_ns(self, node: str) -> str:
        name = self.ns(node)
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.ip(node, "link", "set", "lo", "up")
        return name

    def ip(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.ns(node), *args], check=check)

    def exec(self, node: str, cmd: list[str], timeout: float = 30, check: bool = True
             ) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.ns(node), *cmd], timeout=timeout, check=check)

    def spawn(self, node: str, name: str, cmd: list[str]) -> subprocess.Popen:
        """Start a long-running process in a netns; output to DIR/name.{out,err}."""
        out = open(self.dir / f"{name}.out", "w")
        err = open(self.dir / f"{name}.err", "w")
        # `ip netns exec` execs the command: the Popen pid is the command's pid.
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(node), *cmd],
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        out.close()
        err.close()
        self.procs.append((name, p))
        return p

    def pids_in(self, node: str) -> list[int]:
        p = run(["ip", "netns", "pids", self.ns(node)], check=False)
        return [int(x) for x in p.stdout.split() if x.isdigit()]

    # -- topology -------------------------------------------------------------
    def build_nodes(self) -> None:
        for node in NODES:
            self.add_ns(node)
            self.exec(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # created directly inside the two namespaces: no name in the root netns
        run(["ip", "link", "add", "veth0", "netns", self.ns("A"), "type", "veth",
             "peer", "name", "veth0", "netns", self.ns("B")])
        for node, (ip, *_rest) in NODES.items():
            self.ip(node, "addr", "add", f"{ip}/24", "dev", "veth0")
            self.ip(node, "link", "set", "veth0", "up")

    def add_pods(self, mtu: int = OVERLAY_MTU) -> None:
        """cni0 bridge (.1/24) on each node, pod netns behind a veth (.2/24)."""
        for node, (_ip, subnet, _mac, br_ip, pod_ip) in NODES.items():
            pod = f"{node}-pod"
            self.add_ns(pod)
            self.ip(node, "link", "add", "cni0", "mtu", str(mtu), "type", "bridge")
            self.ip(node, "addr", "add", f"{br_ip}/24", "dev", "cni0")
            self.ip(node, "link", "set", "cni0", "up")
            run(["ip", "link", "add", "veth-pod", "netns", self.ns(node), "mtu", str(mtu),
                 "type", "veth", "peer", "name", "eth0", "netns", self.ns(pod), "mtu", str(mtu)])
            self.ip(node, "link", "set", "veth-pod", "master", "cni0", "up")
            self.ip(pod, "addr", "add", f"{pod_ip}/24", "dev", "eth0")
            self.ip(pod, "link", "set", "eth0", "up")
            self.ip(pod, "route", "add", "default", "via", br_ip)

    # -- teardown -----------------------------------------------------------
    def stop(self, p: subprocess.Popen, timeout: float = 10) -> Optional[int]:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for _name, p in self.procs:
                try:
                    self.stop(p, timeout=5)
                except Exception:
                    pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                left = []
                for ns in self.namespaces:
                    node = ns[len(self.prefix) + 1:]
                    left += self.pids_in(node)
                for pid in left:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                if not left:
                    break
                time.sleep(0.5)
            for ns in reversed(self.namespaces):
                run(["ip", "netns", "del", ns], check=False)
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Endpoints:
    """What a row setup returns: who measures against whom."""
    client: str                 # node/netns short name of the sender (iperf3 -c, ping)
    server: str                 # short name of the receiver (iperf3 -s)
    server_ip: str
    daemons: list = field(default_factory=list)   # (node, name, Popen) of data-path daemons
    iperf3_server: Optional[subprocess.Popen] = None
    info: dict = field(default_factory=dict)      # anything worth storing in bench.json


# --------------------------------------------------------------------------- #
# rows: one setup function each
# --------------------------------------------------------------------------- #


def wait_reachable(tb: Testbed, ep: Endpoints, seconds: float = 10,
                   alive: Optional[Callable[[], None]] = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if alive:
            alive()
        p = tb.exec(ep.client, ["ping", "-n", "-c", "1", "-W", "1", ep.server_ip], check=False)
        if p.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"no connectivity {ep.client} -> {ep.server_ip} after {seconds:.0f}s")
        time.sleep(0.2)


def setup_underlay(tb: Testbed, opts, **kw) -> Endpoints:
    """A: bare veth, node to node."""
    tb.build_nodes()
    ep = Endpoints("A", "B", NODES["B"][0])
    wait_reachable(tb, ep)
    return ep


def setup_kernel_vxlan(tb: Testbed, opts, **kw) -> Endpoints:
    """B: flannel.1 exactly as Flannel's vxlan backend configures it."""
    tb.build_nodes()
    tb.add_pods(OVERLAY_MTU)
    for node, (ip, subnet, mac, _br, _pod) in NODES.items():
        tb.ip(node, "link", "add", "flannel.1", "type", "vxlan", "id", str(VNI), "dstport",
              str(VXLAN_PORT), "local", ip, "dev", "veth0", "nolearning")
        tb.ip(node, "link", "set", "flannel.1", "address", mac, "mtu", str(OVERLAY_MTU), "up")
        tb.ip(node, "addr", "add", subnet.split("/")[0] + "/32", "dev", "flannel.1")
    for node in NODES:
        p_ip, p_subnet, p_mac, _br, _pod = NODES[PEER[node]]
        p_net = p_subnet.split("/")[0]
        tb.ip(node, "route", "add", p_subnet, "via", p_net, "dev", "flannel.1", "onlink")
        tb.ip(node, "neigh", "add", p_net, "lladdr", p_mac, "dev", "flannel.1", "nud", "permanent")
        run(["bridge", "-n", tb.ns(node), "fdb", "append", p_mac, "dev", "flannel.1", "dst", p_ip])
    ep = Endpoints("A-pod", "B-pod", NODES["B"][4])
    wait_reachable(tb, ep)
    return ep


def setup_kernel_hostgw(tb: Testbed, opts, **kw) -> Endpoints:
    """D: Flannel host-gw: pod subnets routed via the peer's underlay IP, no encapsulation."""
    tb.build_nodes()
    tb.add_pods(1500)
    for node in NODES:
        p_ip, p_subnet, *_ = NODES[PEER[node]]
        tb.ip(node, "route", "add", p_subnet, "via", p_ip, "dev", "veth0")
    ep = Endpoints("A-pod", "B-pod", NODES["B"][4])
    wait_reachable(tb, ep)
    return ep


# pod MTU per vtepd backend: VXLAN costs 50 bytes, IPIP 20, host-gw nothing
POD_MTU = {"vxlan": OVERLAY_MTU, "ipip": 1480, "host-gw": 1500}


def vtepd_config(node: str, backend: str = "vxlan", device: str = "vtep0") -> str:
    ip, subnet, mac, _br, _pod = NODES[node]
    lines = ["[node]", f'public_ip = "{ip}"', f'subnet = "{subnet}"', f'backend = "{backend}"', ""]
    if backend == "vxlan":
        lines += ["[vxlan]", f'device = "{device}"', f"vni = {VNI}", f"port = {VXLAN_PORT}",
                  f'mac = "{mac}"', f"mtu = {OVERLAY_MTU}", ""]
    elif backend == "ipip":
        lines += ["[ipip]", f'device = "{device}"', f"mtu = {POD_MTU['ipip']}", ""]
    for peer, (p_ip, p_subnet, p_mac, _b, _p) in NODES.items():
        if peer != node:
            lines += ["[[peer]]", f'public_ip = "{p_ip}"', f'subnet = "{p_subnet}"']
            if backend == "vxlan":  # the other backends have no VTEP MAC
                lines.append(f'vtep_mac = "{p_mac}"')
            lines.append("")
    return "\n".join(lines)


def setup_vtepd(tb: Testbed, opts, args: tuple = (), backend: str = "vxlan",
                device: str = "vtep0", binary: Optional[str] = None, **kw) -> Endpoints:
    """C, C0, ...: vtepd on both nodes with extra command-line `args` (and another `binary`)."""
    binary = Path(binary or getattr(opts, "vtepd_snapshot", None) or opts.vtepd)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise BenchError(f"vtepd binary not found: {binary} (cargo build --release)")
    tb.build_nodes()
    tb.add_pods(POD_MTU[backend])
    ep = Endpoints("A-pod", "B-pod", NODES["B"][4])
    ep.info["device"] = device if backend != "host-gw" else None
    for node in NODES:
        cfg = tb.dir / f"vtepd-{node}.toml"
        cfg.write_text(vtepd_config(node, backend, device))
        cmd = [str(binary.resolve()), "run", "--config", str(cfg), *args]
        p = tb.spawn(node, f"vtepd-{node}", cmd)
        ep.daemons.append((node, f"vtepd-{node}", p))
    ep.info["vtepd_cmd"] = shlex.join(cmd)

    def alive() -> None:
        for node, name, p in ep.daemons:
            if p.poll() is not None:
                raise BenchError(f"vtepd on node {node} exited {p.returncode}: "
                                 f"{tail(tb.dir / (name + '.err'), 3) or tail(tb.dir / (name + '.out'), 3)}")

    # ready = both routes to the peer's pod subnet are on the device
    deadline = time.monotonic() + 10
    while True:
        alive()
        ready = all(tb.ip(n, "route", "show", NODES[PEER[n]][1], check=False).stdout.strip()
                    for n in NODES)
        if ready:
            break
        if time.monotonic() > deadline:
            raise BenchError("vtepd did not install the peer routes within 10s")
        time.sleep(0.1)
    wait_reachable(tb, ep, alive=alive)
    return ep


def teardown_vtepd(tb: Testbed, ep: Endpoints, result: dict) -> None:
    """Stop vtepd with SIGTERM, collect its exit status and counters."""
    counters, errors = {}, []
    for node, name, p in ep.daemons:
        rc = tb.stop(p, timeout=10)
        c = {}
        try:
            for line in (tb.dir / f"{name}.out").read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 2:
                    try:
                        c[parts[0]] = int(parts[1])
                    except ValueError:
                        try:
                            c[parts[0]] = float(parts[1])
                        except ValueError:
                            pass
        except OSError:
            pass
        counters[node] = c
        if rc not in (0, None):
            errors.append(f"vtepd on node {node}: exit status {rc}: "
                          f"{tail(tb.dir / (name + '.err'), 2)}")
        device = ep.info.get("device", "vtep0")
        if device and tb.ip(node, "link", "show", device, check=False).returncode == 0:
            errors.append(f"vtepd on node {node} left {device} behind")
    result["extra"]["vtepd_counters"] = counters
    result["warnings"] += errors


@dataclass
class Row:
    key: str
    label: str
    setup: Callable[..., Endpoints]
    kwargs: dict = field(default_factory=dict)
    teardown: Optional[Callable[[Testbed, Endpoints, dict], None]] = None


def row_registry(opts) -> list[Row]:
    """Every known row. Add new ones here (key, label, setup function, kwargs)."""
    rows = [
        Row("A", "raw veth underlay", setup_underlay),
        Row("B", "kernel VXLAN (flannel.1)", setup_kernel_vxlan),
        Row("C", "vtepd VXLAN", setup_vtepd, {"args": ()}, teardown_vtepd),
        Row("C0", "vtepd packet-per-syscall", setup_vtepd,
            {"args": ("--no-offload", "--batch", "1")}, teardown_vtepd),
        Row("D", "kernel host-gw (no encap)", setup_kernel_hostgw),
        Row("E", "vtepd IPIP", setup_vtepd, {"backend": "ipip", "device": "ipip0"}, teardown_vtepd),
        Row("F", "vtepd host-gw (no encap)", setup_vtepd, {"backend": "host-gw"}, teardown_vtepd),
    ]
    for spec in opts.variant:
        key, _, args = spec.partition(":")
        if not key or not args:
            raise SystemExit(f"--variant wants KEY:ARGS, e.g. 'C2:--workers 2', got {spec!r}")
        words = shlex.split(args)
        # '@PATH' first: another vtepd build, to compare two builds in one interleaved run.
        kw = {"binary": words.pop(0)[1:]} if words and words[0].startswith("@") else {}
        # The backend comes from the vtepd row named by the key's first letter ('Eold' is IPIP).
        base = next((r for r in rows if r.key == key[0] and r.setup is setup_vtepd), rows[2])
        rows.append(Row(key, f"{base.label} {args}", setup_vtepd,
                        {**base.kwargs, "args": tuple(words), **kw}, teardown_vtepd))
    return rows


DEFAULT_ROWS = ["A", "B", "C", "C0"]
REFERENCE_ROW = "B"


# --------------------------------------------------------------------------- #
# measurements: one function each, returning {figure: value} plus extras
# --------------------------------------------------------------------------- #


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    digits: int = 2
    # A ratio of two loss rates says nothing (0.02 % vs 30 % is "x1500"): losses are shown as is.
    ratio: bool = True


FIGURES = [
    Figure("tcp1_gbps", "TCP 1 stream", "Gbit/s", True),
    Figure("tcp4_gbps", "TCP 4 streams", "Gbit/s", True),
    Figure("udp64_kpps", "UDP 64 B received", "kpps", True, 1),
    Figure("udp64_loss_pct", "UDP 64 B loss", "%", False, 1, ratio=False),
    Figure("uso_gbps", "UDP GSO 1200 B received", "Gbit/s", True),
    Figure("uso_loss_pct", "UDP GSO 1200 B loss", "%", False, 1, ratio=False),
    Figure("rtt_mean_us", "ping RTT mean", "us", False, 1),
    Figure("rtt_p99_us", "ping RTT p99", "us", False, 1),
    Figure("rtt_b2b_mean_us", "ping RTT back to back, mean", "us", False, 1),
    Figure("cpu_s_per_gb", "CPU per GB, involved (TCP x1)", "CPU-s/GB", False, 3),
    Figure("machine_cpu_s_per_gb", "CPU per GB, whole machine (TCP x1)", "CPU-s/GB", False, 3),
    Figure("daemon_cpu_s_per_gb", "CPU per GB, vtepd only (TCP x1)", "CPU-s/GB", False, 3),
]
FIG = {f.key: f for f in FIGURES}


def iperf3_server(tb: Testbed, ep: Endpoints) -> subprocess.Popen:
    p = tb.spawn(ep.server, "iperf3-server", ["iperf3", "-s", "-B", ep.server_ip])
    ep.iperf3_server = p
    deadline = time.monotonic() + 5
    while True:
        if p.poll() is not None:
            raise BenchError(f"iperf3 server exited: {tail(tb.dir / 'iperf3-server.err', 2)}")
        if tb.exec(ep.server, ["ss", "-Htln", "sport = :5201"], check=False).stdout.strip():
            return p
        if time.monotonic() > deadline:
            raise BenchError("iperf3 server not listening after 5s")
        time.sleep(0.1)


def iperf3_client(tb: Testbed, ep: Endpoints, args: list[str], secs: float) -> dict:
    for attempt in range(3):
        p = tb.exec(ep.client, ["iperf3", "-c", ep.server_ip, "-J", "-t", str(secs), *args],
                    timeout=secs + 30, check=False)
        try:
            data = json.loads(p.stdout)
        except json.JSONDecodeError:
            raise BenchError(f"iperf3 {' '.join(args)}: no JSON (exit {p.returncode}): "
                             f"{p.stderr.strip()[-200:]}")
        err = data.get("error")
        if not err:
            return data
        if "busy" in err and attempt < 2:   # previous test still finishing on the server
            time.sleep(1)
            continue
        raise BenchError(f"iperf3 {' '.join(args)}: {err}")
    raise AssertionError("unreachable")


def ksoftirqd_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and proc_comm(int(d.name)).startswith("ksoftirqd/"):
            pids.append(int(d.name))
    return pids


def involved_cpu(tb: Testbed, ep: Endpoints, ksoftirqd: list[int]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of the long-running processes involved in a test:
    vtepd on the daemons' nodes, the iperf3 server, the ksoftirqd threads."""
    snap: dict[str, dict[int, float]] = {"vtepd": {}, "iperf3_server": {}, "ksoftirqd": {}}
    for node in {node for node, _n, _p in ep.daemons}:
        for pid in tb.pids_in(node):
            if proc_comm(pid).startswith("vtepd"):
                snap["vtepd"][pid] = proc_cpu_seconds(pid) or 0.0
    if ep.iperf3_server is not None:
        snap["iperf3_server"][ep.iperf3_server.pid] = proc_cpu_seconds(ep.iperf3_server.pid) or 0.0
    for pid in ksoftirqd:
        snap["ksoftirqd"][pid] = proc_cpu_seconds(pid) or 0.0
    return snap


def cpu_delta(before: dict[int, float], after_pids: dict[int, float]) -> float:
    """Sum of per-pid increases; a pid that vanished counts with its last value."""
    return sum(max(0.0, after_pids.get(pid, v) - v) for pid, v in before.items()) + \
        sum(v for pid, v in after_pids.items() if pid not in before)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sack_reorders(tb: Testbed, node: str) -> Optional[int]:
    """TcpExt TCPSACKReorder of `node`'s netns: times its TCP saw segments arrive out of order."""
    lines = tb.exec(node, ["cat", "/proc/net/netstat"], check=False).stdout.splitlines()
    for keys, values in zip(lines[::2], lines[1::2]):
        if keys.startswith("TcpExt:"):
            counters = dict(zip(keys.split()[1:], values.split()[1:]))
            return int(counters["TCPSACKReorder"]) if "TCPSACKReorder" in counters else None
    return None


def measure_tcp(tb: Testbed, ep: Endpoints, opts, streams: int = 1) -> dict:
    ksi = ksoftirqd_pids()
    reorders0 = sack_reorders(tb, ep.client)
    before = involved_cpu(tb, ep, ksi)
    # From here until `after` the only child we reap is the iperf3 client
    # (`ip netns exec` execs it), so the RUSAGE_CHILDREN delta is its CPU time.
    ch0, c0, w0 = children_cpu(), cpu_times(), time.monotonic()
    data = iperf3_client(tb, ep, ["-P", str(streams)] if streams > 1 else [], opts.time)
    ch1, c1, w1 = children_cpu(), cpu_times(), time.monotonic()
    after = involved_cpu(tb, ep, ksi)
    reorders1 = sack_reorders(tb, ep.client)
    end = data["end"]
    rx, tx = end["sum_received"], end["sum_sent"]
    gb = rx["bytes"] / 1e9
    machine = busy_seconds(c0, c1)
    parts = {k: cpu_delta(before[k], after[k]) for k in before}
    parts["iperf3_client"] = ch1 - ch0
    involved = sum(parts.values())
    k = f"tcp{streams}"
    res = {
        f"{k}_gbps": rx["bits_per_second"] / 1e9,
        "extra": {
            f"{k}_bytes": rx["bytes"],
            f"{k}_retransmits": tx.get("retransmits"),
            f"{k}_reorder_events": None if reorders0 is None or reorders1 is None else reorders1 - reorders0,
            f"{k}_wall_s": round(w1 - w0, 3),
            f"{k}_machine_cpu_s": {n: round(v, 3) for n, v in machine.items()},
            f"{k}_involved_cpu_s": {n: round(v, 3) for n, v in parts.items()},
            # busy CPU not explained by the processes involved: other load on the machine
            f"{k}_unrelated_cpu_cores": round(max(0.0, machine["busy"] - involved) / (w1 - w0), 3),
            f"{k}_iperf3_cpu_pct": end.get("cpu_utilization_percent"),
        },
    }
    if gb <= 0:
        raise BenchError(f"iperf3 -P {streams}: no bytes received")
    per_gb = {"cpu_s_per_gb": involved / gb, "machine_cpu_s_per_gb": machine["busy"] / gb}
    if ep.daemons:
        per_gb["daemon_cpu_s_per_gb"] = parts["vtepd"] / gb
    if streams == 1:
        res.update(per_gb)
    else:
        res["extra"].update({f"{k}_{n}": v for n, v in per_gb.items()})
    return res


def ping_rtts_us(tb: Testbed, ep: Endpoints, count: int, pacing: list[str]) -> list[float]:
    p = tb.exec(ep.client, ["ping", "-n", "-c", str(count), *pacing, "-W", "1", ep.server_ip],
                timeout=count * 0.05 + 20, check=False)
    rtts = [float(x) * 1000 for x in re.findall(r"time=([\d.]+) ms", p.stdout)]
    if not rtts:
        raise BenchError(f"ping: no replies ({p.stdout.strip().splitlines()[-1:] or p.stderr.strip()})")
    return rtts


def measure_ping(tb: Testbed, ep: Endpoints, opts) -> dict:
    """Two paces. One ping every 10 ms finds every thread on the path asleep, so on a VM each
    wake-up's cost is in the figure (ping's own too, for the kernel rows). Back to back (`ping -A`:
    the next request leaves when the reply is in) the path stays warm, which shows what each hop
    itself adds."""
    sparse = ping_rtts_us(tb, ep, opts.pings, ["-i", "0.01"])
    b2b = ping_rtts_us(tb, ep, opts.pings * 10, ["-A"])
    return {
        "rtt_mean_us": statistics.fmean(sparse),
        "rtt_p99_us": percentile(sparse, 99),
        "rtt_b2b_mean_us": statistics.fmean(b2b),
        "extra": {"ping_sent": opts.pings, "ping_received": len(sparse),
                  "rtt_min_us": min(sparse), "rtt_max_us": max(sparse),
                  "rtt_median_us": statistics.median(sparse),
                  "b2b_ping_sent": opts.pings * 10, "b2b_ping_received": len(b2b),
                  "rtt_b2b_p99_us": percentile(b2b, 99), "rtt_b2b_median_us": statistics.median(b2b)},
    }


def measure_udp64(tb: Testbed, ep: Endpoints, opts) -> dict:
    data = iperf3_client(tb, ep, ["-u", "-l", "64", "-b", opts.udp_rate], opts.time)
    end = data["end"]
    rx = end.get("sum_received") or end["sum"]
    tx = end.get("sum_sent") or end["sum"]
    received = rx["packets"] - rx["lost_packets"]
    secs = rx["seconds"] or opts.time
    return {
        "udp64_kpps": received / secs / 1e3,
        "udp64_loss_pct": rx["lost_percent"],
        "extra": {"udp64_sent_kpps": tx["packets"] / (tx["seconds"] or opts.time) / 1e3,
                  "udp64_packets_sent": rx["packets"], "udp64_packets_lost": rx["lost_packets"],
                  "udp64_iperf3_cpu_pct": end.get("cpu_utilization_percent")},
    }


USO_HELPER = REPO / "scripts/lib/udp_gso.py"
USO_PORT, USO_SIZE, USO_SEGS = 5301, 1200, 40


def measure_uso(tb: Testbed, ep: Endpoints, opts) -> dict:
    """QUIC-like traffic: bursts of 40 x 1200 B sent with UDP_SEGMENT, received with UDP_GRO."""
    helper = ["python3", str(USO_HELPER)]
    rx = tb.spawn(ep.server, "udp-gso-recv", [*helper, "recv", ep.server_ip, str(USO_PORT), str(opts.time)])
    err = tb.dir / "udp-gso-recv.err"
    deadline = time.monotonic() + 5
    while "ready" not in (err.read_text() if err.exists() else ""):
        if rx.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"udp_gso.py recv did not start: {tail(err, 2)}")
        time.sleep(0.05)
    p = tb.exec(ep.client, [*helper, "send", ep.server_ip, str(USO_PORT), str(opts.time), str(USO_SIZE),
                            str(USO_SEGS)], timeout=opts.time + 30, check=False)
    try:
        rx.wait(timeout=opts.time + 15)
        sent = json.loads(p.stdout)
        got = json.loads((tb.dir / "udp-gso-recv.out").read_text())
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError) as e:
        raise BenchError(f"udp_gso.py: {e}: {p.stderr.strip()[-200:]} {tail(err, 2)}")
    if not got["bytes"] or not sent["datagrams"]:
        raise BenchError("udp_gso.py: nothing received")
    return {
        "uso_gbps": got["bytes"] * 8 / sent["seconds"] / 1e9,
        "uso_loss_pct": max(0.0, 100 * (1 - got["datagrams"] / sent["datagrams"])),
        "extra": {"uso_sent_gbps": sent["bytes"] * 8 / sent["seconds"] / 1e9,
                  "uso_datagrams_sent": sent["datagrams"], "uso_datagrams_received": got["datagrams"]},
    }


MEASUREMENTS: list[tuple[str, Callable[..., dict]]] = [
    ("ping", measure_ping),
    ("tcp x1", lambda tb, ep, o: measure_tcp(tb, ep, o, 1)),
    ("tcp x4", lambda tb, ep, o: measure_tcp(tb, ep, o, 4)),
    ("udp 64B", measure_udp64),
    ("udp gso", measure_uso),
]


# --------------------------------------------------------------------------- #
# one row, one round
# --------------------------------------------------------------------------- #


def run_row(row: Row, rnd: int, opts, workdir: Path, progress: Progress) -> dict:
    result = {"round": rnd, "ok": False, "error": None, "warnings": [], "figures": {},
              "extra": {}, "setup_s": None}
    tag = f"{row.key}{rnd}"
    where = f"round {rnd}/{opts.rounds}  {row.key} {row.label}"
    with Testbed(tag, workdir) as tb:
        try:
            progress(f"{where}: setup")
            t0 = time.monotonic()
            ep = row.setup(tb, opts, **row.kwargs)
            result["setup_s"] = round(time.monotonic() - t0, 2)
            result["extra"].update(ep.info)
            iperf3_server(tb, ep)
        except BenchError as e:
            result["error"] = f"setup: {e}"
            return result
        except Exception as e:  # a bug in a setup function must not stop the bench
            result["error"] = f"setup: {type(e).__name__}: {e}"
            return result
        failures = []
        for name, fn in MEASUREMENTS:
            progress(f"{where}: {name}")
            try:
                r = fn(tb, ep, opts)
                result["extra"].update(r.pop("extra", {}))
                result["figures"].update(r)
            except (BenchError, KeyError, ValueError, TypeError) as e:
                failures.append(f"{name}: {e}")
            # a daemon that died mid-run invalidates the remaining figures
            dead = [(n, p.returncode) for n, _name, p in ep.daemons if p.poll() is not None]
            if dead:
                failures.append(f"daemon died during {name}: " +
                                ", ".join(f"node {n} exit {rc}" for n, rc in dead))
                break
            time.sleep(0.3)
        if row.teardown:
            progress(f"{where}: teardown")
            try:
                row.teardown(tb, ep, result)
            except Exception as e:
                result["warnings"].append(f"teardown: {e}")
        if failures:
            result["error"] = "; ".join(failures)
        result["ok"] = bool(result["figures"])
    return result


# --------------------------------------------------------------------------- #
# report: summary, table, JSON, SVG
# --------------------------------------------------------------------------- #


def summarise(rows: list[Row], raw: dict[str, list[dict]]) -> dict:
    out = {}
    for row in rows:
        rounds = raw[row.key]
        med = {}
        for f in FIGURES:
            vals = [r["figures"][f.key] for r in rounds if r["figures"].get(f.key) is not None]
            if vals:
                med[f.key] = statistics.median(vals)
        errors = sorted({r["error"] for r in rounds if r["error"]})
        warns = sorted({w for r in rounds for w in r["warnings"]})
        n_ok = sum(1 for r in rounds if r["ok"])
        if not rounds:
            status = "not run"
        elif n_ok == len(rounds) and not errors:
            status = "ok"
        else:
            status = "failed" if n_ok == 0 else "partial"
        out[row.key] = {"label": row.label, "setup": row.setup.__name__,
                        "kwargs": {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in row.kwargs.items()},
                        "status": status, "rounds_ok": n_ok, "errors": errors, "warnings": warns,
                        "median": med, "rounds": rounds}
    ref = out.get(REFERENCE_ROW, {}).get("median", {})
    no_ratio = {f.key for f in FIGURES if not f.ratio}
    ref_rounds = out.get(REFERENCE_ROW, {}).get("rounds", [])
    for key, r in out.items():
        r["ratio_to_" + REFERENCE_ROW] = {f: (v / ref[f]) if ref.get(f) and f not in no_ratio else None
                                          for f, v in r["median"].items()}
        r["round_ratios_to_" + REFERENCE_ROW] = {f: paired_ratios(r["rounds"], ref_rounds, f)
                                                 for f in r["median"] if f not in no_ratio}
    return out


def paired_ratios(rounds: list[dict], ref_rounds: list[dict], key: str) -> list[float]:
    """Each round's figure over the reference row's in the same round. Rows of one round run
    back to back, so these pairs cancel the machine's drift between rounds, and their spread
    says whether a ratio's second digit means anything."""
    ref = {rd["round"]: rd["figures"].get(key) for rd in ref_rounds}
    pairs = ((rd["figures"].get(key), ref.get(rd["round"])) for rd in rounds)
    return [v / b for v, b in pairs if v is not None and b]


def fmt(v: Optional[float], digits: int) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def render_table(rows: list[Row], summary: dict) -> str:
    ref = REFERENCE_ROW
    head = ["figure"] + [f"{r.key} {r.label}" for r in rows]
    lines = [head]
    for f in FIGURES:
        arrow = "^" if f.higher_is_better else "v"
        cells = [f"{f.label} [{f.unit}] {arrow}"]
        any_val = False
        for r in rows:
            s = summary[r.key]
            v = s["median"].get(f.key)
            if s["status"] == "failed":
                cells.append("FAILED")
                continue
            if v is None:
                cells.append("-")
                continue
            any_val = True
            ratio = s[f"ratio_to_{ref}"].get(f.key)
            per_round = s[f"round_ratios_to_{ref}"].get(f.key, [])
            spread = f", {min(per_round):.2f}-{max(per_round):.2f}" if len(per_round) > 1 else ""
            rs = f" (x{ratio:.2f}{spread})" if ratio is not None and r.key != ref else ""
            cells.append(fmt(v, f.digits) + rs)
        if any_val:
            lines.append(cells)
    lines.append(["rounds ok"] + [f"{summary[r.key]['rounds_ok']}/{len(summary[r.key]['rounds'])}"
                                  for r in rows])
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    text = []
    for n, l in enumerate(lines):
        text.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                              for i, c in enumerate(l)).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    ratio_note = (f"(xR, lo-hi) = ratio of medians to {ref} {summary[ref]['label']}, and the "
                  f"range of each round's own ratio" if ref in summary
                  else f"no ratios: reference row {ref} not run")
    text.append(f"medians over rounds; {ratio_note}; ^ higher is better, v lower is better")
    for r in rows:
        s = summary[r.key]
        for e in s["errors"]:
            text.append(f"{r.key} {'FAILED' if s['status'] == 'failed' else 'error'}: {e}")
        for w in s["warnings"]:
            text.append(f"{r.key} warning: {w}")
    return "\n".join(text)


def xml(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


PALETTE = ["#8c8c8c", "#4c72b0", "#dd8452", "#c44e52", "#55a868", "#8172b3", "#937860",
           "#da8bc3", "#ccb974", "#64b5cd"]


def render_svg(rows: list[Row], summary: dict, title: str, subtitle: str) -> str:
    figs = [f for f in FIGURES if any(summary[r.key]["median"].get(f.key) is not None for r in rows)]
    if not figs:
        figs = FIGURES[:1]
    cols = 3
    pw, ph = 330, 250            # panel size
    top = 96                     # title + legend
    nrows = math.ceil(len(figs) / cols)
    W, H = cols * pw + 20, top + nrows * ph + 30
    color = {r.key: PALETTE[i % len(PALETTE)] for i, r in enumerate(rows)}
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="12" y="24" font-size="17" font-weight="bold">{xml(title)}</text>',
         f'<text x="12" y="42" fill="#555">{xml(subtitle)}</text>']
    # legend
    x = 12
    for r in rows:
        s = summary[r.key]
        label = f"{r.key}  {r.label}" + ("  (FAILED)" if s["status"] == "failed" else "")
        o.append(f'<rect x="{x}" y="56" width="12" height="12" fill="{color[r.key]}"/>')
        o.append(f'<text x="{x + 16}" y="66">{xml(label)}</text>')
        x += 28 + 6.5 * len(label)
        if x > W - 200:
            x = 12  # wrap (rare): keep it simple, overlap avoided by few rows
    for i, f in enumerate(figs):
        px, py = 10 + (i % cols) * pw, top + (i // cols) * ph
        ch_x, ch_y, ch_w, ch_h = px + 44, py + 40, pw - 64, ph - 100
        vals = {r.key: summary[r.key]["median"].get(f.key) for r in rows}
        raws = {r.key: [rd["figures"].get(f.key) for rd in summary[r.key]["rounds"]
                        if rd["figures"].get(f.key) is not None] for r in rows}
        vmax = max([v for v in vals.values() if v is not None] +
                   [v for l in raws.values() for v in l] + [1e-9])
        step, nticks = nice_axis(vmax)
        vmax = step * nticks
        decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / 10 ** math.floor(math.log10(step) + 1e-9), 3) == 2.5 else 0)
        better = "higher is better" if f.higher_is_better else "lower is better"
        o.append(f'<g><text x="{px + 4}" y="{py + 16}" font-size="13" font-weight="bold">'
                 f'{xml(f.label)}</text>')
        o.append(f'<text x="{px + 4}" y="{py + 30}" fill="#666">{xml(f.unit)}, {better}</text>')
        for t in range(nticks + 1):
            v = step * t
            y = ch_y + ch_h - ch_h * t / nticks
            o.append(f'<line x1="{ch_x}" y1="{y:.1f}" x2="{ch_x + ch_w}" y2="{y:.1f}" '
                     f'stroke="{"#999" if t == 0 else "#e5e5e5"}"/>')
            o.append(f'<text x="{ch_x - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#666" '
                     f'font-size="10">{v:,.{decimals}f}</text>')
        slot = ch_w / max(1, len(rows))
        bw = min(44, slot * 0.7)
        for j, r in enumerate(rows):
            cx = ch_x + slot * (j + 0.5)
            v = vals[r.key]
            base = ch_y + ch_h
            if v is None:
                o.append(f'<text x="{cx:.1f}" y="{base - 6}" text-anchor="middle" fill="#c00" '
                         f'font-size="10">{"failed" if summary[r.key]["status"] == "failed" else "n/a"}</text>')
            else:
                h = ch_h * v / vmax
                o.append(f'<rect x="{cx - bw / 2:.1f}" y="{base - h:.1f}" width="{bw:.1f}" '
                         f'height="{max(h, 0.5):.1f}" fill="{color[r.key]}">'
                         f'<title>{xml(r.key)} {xml(r.label)}: {fmt(v, f.digits)} {xml(f.unit)}</title></rect>')
                for rv in raws[r.key]:
                    o.append(f'<circle cx="{cx:.1f}" cy="{base - ch_h * rv / vmax:.1f}" r="2" '
                             f'fill="black" fill-opacity="0.55"/>')
                top_y = base - ch_h * max([v] + raws[r.key]) / vmax
                o.append(f'<text x="{cx:.1f}" y="{top_y - 5:.1f}" text-anchor="middle" '
                         f'font-size="10">{fmt(v, f.digits)}</text>')
            ratio = summary[r.key][f"ratio_to_{REFERENCE_ROW}"].get(f.key)
            o.append(f'<text x="{cx:.1f}" y="{base + 14}" text-anchor="middle" font-weight="bold">'
                     f'{xml(r.key)}</text>')
            if ratio is not None and r.key != REFERENCE_ROW:
                o.append(f'<text x="{cx:.1f}" y="{base + 27}" text-anchor="middle" fill="#555" '
                         f'font-size="10">x{ratio:.2f}</text>')
        o.append("</g>")
    o.append(f'<text x="12" y="{H - 10}" fill="#777" font-size="10">bars: median over rounds; '
             f'dots: individual rounds; xR: ratio to row {REFERENCE_ROW}</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def nice_axis(vmax: float, target: int = 4) -> tuple[float, int]:
    """A round tick step (1, 2, 2.5, 5 x 10^k) and the number of steps to cover vmax."""
    raw = vmax / target
    exp = math.floor(math.log10(raw))
    step = next(m for m in (1, 2, 2.5, 5, 10) if m * 10 ** exp >= raw * (1 - 1e-9)) * 10 ** exp
    return step, max(1, math.ceil(vmax / step - 1e-9))


# --------------------------------------------------------------------------- #
# machine / provenance
# --------------------------------------------------------------------------- #


def machine_info() -> dict:
    info = {"hostname": socket.gethostname(), "kernel": platform.release(),
            "kernel_version": platform.version(), "arch": platform.machine(),
            "nproc": os.cpu_count(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()
        info["mem_gb"] = round(int(mem[1]) / 1024 / 1024, 1)
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except (OSError, IndexError, ValueError):
        pass
    try:
        info["iperf3"] = run(["iperf3", "--version"], check=False).stdout.splitlines()[0]
    except (BenchError, IndexError):
        info["iperf3"] = None
    return info


HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def cpu_idle_info() -> dict:
    """How an idle CPU waits. In a VM whose idle driver is haltpoll with guest_halt_poll_ns 0,
    an idle vCPU halts at once, so every wake-up of a sleeping thread is a VM exit and entry:
    the cost each vtepd hand-off pays, and the kernel path mostly does not."""
    base = Path("/sys/devices/system/cpu/cpuidle")
    info: dict = {}
    for key, path in (("driver", base / "current_driver"), ("governor", base / "current_governor_ro"),
                      ("guest_halt_poll_ns", HALT_POLL)):
        try:
            info[key] = path.read_text().strip()
        except OSError:
            info[key] = None
    if info["guest_halt_poll_ns"] is not None:
        info["guest_halt_poll_ns"] = int(info["guest_halt_poll_ns"])
    return info


THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The transparent-huge-page mode (always, madvise or never; None without THP). vtepd asks for
    huge pages under its packet buffers, where the kernel copies every frame: with `never` each
    copy takes a TLB miss every 4 KB, and vtepd's figures drop (docs/performance.md)."""
    try:
        text = THP_ENABLED.read_text()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def set_halt_poll(ns: int) -> int:
    """Sets guest_halt_poll_ns, returning the value it had."""
    before = int(HALT_POLL.read_text().strip())
    HALT_POLL.write_text(f"{ns}\n")
    return before


def git_info() -> dict:
    def g(*args: str) -> Optional[str]:
        try:
            p = run(["git", "-C", str(REPO), *args], check=False, timeout=10)
        except BenchError:
            return None
        return p.stdout.strip() if p.returncode == 0 else None
    status = g("status", "--porcelain", "--untracked-files=no")
    return {"commit": g("rev-parse", "HEAD"), "describe": g("describe", "--always", "--dirty"),
            "dirty": bool(status) if status is not None else None}


def vtepd_info(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        return {"path": str(p), "present": False}
    st = p.stat()
    info = {"path": str(p.resolve()), "present": True, "size": st.st_size,
            "mtime": _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).isoformat(timespec="seconds"),
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    try:
        info["version"] = run([str(p), "--version"], check=False, timeout=5).stdout.strip() or None
    except BenchError:
        info["version"] = None
    return info


def pipe_round_trip_us(n: int, cpu: Optional[int] = None) -> float:
    """Mean time for a byte to go to another process and back through two pipes: two sleeps and
    two wake-ups, the hand-off a userspace forwarder pays per hop and the kernel path does not."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo side: no Python teardown, no exceptions escaping into the bench
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            for _ in range(n):
                os.read(a_r, 1)
                os.write(b_w, b"x")
        finally:
            os._exit(0)
    mask = os.sched_getaffinity(0)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        t = time.perf_counter()
        for _ in range(n):
            os.write(a_w, b"x")
            os.read(b_r, 1)
        return (time.perf_counter() - t) / n * 1e6
    finally:
        os.sched_setaffinity(0, mask)
        os.waitpid(pid, 0)
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)


def machine_costs() -> dict:
    """What a syscall and a process hand-off cost on this machine (µs, Python's own overhead
    included): vtepd's ratios to the kernel path depend on these more than on the CPU's speed."""
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        os.getppid()
    costs = {"syscall_us": round((time.perf_counter() - t) / n * 1e6, 3),
             "pipe_round_trip_us": round(pipe_round_trip_us(20_000), 2)}
    costs["pipe_round_trip_one_cpu_us"] = round(pipe_round_trip_us(20_000, cpu=min(os.sched_getaffinity(0))), 2)
    return costs


def background_cpu(seconds: float = 2.0) -> float:
    """Busy CPU cores of the machine while the bench is idle (noise indicator)."""
    c0 = cpu_times()
    time.sleep(seconds)
    return busy_seconds(c0, cpu_times())["busy"] / seconds


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark vtepd against kernel VXLAN (flannel.1) and the raw underlay, "
                    "in network namespaces. Needs root.",
        epilog="rows: A raw veth underlay, B kernel VXLAN (flannel.1), C vtepd, "
               "C0 vtepd --no-offload --batch 1; not in the default set: D kernel host-gw, E vtepd IPIP, F vtepd host-gw. "
               "Example: sudo scripts/bench.py --rows A,B,C --variant 'C2:--workers 2' --rows A,B,C,C2")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds, >= 3 (default 3)")
    ap.add_argument("--time", type=float, default=5, help="seconds per iperf3 test (default 5)")
    ap.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                    help=f"comma-separated row keys, or 'all' (default {','.join(DEFAULT_ROWS)})")
    ap.add_argument("--variant", action="append", default=[], metavar="KEY:ARGS",
                    help="extra vtepd row with these arguments, e.g. 'C2:--workers 2', on the backend of "
                         "the row named by KEY's first letter (C VXLAN, E IPIP, F host-gw); ARGS may "
                         "start with @PATH to run another vtepd build, e.g. 'Cold:@/tmp/old/vtepd' "
                         "(also add KEY to --rows unless --rows is default)")
    ap.add_argument("--vtepd", default=str(REPO / "target/release/vtepd"),
                    help="vtepd binary (default target/release/vtepd)")
    ap.add_argument("--out", default="bench-out", help="output dir for bench.json/bench.svg")
    ap.add_argument("--pings", type=int, default=200, help="pings per RTT measurement (default 200; the back-to-back one sends 10x as many)")
    ap.add_argument("--udp-rate", default="0",
                    help="iperf3 -b for the 64-byte UDP test (default 0 = as fast as possible)")
    ap.add_argument("--halt-poll-ns", type=int, metavar="NS",
                    help="in a VM with the haltpoll idle driver: let idle vCPUs poll up to NS ns before "
                         "halting during the run (guest_halt_poll_ns; restored afterwards)")
    ap.add_argument("--keep-logs", action="store_true", help="keep per-row configs and daemon logs in OUT/logs")
    o = ap.parse_args(argv)
    if o.rounds < 3:
        ap.error("--rounds must be at least 3 (medians of fewer rounds are not worth reporting)")
    if o.time < 1:
        ap.error("--time must be at least 1 second")
    o.time = int(o.time) if float(o.time).is_integer() else o.time
    if o.halt_poll_ns is not None:
        if not 0 <= o.halt_poll_ns <= 1_000_000_000:
            ap.error("--halt-poll-ns must be between 0 and 1000000000")
        if not HALT_POLL.exists():
            ap.error(f"--halt-poll-ns needs the haltpoll cpuidle driver (a KVM guest); {HALT_POLL} does not exist here")
    return o


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("vtepd bench needs root (network namespaces): run with sudo", file=sys.stderr)
        return 2
    for tool in ("ip", "bridge", "iperf3", "ping", "ss"):
        if not shutil.which(tool):
            print(f"missing tool: {tool} (run scripts/deps.sh)", file=sys.stderr)
            return 2

    registry = {r.key: r for r in row_registry(opts)}
    keys = list(registry) if opts.rows == "all" else [k.strip() for k in opts.rows.split(",") if k.strip()]
    if opts.rows == ",".join(DEFAULT_ROWS):
        keys += [v.partition(":")[0] for v in opts.variant if v.partition(":")[0] not in keys]
    unknown = [k for k in keys if k not in registry]
    if unknown:
        print(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(registry)}", file=sys.stderr)
        return 2
    rows = [registry[k] for k in keys]

    # SIGINT (even if inherited as ignored), SIGTERM, SIGHUP: unwind, tear down, report, exit.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vtepd-bench-"))
    progress = Progress()
    started = _dt.datetime.now(_dt.timezone.utc)
    # Snapshot the binary: a `cargo build` during the run must not change it
    # between rounds. Named "vtepd" so its processes are found by comm.
    vinfo = vtepd_info(opts.vtepd)
    # The commit of the binary being measured: taken now, as the tree may change during the run.
    ginfo = git_info()
    if vinfo["present"] and any(r.setup is setup_vtepd for r in rows):
        (workdir / "bin").mkdir()
        opts.vtepd_snapshot = str(workdir / "bin" / "vtepd")
        shutil.copy2(opts.vtepd, opts.vtepd_snapshot)
    raw: dict[str, list[dict]] = {r.key: [] for r in rows}
    interrupted = False
    bg: Optional[float] = None
    costs: dict = {}
    try:
        halt_poll_before = set_halt_poll(opts.halt_poll_ns) if opts.halt_poll_ns is not None else None
    except (OSError, ValueError) as e:
        print(f"--halt-poll-ns: cannot set {HALT_POLL}: {e} (a read-only sysfs, as in a container?)", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        return 2
    cpuidle = cpu_idle_info()
    try:
        progress("sampling background CPU load (2 s)")
        bg = background_cpu(2.0)
        progress("timing a syscall and a process hand-off")
        costs = machine_costs()
        for rnd in range(1, opts.rounds + 1):
            for row in rows:
                res = run_row(row, rnd, opts, workdir, progress)
                raw[row.key].append(res)
                if res["error"]:
                    progress.done()
                    print(f"round {rnd} {row.key}: {res['error']}", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        progress.done()
        print("interrupted: namespaces removed, reporting what was measured", file=sys.stderr)
    finally:
        progress.done()
        if halt_poll_before is not None:
            set_halt_poll(halt_poll_before)
        if opts.keep_logs:
            dst = out_dir / "logs"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(workdir, dst)
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarise(rows, raw)
    minfo = {**machine_info(), "cpuidle": cpuidle, "thp": thp_mode()}
    notes = list(NOTES)
    if bg is not None and bg > 0.05:
        notes.append(f"WARNING: the machine was {bg:.2f} cores busy before the run: "
                     "figures are noisy.")
    noisy = [(r.key, rd["round"], rd["extra"]["tcp1_unrelated_cpu_cores"]) for r in rows
             for rd in raw[r.key] if rd["extra"].get("tcp1_unrelated_cpu_cores", 0) > 0.15]
    if noisy:
        total = sum(len(raw[r.key]) for r in rows)
        cores = [c for _k, _n, c in noisy]
        notes.append(f"WARNING: other load on the machine during {len(noisy)} of {total} row-rounds "
                     f"({min(cores):.2f}-{max(cores):.2f} cores; per round in bench.json "
                     "extra.tcp1_unrelated_cpu_cores): throughput, RTT and CPU figures of those "
                     "rounds are disturbed; re-run on an idle machine.")
    report = {
        "schema": 1,
        "tool": "vtepd scripts/bench.py",
        "date": started.isoformat(timespec="seconds"),
        "duration_s": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
        "interrupted": interrupted,
        "machine": {**minfo, "costs": costs},
        "git": ginfo,
        "vtepd": vinfo,
        "args": {k: v for k, v in vars(opts).items() if k != "vtepd_snapshot"},
        "background_cpu_cores": round(bg, 3) if bg is not None else None,
        "reference_row": REFERENCE_ROW,
        "figures": {f.key: {"label": f.label, "unit": f.unit,
                            "better": "higher" if f.higher_is_better else "lower"} for f in FIGURES},
        "rows": summary,
        "notes": notes,
    }
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    title = "vtepd bench: userspace VXLAN vs kernel flannel.1"
    subtitle = (f"{started:%Y-%m-%d %H:%M} UTC, kernel {minfo['kernel']}, {minfo['nproc']} CPU "
                f"{minfo.get('cpu_model', '')}, commit {ginfo.get('describe') or '?'}, "
                f"{opts.rounds} rounds x {opts.time} s")
    (out_dir / "bench.svg").write_text(render_svg(rows, summary, title, subtitle))

    print(f"vtepd bench  {subtitle}")
    if costs:
        print(f"machine: a syscall {costs['syscall_us']:.2f} µs; a pipe round trip between two processes "
              f"{costs['pipe_round_trip_us']:.1f} µs across CPUs, {costs['pipe_round_trip_one_cpu_us']:.1f} µs "
              "on one CPU (each ping through vtepd wakes 3 threads; through flannel.1 none)")
    idle = minfo.get("cpuidle") or {}
    if idle.get("guest_halt_poll_ns") == 0:
        print("machine: idle vCPUs halt at once (cpuidle haltpoll, guest_halt_poll_ns 0): every wake-up of "
              "an idle vCPU is a VM exit, which vtepd's hand-offs pay more often than flannel.1 (docs/performance.md, Latency)")
    if minfo["thp"] in (None, "never"):
        print("machine: no transparent huge pages: vtepd's packet buffers are on 4 KB pages, which costs "
              "it CPU per GB (docs/performance.md)")
    print(render_table(rows, summary))
    print()
    for n in notes:
        print("note: " + n)
    print(f"\nwrote {out_dir / 'bench.json'} and {out_dir / 'bench.svg'}")
    if interrupted:
        return 130
    return 3 if any(s["status"] == "failed" for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
