#!/usr/bin/env python3
"""etcd-mode scale benchmark (not a test): N fake Flannel leases in a real etcd, one vtepd joining.

Measures, for each N:
  join      start of `vtepd run` -> subnet file written (lease acquired, backend up)
  converge  start of `vtepd run` -> all N peers' routes in the kernel (route is installed after the
            FDB/neighbour entries, so a route present means the peer is fully programmed)
  change    a new lease put into etcd -> its route in the kernel (median and max of 20)
  rss       vtepd's VmRSS once converged

Everything runs in one throw-away network namespace: etcd on its loopback, vtepd on a veth
underlay 192.0.2.1/24. No packet is sent to the fake peers; their PublicIPs are taken from the
overlay range (10.244.0.0/16, the .2 of each /30) only because the allowed underlay ranges have
too few addresses for 10,000 nodes.

Usage (root, release build first):  scripts/etcd_scale.py [--vtepd PATH] [N ...]   (default 1000 10000)
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

NS = f"vt-escale-{os.getpid()}"
PORT = 23790
PREFIX = "/coreos.com/network"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def nsrun(*args, **kw):
    return sh("ip", "netns", "exec", NS, *args, **kw)


def lease_value(ip, mac):
    return json.dumps({"PublicIP": ip, "PublicIPv6": None, "BackendType": "vxlan",
                       "BackendData": {"VNI": 1, "VtepMAC": mac}}, separators=(",", ":"))


def fake(i):
    """Lease i (0-based): subnet 10.244.x.y/30 (skipping the first /30), PublicIP its .2."""
    base = (10 << 24) | (244 << 16)
    net = base + (i + 1) * 4
    ip = lambda a: f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
    mac = "02:aa:%02x:%02x:%02x:%02x" % ((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)
    return f"{ip(net)}-30", f"{ip(net)}/30", lease_value(ip(net + 2), mac)


WRITER = r'''
import base64, http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", %d)
for line in sys.stdin:
    k, v = line.rstrip("\n").split("\t", 1)
    body = json.dumps({"key": base64.b64encode(k.encode()).decode(), "value": base64.b64encode(v.encode()).decode()})
    c.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit("put %%s: HTTP %%d" %% (k, r.status))
''' % PORT


def put_many(pairs):
    data = "".join(f"{k}\t{v}\n" for k, v in pairs)
    subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", WRITER], input=data, text=True, check=True)


def routes():
    out = nsrun("ip", "-o", "route", "show", "dev", "vtep0", check=False)
    return out.count("\n")


def has_route(prefix):
    return nsrun("ip", "route", "show", prefix, check=False).strip() != ""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait(what, cond, bound):
    end = time.monotonic() + bound
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.005)


def one(n, vtepd, tmp):
    data = os.path.join(tmp, f"etcd-{n}")
    url = f"http://127.0.0.1:{PORT}"
    etcd = subprocess.Popen(["ip", "netns", "exec", NS, "etcd", "--data-dir", data, "--listen-client-urls", url,
                             "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:23800",
                             "--initial-advertise-peer-urls", "http://127.0.0.1:23800",
                             "--initial-cluster", "default=http://127.0.0.1:23800", "--log-level", "error", "--logger", "zap"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    vt = None
    try:
        wait("etcd", lambda: subprocess.run(["ip", "netns", "exec", NS, "etcdctl", f"--endpoints={url}", "endpoint", "health"],
                                            capture_output=True).returncode == 0, 20)
        put_many([(f"{PREFIX}/config", json.dumps({"Network": "10.244.0.0/16", "SubnetLen": 30, "Backend": {"Type": "vxlan"}}))])
        t = time.monotonic()
        put_many([(f"{PREFIX}/subnets/{k}", v) for k, _, v in (fake(i) for i in range(n))])
        write_s = time.monotonic() - t
        env = os.path.join(tmp, f"subnet-{n}.env")
        cfg = os.path.join(tmp, f"vtepd-{n}.toml")
        with open(cfg, "w") as f:
            f.write(f'[node]\npublic_ip = "192.0.2.1"\n[etcd]\nendpoints = ["{url}"]\nsubnet_file = "{env}"\n')
        t0 = time.monotonic()
        vt = subprocess.Popen(["ip", "netns", "exec", NS, vtepd, "--log-level", "warn", "run", "--config", cfg, "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait("join", lambda: os.path.exists(env), 60)
        join_s = time.monotonic() - t0
        wait(f"{n} routes", lambda: routes() >= n, 600)
        conv_s = time.monotonic() - t0
        rss = rss_kib(vt.pid)
        lat = []
        for j in range(20):
            k, prefix, v = fake(n + 200 + j)  # clear of the first 100 free subnets vtepd picks from
            put_many([(f"{PREFIX}/subnets/{k}", v)])
            # From the moment the put returned (etcd has it): the watch, vtepd, netlink, our poll.
            t = time.monotonic()
            wait(f"route {prefix}", lambda: has_route(prefix), 60)
            lat.append(time.monotonic() - t)
        return dict(n=n, write_s=round(write_s, 2), join_s=round(join_s, 3), converge_s=round(conv_s, 2),
                    change_median_ms=round(statistics.median(lat) * 1000, 1), change_max_ms=round(max(lat) * 1000, 1),
                    rss_mib=round(rss / 1024, 1))
    finally:
        if vt:
            vt.terminate()
            try:
                vt.wait(60)
            except subprocess.TimeoutExpired:
                vt.kill()
        etcd.kill()
        etcd.wait()


def main():
    args = sys.argv[1:]
    vtepd = "target/release/vtepd"
    if args[:1] == ["--vtepd"]:
        vtepd, args = args[1], args[2:]
    sizes = [int(a) for a in args] or [1000, 10000]
    vtepd = os.path.abspath(vtepd)
    tmp = tempfile.mkdtemp(prefix="vtepd-escale-")
    sh("ip", "netns", "add", NS)
    try:
        nsrun("ip", "link", "set", "lo", "up")
        nsrun("ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
        nsrun("ip", "link", "set", "ul1", "up")
        nsrun("ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
        nsrun("ip", "link", "set", "ul0", "up")
        for n in sizes:
            print(json.dumps(one(n, vtepd, tmp)), flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
