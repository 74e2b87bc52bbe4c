#!/usr/bin/env python3
"""piforge-node vs serf on loopback: convergence, failure detection, idle bytes/s, RSS.

Run through bench.sh, which makes a private network namespace (so the loopback byte counters
see only the benchmark) and runs this script inside it. Prints a Markdown table.

For each tool and each cluster size N:
  1. start N-1 agents (all join agent 0) and wait until every agent sees N-1 alive;
  2. join:   start agent N-1, time until every other agent lists it alive;
  3. idle:   10 s without polling, loopback tx bytes / 10 s / N  (bytes/s per node);
  4. RSS:    mean VmRSS of the agent processes;
  5. detect: SIGKILL agent N//2, time until every other agent lists it failed.
Times are measured by polling every agent; a polling round over 100 agents takes a while
(serf: one `serf members` process per agent), so the resolution is reported too.
"""
import argparse
import concurrent.futures as cf
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request

KEY = "5" * 64


def lo_tx():
    with open("/sys/class/net/lo/statistics/tx_bytes") as f:
        return int(f.read())


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Piforge:
    name = "piforge-node"

    def __init__(self, binary, tmp):
        self.bin, self.tmp = binary, tmp

    def start(self, i, seed_port):
        port, http = 20000 + i, 30000 + i
        cfg = os.path.join(self.tmp, f"p{i}.toml")
        with open(cfg, "w") as f:
            f.write(
                f'schema-version = 1\nname = "n{i}"\nstate-dir = "{self.tmp}/p{i}"\n'
                f'[cluster]\nname = "bench"\nkey = "{KEY}"\nmdns = false\n'
            )
        args = [self.bin, "agent", "--config", cfg, "--bind", f"127.0.0.1:{port}",
                "--http", f"127.0.0.1:{http}"]
        if seed_port:
            args += ["--seed", f"127.0.0.1:{seed_port}"]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return p, port, http

    def states(self, http):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/members", timeout=5) as r:
                return {m["name"]: m["state"] for m in json.load(r)}
        except Exception:
            return {}


class Serf:
    name = "serf"

    def __init__(self, binary, tmp):
        self.bin, self.tmp = binary, tmp

    def start(self, i, seed_port):
        port, rpc = 21000 + i, 31000 + i
        args = [self.bin, "agent", f"-node=n{i}", f"-bind=127.0.0.1:{port}",
                f"-rpc-addr=127.0.0.1:{rpc}", "-log-level=err"]
        if seed_port:
            args.append(f"-join=127.0.0.1:{seed_port}")
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return p, port, rpc

    def states(self, rpc):
        try:
            out = subprocess.run([self.bin, "members", f"-rpc-addr=127.0.0.1:{rpc}",
                                  "-format=json"], capture_output=True, timeout=10).stdout
            return {m["name"]: m["status"] for m in json.loads(out)["members"]}
        except Exception:
            return {}


def poll_until(tool, apis, pred, timeout):
    """Polls every agent until pred(states) holds for all; (elapsed, mean round time)."""
    t0 = time.monotonic()
    rounds = 0
    with cf.ThreadPoolExecutor(16) as ex:
        while True:
            views = list(ex.map(tool.states, apis))
            rounds += 1
            if all(pred(v) for v in views):
                el = time.monotonic() - t0
                return el, el / rounds
            if time.monotonic() - t0 > timeout:
                return None, (time.monotonic() - t0) / rounds


def run(tool, n):
    procs = []
    try:
        seed = None
        for i in range(n - 1):
            p, port, api = tool.start(i, seed)
            seed = seed or port
            procs.append((p, api))
        time.sleep(1)
        names = {f"n{i}" for i in range(n - 1)}
        ok, _ = poll_until(tool, [a for _, a in procs],
                           lambda v: all(v.get(x) == "alive" for x in names), 120)
        if ok is None:
            return None
        p, port, api = tool.start(n - 1, seed)
        new = f"n{n - 1}"
        join, res = poll_until(tool, [a for _, a in procs], lambda v: v.get(new) == "alive", 120)
        procs.append((p, api))
        time.sleep(5)
        b0 = lo_tx()
        time.sleep(10)
        idle = (lo_tx() - b0) / 10 / n
        rss = sum(rss_kib(p.pid) for p, _ in procs) / n / 1024
        victim = n // 2
        vp, _ = procs[victim]
        vp.send_signal(signal.SIGKILL)
        vp.wait()
        others = [a for j, (_, a) in enumerate(procs) if j != victim]
        det, res2 = poll_until(tool, others, lambda v: v.get(f"n{victim}") == "failed", 120)
        return join, det, idle, rss, max(res, res2)
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--piforge", required=True)
    ap.add_argument("--serf", default="serf")
    ap.add_argument("--sizes", default="10,100")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="piforge-bench-")
    tools = [Piforge(a.piforge, tmp)]
    if subprocess.run(["which", a.serf], capture_output=True).returncode == 0:
        tools.append(Serf(a.serf, tmp))
    print("| tool | N | join visible to all | SIGKILL failed everywhere | idle bytes/s/node "
          "| RSS/agent | poll resolution |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(x) for x in a.sizes.split(",")]:
        for tool in tools:
            r = run(tool, n)
            if r is None:
                print(f"| {tool.name} | {n} | did not converge | | | | |")
                continue
            join, det, idle, rss, res = r
            fmt = lambda t: "timeout" if t is None else f"{t:.1f} s"
            print(f"| {tool.name} | {n} | {fmt(join)} | {fmt(det)} | {idle:.0f} | {rss:.1f} MiB "
                  f"| {res:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
