#!/usr/bin/env python3
"""piforge-node vs Serf, side by side: run by ci/bench-gossip (read its header first).

Per system and repeat, in a fresh network namespace of its own:
  formation  start N agents at once (all seeded with agent 0): until every agent's handler
             has logged member-join for every other agent;
  join       start agent N+1: until every other agent logged its member-join;
  idle       bytes sent on the namespace's loopback over BENCH_IDLE_SECS / agents;
  RSS        mean VmRSS of the agents (same moment);
  kill       SIGKILL one agent: until every survivor logged member-failed;
  leave      graceful leave of another (piforge SIGTERM, Serf SIGINT): until every survivor
             logged member-leave;
  flap       SIGSTOP a third for 3 s, SIGCONT: member-failed events in the next 20 s.
Then, both systems at once in their own namespaces: N agents under 10 % random loss
(nftables) for BENCH_LOSS_SECS, counting member-failed events (all false: nobody dies).
"""
import argparse
import base64
import json
import os
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HEX_KEY = "5a" * 32
SERF_KEY = base64.b64encode(bytes.fromhex(HEX_KEY)).decode()
PHASE_TIMEOUT = 120
HANDLER = """#!/bin/sh
# Appends "time observer event member" per member line on stdin (the name comes first).
t=$(date +%s.%N)
ev=${PIFORGE_EVENT:-$SERF_EVENT}
me=${PIFORGE_SELF_NAME:-$SERF_SELF_NAME}
while IFS= read -r line; do
  printf '%s %s %s %s\\n' "$t" "$me" "$ev" "${line%%[[:space:]]*}" >> LOG
done
"""


def say(*a):
    print("bench-gossip:", *a, file=sys.stderr, flush=True)


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Netns:
    def __init__(self, name):
        self.name = name
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def tx_bytes(self):
        out = sh("ip", "-n", self.name, "-j", "-s", "link", "show", "lo").stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    def loss(self, percent, ports):
        rules = f"""table inet benchloss {{
  chain in {{ type filter hook input priority 0;
    meta l4proto {{ udp, tcp }} th dport {ports} numgen random mod 100 < {percent} drop;
    meta l4proto {{ udp, tcp }} th sport {ports} numgen random mod 100 < {percent} drop; }}
}}"""
        subprocess.run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], input=rules,
                       text=True, check=True)

    def delete(self):
        sh("ip", "netns", "del", self.name, check=False)


class System:
    """One system's agents in one namespace; the event log all handlers append to."""

    def __init__(self, tmp, ns, base_port):
        self.tmp, self.ns, self.base = tmp, ns, base_port
        self.log = os.path.join(tmp, "events.log")
        open(self.log, "w").close()
        self.handler = os.path.join(tmp, "handler.sh")
        with open(self.handler, "w") as f:
            f.write(HANDLER.replace("LOG", self.log))
        os.chmod(self.handler, 0o755)
        self.procs = {}

    def events(self):
        out = []
        with open(self.log) as f:
            for line in f:
                p = line.split()
                if len(p) == 4:
                    out.append((float(p[0]), p[1], p[2], p[3]))
        return out

    def wait_for(self, pred, timeout=PHASE_TIMEOUT):
        """Polls the log until pred(events) returns a time; None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = pred(self.events())
            if t is not None:
                return t
            time.sleep(0.05)
        return None

    def spawn(self, i, args):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns.name] + args,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        self.procs[i] = p
        return p

    def agent_pid(self, i):
        """The agent's own pid (ip netns exec execs it, so the same process)."""
        return self.procs[i].pid

    def signal(self, i, sig):
        os.kill(self.agent_pid(i), sig)

    def rss_mib(self, alive):
        total = 0
        for i in alive:
            try:
                with open(f"/proc/{self.agent_pid(i)}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total / len(alive) / 1024

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = {}


class Piforge(System):
    label = "piforge"
    leave_signal = signal.SIGTERM

    def __init__(self, tmp, ns, binary):
        super().__init__(tmp, ns, 20000)
        self.bin = binary

    def start(self, i, seed):
        d = os.path.join(self.tmp, f"n{i}")
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "node.toml")
        with open(cfg, "w") as f:
            f.write(
                f'schema-version = 1\nname = "n{i}"\nstate-dir = "{d}"\n'
                f'[cluster]\nname = "bench"\nkey = "{HEX_KEY}"\nmdns = false\n'
                f'[tags]\nrole = "bench"\n'
                f'[[handlers]]\ncommand = "{self.handler}"\n'
            )
        os.chmod(cfg, 0o600)
        args = [self.bin, "agent", "--config", cfg, "--bind", f"127.0.0.1:{self.base + i}",
                "--http", f"127.0.0.1:{self.base + 5000 + i}"]
        if seed is not None:
            args += ["--seed", f"127.0.0.1:{self.base + seed}"]
        return self.spawn(i, args)


class Serf(System):
    label = "serf"
    leave_signal = signal.SIGINT  # Serf leaves gracefully on SIGINT

    def __init__(self, tmp, ns, binary):
        super().__init__(tmp, ns, 21000)
        self.bin = binary

    def start(self, i, seed):
        args = [self.bin, "agent", f"-node=n{i}", f"-bind=127.0.0.1:{self.base + i}",
                f"-rpc-addr=127.0.0.1:{self.base + 5000 + i}", f"-encrypt={SERF_KEY}",
                "-tag", "role=bench", "-log-level=err",
                f"-event-handler={self.handler}"]
        if seed is not None:
            # Retried like piforge's seeds (which back off from 1 s): agents started at once
            # may try to join agent 0 before it listens, and a plain -join gives up.
            args += [f"-retry-join=127.0.0.1:{self.base + seed}", "-retry-interval=1s"]
        return self.spawn(i, args)


def all_saw(observers, event, member, since):
    """A predicate: the time the last of `observers` logged `event` about `member`."""
    observers = set(observers)

    def pred(evs):
        seen = {}
        for t, obs, ev, mem in evs:
            if t >= since and ev == event and mem == member and obs in observers:
                seen.setdefault(obs, t)
        return max(seen.values()) if len(seen) == len(observers) else None
    return pred


def formed(names, since):
    want = {(a, b) for a in names for b in names if a != b}

    def pred(evs):
        last, got = since, set()
        for t, obs, ev, mem in evs:
            if ev == "member-join" and (obs, mem) in want and (obs, mem) not in got:
                got.add((obs, mem))
                last = max(last, t)
        return last if got == want else None
    return pred


def failures(evs, since, until=None):
    return sum(1 for t, _, ev, _ in evs
               if ev == "member-failed" and t >= since and (until is None or t <= until))


def one_run(kind, args, n, idle_secs, run_id):
    ns = Netns(f"pfb-{kind.label}-{os.getpid()}-{run_id}")
    tmp = tempfile.mkdtemp(prefix=f"bench-gossip-{kind.label}-")
    system = kind(tmp, ns, args.piforge if kind is Piforge else args.serf)
    r = {}
    try:
        names = [f"n{i}" for i in range(n)]
        t0 = time.time()
        system.start(0, None)
        for i in range(1, n):
            system.start(i, 0)
        t = system.wait_for(formed(names, t0), timeout=PHASE_TIMEOUT + n)
        r["formation"] = None if t is None else t - t0
        if t is None:
            return r
        time.sleep(3)

        t0 = time.time()
        system.start(n, 0)
        t = system.wait_for(all_saw(names, "member-join", f"n{n}", t0))
        r["join"] = None if t is None else t - t0
        alive = list(range(n + 1))

        time.sleep(5)
        b0, w0 = ns.tx_bytes(), time.monotonic()
        time.sleep(idle_secs / 2)
        r["rss"] = system.rss_mib(alive)
        time.sleep(idle_secs / 2)
        r["idle"] = (ns.tx_bytes() - b0) / (time.monotonic() - w0) / len(alive)

        victim, leaver, stopped = 1, 2, 3
        alive = [i for i in alive if i not in (victim,)]
        t0 = time.time()
        system.signal(victim, signal.SIGKILL)
        t = system.wait_for(all_saw([f"n{i}" for i in alive], "member-failed", f"n{victim}", t0))
        r["kill"] = None if t is None else t - t0

        alive = [i for i in alive if i != leaver]
        t0 = time.time()
        system.signal(leaver, kind.leave_signal)
        t = system.wait_for(all_saw([f"n{i}" for i in alive], "member-leave", f"n{leaver}", t0))
        r["leave"] = None if t is None else t - t0

        time.sleep(3)
        t0 = time.time()
        system.signal(stopped, signal.SIGSTOP)
        time.sleep(3)
        system.signal(stopped, signal.SIGCONT)
        time.sleep(20)
        r["flap"] = failures(system.events(), t0)
        return r
    finally:
        system.stop_all()
        ns.delete()
        shutil.rmtree(tmp, ignore_errors=True)


def loss_run(kinds, args, n, secs):
    """Both systems at once, each in its namespace, under 10 % loss; false failures each."""
    runs = []
    try:
        for kind in kinds:
            ns = Netns(f"pfb-loss-{kind.label}-{os.getpid()}")
            tmp = tempfile.mkdtemp(prefix=f"bench-gossip-loss-{kind.label}-")
            system = kind(tmp, ns, args.piforge if kind is Piforge else args.serf)
            runs.append((kind, ns, tmp, system))
            t0 = time.time()
            system.start(0, None)
            for i in range(1, n):
                system.start(i, 0)
            if system.wait_for(formed([f"n{i}" for i in range(n)], t0)) is None:
                say(f"{kind.label}: the loss-run cluster did not form")
        t0 = time.time()
        for kind, ns, _, system in runs:
            ns.loss(10, f"{system.base}-{system.base + 999}")
        say(f"10 % loss for {secs} s")
        time.sleep(secs)
        return {kind.label: failures(system.events(), t0) for kind, _, _, system in runs}
    finally:
        for _, ns, tmp, system in runs:
            system.stop_all()
            ns.delete()
            shutil.rmtree(tmp, ignore_errors=True)


ROWS = [
    ("formation", "cold formation: all N see all (s)"),
    ("join", "join visible on every agent (s)"),
    ("kill", "SIGKILL -> failed on every survivor (s)"),
    ("leave", "graceful leave seen everywhere (s)"),
    ("idle", "idle bytes/s per agent"),
    ("rss", "RSS per agent (MiB)"),
    ("flap", "false failed after SIGSTOP 3 s (events)"),
]


def summary(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, "timeout"
    med = statistics.median(vals)
    ints = all(isinstance(v, int) for v in vals) or max(vals) >= 100
    fmt = (lambda v: f"{v:.0f}") if ints else (lambda v: f"{v:.2f}")
    return med, f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})" if len(vals) > 1 else fmt(med)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--piforge", required=True)
    ap.add_argument("--serf", required=True)
    ap.add_argument("sizes", nargs="*", type=int, default=[10, 100])
    ap.add_argument("--only-loss", action="store_true", help="only the 10 %% loss run")
    args = ap.parse_args()
    if args.only_loss:
        args.sizes = []
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    repeats_large = int(os.environ.get("BENCH_REPEATS_LARGE", "1"))
    idle = int(os.environ.get("BENCH_IDLE_SECS", "60"))
    loss_secs = int(os.environ.get("BENCH_LOSS_SECS", "300"))
    loss_n = int(os.environ.get("BENCH_LOSS_N", "10"))
    signal.alarm(int(os.environ.get("BENCH_DEADLINE_SECS", "3600")))
    serf_version = "serf " + sh("dpkg-query", "-W", "-f=${Version}", "serf", check=False).stdout
    load = os.getloadavg()
    say(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    results = {}
    run_id = 0
    for n in args.sizes:
        reps = repeats if n <= 50 else repeats_large
        for rep in range(reps):
            for kind in (Piforge, Serf):
                run_id += 1
                say(f"N={n} repeat {rep + 1}/{reps}: {kind.label}")
                r = one_run(kind, args, n, idle, run_id)
                say(f"  {r}")
                for k, v in r.items():
                    results.setdefault((n, kind.label, k), []).append(v)
    loss = loss_run((Piforge, Serf), args, loss_n, loss_secs) if loss_secs > 0 else None
    end_load = os.getloadavg()
    print(f"piforge-node vs {serf_version}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {load[0]:.1f} at start, {end_load[0]:.1f} at end (2 cores)")
    print()
    print("| N | row | piforge | Serf | piforge / Serf |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        reps = repeats if n <= 50 else repeats_large
        for key, label in ROWS:
            pm, ps = summary(results.get((n, "piforge", key), []))
            sm, ss = summary(results.get((n, "serf", key), []))
            ratio = f"{pm / sm:.2f}" if pm is not None and sm else "–"
            print(f"| {n} ({reps}×) | {label} | {ps} | {ss} | {ratio} |")
    if loss is not None:
        print(f"| {loss_n} | false failed, 10 % loss for {loss_secs} s (events) | "
              f"{loss.get('piforge')} | {loss.get('serf')} | – |")


if __name__ == "__main__":
    main()
