#!/usr/bin/env python3
"""logtap benchmark: what tapping costs a program, and reaching the targets.

Run by `make bench` (which builds the release library, the sink and the
sink's load generator first). Whole-process comparisons of a C writer
(bench/writer.c) run untapped and tapped, alternating (ABBA order), several
times; medians, ratios and nanoseconds added per line are printed and
written to bench/results/results.md (and chart.png when matplotlib is
available). Targets are reported, never asserted: the exit code is 0
whatever the figures.

Environment:
  BENCH_LINES      lines of 100 bytes per run (default 1000000)
  BENCH_RUNS       untapped/tapped pairs per scenario (default 5)
  BENCH_CG_LINES   lines for the callgrind instruction counts (default 100000)
  BENCH_SKIP       comma-separated parts to skip: a,b,c,d,e,f,g,sink,outputs,mem,cg,strace
  BENCH_OPENS      opens of part g, the LLT_TAP_FILE pattern cost (default 1000000)
  BENCH_ONLY       comma-separated parts to run (all others skipped); the
                   figures are printed and results.md is left as it is
  BENCH_BEFORE_LIB another liblogtap.so (say, main's, before a change): (a)-(f)
                   run it too, in the same rounds, and print both columns
  BENCH_BEFORE_SINK the logtap-sink to pair with it (default: this build's)
  BENCH_RESULTS    directory for results.md, results.json and chart.png
                   (default bench/results; a smoke run can write elsewhere)

Part c also runs the peers in the same rounds (BENCH_SKIP=peers leaves them
out): the container runtime's model (stdout a pipe drained by
bench/pipe_reader.c, which writes JSON lines as Docker's json-file driver
and conmon do) and the program writing its own log file.
"""

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
RESULTS = Path(os.environ.get("BENCH_RESULTS") or BENCH / "results").resolve()
SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else WORK

LINES = int(os.environ.get("BENCH_LINES", "1000000"))
RUNS = max(1, int(os.environ.get("BENCH_RUNS", "5")))
CG_LINES = int(os.environ.get("BENCH_CG_LINES", "100000"))
SKIP = {s.strip() for s in os.environ.get("BENCH_SKIP", "").split(",") if s.strip()}
ONLY = {s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()}
LINE_BYTES = 100

BIN = WORK / "bin"
SO = BIN / "liblogtap.so"
SINK = BIN / "logtap-sink"
LOADGEN = BIN / "loadgen"
WRITER = BIN / "writer"
OPENS = BIN / "opens"
PIPE_READER = BIN / "pipe_reader"
BEFORE_SO = BIN / "before" / "liblogtap.so"
BEFORE_SINK = BIN / "before" / "logtap-sink"
BEFORE = bool(os.environ.get("BENCH_BEFORE_LIB"))
OPENS_N = int(os.environ.get("BENCH_OPENS", "1000000"))


def log(*a):
    print(*a, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------- setup


def setup():
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if BIN.exists():
        shutil.rmtree(BIN)
    BIN.mkdir()
    # Snapshot the binaries: others may rebuild target/ while we run.
    rel = ROOT / "target" / "release"
    for src, dst in [
        (rel / "liblogtap.so", SO),
        (rel / "logtap-sink", SINK),
        (rel / "examples" / "loadgen", LOADGEN),
    ]:
        if not src.exists():
            sys.exit(f"missing {src}: run `make bench` (it builds everything first)")
        shutil.copy2(src, dst)
    sh(["gcc", "-O2", "-D_FORTIFY_SOURCE=2", "-pthread", "-Wall", "-o", str(WRITER),
        str(BENCH / "writer.c")])
    sh(["gcc", "-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-o", str(OPENS), str(BENCH / "opens.c")])
    sh(["gcc", "-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-o", str(PIPE_READER),
        str(BENCH / "pipe_reader.c")])
    if BEFORE:
        # The "before" build, snapshotted like ours; its own sink if given.
        BEFORE_SO.parent.mkdir()
        lib = Path(os.environ["BENCH_BEFORE_LIB"])
        sink = Path(os.environ.get("BENCH_BEFORE_SINK") or rel / "logtap-sink")
        for src, dst in [(lib, BEFORE_SO), (sink, BEFORE_SINK)]:
            if not src.is_file():
                sys.exit(f"BENCH_BEFORE_LIB/BENCH_BEFORE_SINK: {src} is not a file")
            shutil.copy2(src, dst)


def base_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LLT_") and k not in ("LD_PRELOAD", "BENCH_STOP_PID",
                                                     "BENCH_STOP_MS")}
    return env


def tapped_env(side=None, **llt):
    """The environment of a tapped run; side "before" preloads the
    BENCH_BEFORE_LIB build instead of this one."""
    env = base_env()
    env["LD_PRELOAD"] = str(BEFORE_SO if side == "before" else SO)
    env["LLT_EXIT_TIMEOUT_MS"] = "30000"
    env["LLT_PLATFORM"] = "bench"
    for k, v in llt.items():
        env[k] = str(v)
    return env


STAT_RE = re.compile(r"loop_ns=(\d+) half2_ns=(\d+) hwm_kb=(-?\d+) rss_kb=(-?\d+)")


def run_writer(mode, lines, env, threads=None, stdout=None):
    """Runs the writer with stdout on /dev/null, or on the fd `stdout`
    (closed here once the writer has it); returns its figures."""
    cmd = [str(WRITER), mode, str(lines)] + ([str(threads)] if threads else [])
    out = os.open(os.devnull, os.O_WRONLY) if stdout is None else stdout
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(out)
    err = p.stderr.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    m = STAT_RE.search(err)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"writer failed ({p.returncode}): {err.strip()}")
    return {
        "wall": wall,
        "cpu": ru.ru_utime + ru.ru_stime,
        "loop": int(m.group(1)) / 1e9,
        "half2": int(m.group(2)) / 1e9,
        "hwm_kb": int(m.group(3)),
        "rss_kb": int(m.group(4)),
    }


def count_output(path):
    """(lines from the program, dropped writes reported, notices) in sink output."""
    total = int(subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True,
                               check=True).stdout.split()[0])
    g = subprocess.run(["grep", "-F", '"source":"logtap"', str(path)], capture_output=True,
                       text=True)
    dropped = 0
    notices = 0
    for row in g.stdout.splitlines():
        notices += 1
        try:
            dropped += int(json.loads(row).get("dropped_bytes", 0))
        except (ValueError, TypeError):
            pass
    # Dropped lines: the notices count bytes (and writes, which for stdio
    # are whole 4 KiB buffers); every line is LINE_BYTES long.
    return total - notices, dropped // LINE_BYTES, notices


class Sink:
    """logtap-sink on a fresh socket, its output in a tmpfs file."""

    def __init__(self, tag, binary=None):
        self.sock = WORK / f"sink-{tag}.sock"
        self.out = SHM / f"logtap-bench-{os.getpid()}-{tag}.jsonl"
        if self.sock.exists():
            self.sock.unlink()
        self.fh = open(self.out, "wb")
        self.p = subprocess.Popen([str(binary or SINK), "--socket", str(self.sock)], stdout=self.fh,
                                  stderr=subprocess.DEVNULL, env=base_env())
        deadline = time.time() + 10
        while not self.sock.exists():
            if self.p.poll() is not None or time.time() > deadline:
                raise RuntimeError("logtap-sink did not start")
            time.sleep(0.005)

    def stop(self):
        """SIGTERM (the sink drains, then exits); returns seconds it took."""
        t0 = time.perf_counter()
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        lag = time.perf_counter() - t0
        self.fh.close()
        return lag

    def hwm_kb(self):
        try:
            for row in open(f"/proc/{self.p.pid}/status"):
                if row.startswith("VmHWM:"):
                    return int(row.split()[1])
        except OSError:
            pass
        return -1

    def count_and_remove(self):
        r = count_output(self.out)
        self.out.unlink(missing_ok=True)
        return r


# ---------------------------------------------------------------- scenarios


def alternate(n, *fns):
    """n rounds of every fn, the order rotated (and reversed) from round to
    round (ABBA for two) so drift and warm-up hit every side alike."""
    acc = [[] for _ in fns]
    k = len(fns)
    for i in range(n):
        order = list(range(k))
        order = order[i % k:] + order[:i % k]
        if (i // k) % 2:
            order.reverse()
        for j in order:
            acc[j].append(fns[j]())
    return acc


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def socket_run(mode, lines, llt=None, threads=None, pause_ms=0, side=None):
    sink = Sink(mode, BEFORE_SINK if side == "before" else SINK)
    try:
        env = tapped_env(side, LLT_TAP_INTO=1, LLT_TARGET=f"socket:{sink.sock}", **(llt or {}))
        if pause_ms:
            env["BENCH_STOP_PID"] = str(sink.p.pid)
            env["BENCH_STOP_MS"] = str(pause_ms)
        r = run_writer(mode, lines, env, threads)
        r["sink_hwm_kb"] = sink.hwm_kb()
    finally:
        os.kill(sink.p.pid, signal.SIGCONT)
        lag = sink.stop()
        counted = sink.count_and_remove()
    r["lag"] = lag
    r["delivered"], r["dropped"], r["notices"] = counted
    return r


def file_run(mode, lines, side=None):
    target = WORK / "target.bin"
    target.unlink(missing_ok=True)
    r = run_writer(mode, lines, tapped_env(side, LLT_TAP_INTO=1, LLT_TARGET=f"file:{target}"))
    out = SHM / f"logtap-bench-{os.getpid()}-file.jsonl"
    with open(out, "wb") as fh:
        subprocess.run([str(BEFORE_SINK if side == "before" else SINK), "--read", str(target)],
                       stdout=fh, check=False)
    r["delivered"], r["dropped"], r["notices"] = count_output(out)
    r["lag"] = 0.0
    out.unlink(missing_ok=True)
    target.unlink(missing_ok=True)
    return r


def pipe_run(mode, lines):
    """The container runtime's model: the writer's stdout is a pipe that
    pipe_reader drains into JSON lines on tmpfs. "lag" is how long the
    reader still ran after the writer exited (what it had yet to write)."""
    out = SHM / f"logtap-bench-{os.getpid()}-pipe.jsonl"
    rd, wr = os.pipe()
    with open(out, "wb") as fh:
        try:
            reader = subprocess.Popen([str(PIPE_READER)], stdin=rd, stdout=fh, env=base_env())
        finally:
            os.close(rd)
        r = run_writer(mode, lines, base_env(), stdout=wr)
        t0 = time.perf_counter()
        reader.wait()
        r["lag"] = time.perf_counter() - t0
    if reader.returncode != 0:
        raise RuntimeError(f"pipe_reader failed ({reader.returncode})")
    r["delivered"], r["dropped"], r["notices"] = count_lines(out), 0, 0
    out.unlink(missing_ok=True)
    return r


def ownfile_run(mode, lines):
    """The program keeping its own log file (on tmpfs, as the sink's output)."""
    out = SHM / f"logtap-bench-{os.getpid()}-own.log"
    env = base_env()
    env["BENCH_OUT"] = str(out)
    r = run_writer(mode, lines, env)
    r["delivered"], r["dropped"], r["notices"] = count_lines(out), 0, 0
    r["lag"] = 0.0
    out.unlink(missing_ok=True)
    return r


class Dummy:
    """A process to SIGSTOP/SIGCONT in the untapped side of (f)."""

    def __enter__(self):
        self.p = subprocess.Popen(["sleep", "600"])
        return self

    def __exit__(self, *a):
        os.kill(self.p.pid, signal.SIGCONT)
        self.p.kill()
        self.p.wait()


SCEN = []  # dicts, one per table row


def add(key, name, base, tap, target_ns=None, target_ratio=None, need_all=True,
        metric="wall", note="", ref=None, pause_ms=None):
    b = med(base, metric)
    t = med(tap, metric)
    lines = tap[0].get("lines", LINES)
    row = {
        "key": key,
        "name": name,
        "metric": metric,
        "base_ms": b * 1e3,
        "tap_ms": t * 1e3,
        "tap_min_ms": min(r[metric] for r in tap) * 1e3,
        "tap_max_ms": max(r[metric] for r in tap) * 1e3,
        "base_min_ms": min(r[metric] for r in base) * 1e3,
        "base_max_ms": max(r[metric] for r in base) * 1e3,
        "ratio": t / b if b else float("nan"),
        "ns_line": (t - b) / lines * 1e9,
        "cpu_ns_line": (med(tap, "cpu") - med(base, "cpu")) / lines * 1e9,
        "lines": lines,
        "target_ns": target_ns,
        "target_ratio": target_ratio,
        "note": note,
    }
    if "delivered" in tap[0]:
        row["delivered_min"] = min(r["delivered"] for r in tap)
        row["delivered_med"] = med(tap, "delivered")
        row["dropped_med"] = med(tap, "dropped")
        row["lag_ms"] = med(tap, "lag") * 1e3
        if metric == "wall":
            # End to end: until the sink has printed the last line.
            e2e = [r["wall"] + r["lag"] for r in tap]
            row["e2e_ns_line"] = (statistics.median(e2e) - b) / lines * 1e9
    if ref is not None:
        row["ref_ms"] = med(ref, metric) * 1e3
        row["ref_ratio"] = t / med(ref, metric)
        if pause_ms is not None:
            # What the pause cost the program, as a share of the pause.
            row["pause_added_ms"] = row["tap_ms"] - row["ref_ms"]
            row["pause_share"] = row["pause_added_ms"] / pause_ms
    row["hwm_base_kb"] = med(base, "hwm_kb")
    row["hwm_tap_kb"] = med(tap, "hwm_kb")
    if "sink_hwm_kb" in tap[0]:
        row["sink_hwm_kb"] = max(r["sink_hwm_kb"] for r in tap)
    ok = True
    if target_ns is not None:
        ok = ok and row.get("e2e_ns_line", row["ns_line"]) <= target_ns
    if target_ratio is not None:
        if "pause_share" in row:
            ok = ok and row["pause_share"] <= target_ratio - 1
        else:
            ok = ok and row.get("ref_ratio", row["ratio"]) <= target_ratio
    if need_all and "delivered_min" in row:
        ok = ok and row["delivered_min"] >= lines
    row["pass"] = ok if (target_ns is not None or target_ratio is not None) else None
    SCEN.append(row)
    show(row)
    return row


def pm(v):
    """Signed whole number, without a "-0"."""
    t = f"{v:+.0f}"
    return "0" if t in ("+0", "-0") else t


def show(r):
    side = "that way" if r["key"] in ("pipe", "own") else "tapped"
    s = (f"  {r['name']}: untapped {r['base_ms']:.1f} ms, {side} {r['tap_ms']:.1f} ms "
         f"(runs {r['tap_min_ms']:.0f}-{r['tap_max_ms']:.0f}), x{r['ratio']:.2f}, "
         f"{pm(r['ns_line'])} ns/line (CPU {pm(r['cpu_ns_line'])})")
    if "e2e_ns_line" in r:
        s += f", end to end incl. the drain {pm(r['e2e_ns_line'])} ns/line"
    if "ref_ratio" in r:
        s += f", x{r['ref_ratio']:.2f} vs tapped with the sink running ({r['ref_ms']:.1f} ms)"
    if "pause_share" in r:
        s += f", slowed {pm(r['pause_added_ms'])} ms during the 1000 ms pause ({r['pause_share'] * 100:.1f}%)"
    if "delivered_med" in r:
        drain = "reader" if r["key"] == "pipe" else "sink"
        s += (f", delivered {int(r['delivered_med']):,}/{r['lines']:,} (min "
              f"{int(r['delivered_min']):,}), dropped lines {int(r['dropped_med']):,}, "
              f"{drain} drain after exit {r['lag_ms']:.0f} ms")
    if r["pass"] is not None:
        s += "  -> " + ("PASS" if r["pass"] else "FAIL")
    log(s)


def add_before(row, base, tap, ref=None, pause_ms=None):
    """The BENCH_BEFORE_LIB build's figures for `row`, from the same rounds
    (same untapped runs, same machine state)."""
    metric, lines = row["metric"], row["lines"]
    b, t = med(base, metric), med(tap, metric)
    bf = {
        "tap_ms": t * 1e3,
        "ratio": t / b if b else float("nan"),
        "ns_line": (t - b) / lines * 1e9,
        "cpu_ns_line": (med(tap, "cpu") - med(base, "cpu")) / lines * 1e9,
        "hwm_tap_kb": med(tap, "hwm_kb"),
    }
    if "delivered" in tap[0]:
        bf["delivered_min"] = min(r["delivered"] for r in tap)
        bf["dropped_med"] = med(tap, "dropped")
        if metric == "wall":
            e2e = [r["wall"] + r["lag"] for r in tap]
            bf["e2e_ns_line"] = (statistics.median(e2e) - b) / lines * 1e9
    if ref is not None and pause_ms is not None:
        bf["pause_added_ms"] = bf["tap_ms"] - med(ref, metric) * 1e3
        bf["pause_share"] = bf["pause_added_ms"] / pause_ms
    row["before"] = bf
    s = (f"    before: tapped {bf['tap_ms']:.1f} ms, x{bf['ratio']:.2f}, {pm(bf['ns_line'])} ns/line "
         f"(CPU {pm(bf['cpu_ns_line'])})")
    if "e2e_ns_line" in bf:
        s += f", end to end {pm(bf['e2e_ns_line'])} ns/line"
    if "pause_share" in bf:
        s += f", slowed {pm(bf['pause_added_ms'])} ms during the pause ({bf['pause_share'] * 100:.1f}%)"
    if "delivered_min" in bf:
        s += f", delivered min {int(bf['delivered_min']):,}/{lines:,}"
    log(s)


def rounds(base_fn, tap_fn, *more):
    """alternate() over the untapped run, the tapped run (this build), any
    `more`, and with BENCH_BEFORE_LIB the before build's tapped run:
    tap_fn(side) for side None and "before". Returns (base, tap, more...,
    before or None)."""
    fns = [base_fn, lambda: tap_fn(None), *more]
    if BEFORE:
        fns.append(lambda: tap_fn("before"))
    res = alternate(RUNS, *fns)
    return (*res, None) if not BEFORE else tuple(res)


def scenario_a():
    log("(a) library loaded, nothing tapped (write)")
    base, tap, before = rounds(lambda: run_writer("write", LINES, base_env()),
                               lambda side: run_writer("write", LINES,
                                                       tapped_env(side, LLT_TAP_INTO=0)))
    row = add("a", "(a) loaded, nothing tapped: write", base, tap, target_ns=10)
    if before:
        add_before(row, base, before)


def scenario_b():
    log("(b) write -> file target")
    base, tap, before = rounds(lambda: run_writer("write", LINES, base_env()),
                               lambda side: file_run("write", LINES, side))
    row = add("b", "(b) write -> file", base, tap, target_ns=100)
    if before:
        add_before(row, base, before)


PEERS = {}


def scenario_c():
    """(c), and in the same rounds the peers: the container runtime's
    model (a pipe and a reader writing JSON lines) and the program
    writing its own log file."""
    peers = "peers" not in SKIP
    log("(c) write -> socket + sink" + (", and the peers: pipe + JSON reader, own log file"
                                        if peers else ""))
    more = [lambda: pipe_run("write", LINES), lambda: ownfile_run("write", LINES)] if peers else []
    res = rounds(lambda: run_writer("write", LINES, base_env()),
                 lambda side: socket_run("write", LINES, side=side), *more)
    base, tap, before = res[0], res[1], res[-1]
    row = add("c", "(c) write -> socket + sink", base, tap, target_ns=300)
    if before:
        add_before(row, base, before)
    if not peers:
        return
    pipe = add("pipe", "peer: write -> pipe -> reader writing JSON lines (Docker, conmon)",
               base, res[2])
    own = add("own", "peer: write -> the program's own log file", base, res[3])
    PEERS["c_e2e"] = row["e2e_ns_line"]
    PEERS["c_writer"] = row["ns_line"]
    PEERS["pipe_e2e"] = pipe["e2e_ns_line"]
    PEERS["pipe_writer"] = pipe["ns_line"]
    PEERS["own"] = own["ns_line"]
    for k, v in (("ratio_e2e", (PEERS["c_e2e"], PEERS["pipe_e2e"])),
                 ("ratio_writer", (PEERS["c_writer"], PEERS["pipe_writer"]))):
        PEERS[k] = v[0] / v[1] if v[1] > 0 else float("nan")
    log(f"  (c) / pipe model, added time per line: end to end {PEERS['ratio_e2e']:.2f} "
        f"({pm(PEERS['c_e2e'])} / {pm(PEERS['pipe_e2e'])} ns), the writer alone "
        f"{PEERS['ratio_writer']:.2f} ({pm(PEERS['c_writer'])} / {pm(PEERS['pipe_writer'])} ns); "
        f"own log file {pm(PEERS['own'])} ns")


def scenario_d():
    for mode in ("fputs", "printf"):
        log(f"(d) {mode} -> socket + sink")
        base, tap, before = rounds(lambda: run_writer(mode, LINES, base_env()),
                                   lambda side: socket_run(mode, LINES, side=side))
        row = add(f"d-{mode}", f"(d) {mode} -> socket + sink", base, tap, target_ns=300)
        if before:
            add_before(row, base, before)


def scenario_e():
    log("(e) 8 threads write -> socket + sink")
    base, tap, before = rounds(lambda: run_writer("threads", LINES, base_env(), 8),
                               lambda side: socket_run("threads", LINES, threads=8, side=side))
    row = add("e", "(e) 8 threads write -> socket + sink", base, tap, note="no target set")
    if before:
        add_before(row, base, before)


def scenario_f():
    for buf in ("8M", "256M"):
        log(f"(f) write -> socket, sink paused 1 s at the middle line, buffer {buf}")

        def base_fn():
            with Dummy() as d:
                env = base_env()
                env["BENCH_STOP_PID"] = str(d.p.pid)
                env["BENCH_STOP_MS"] = "1000"
                return run_writer("write", LINES, env)

        llt = {"LLT_BUFFER_SIZE": buf}
        fns = [base_fn,
               lambda: socket_run("write", LINES, llt=llt),
               lambda: socket_run("write", LINES, llt=llt, pause_ms=1000)]
        if BEFORE:
            fns += [lambda: socket_run("write", LINES, llt=llt, side="before"),
                    lambda: socket_run("write", LINES, llt=llt, pause_ms=1000, side="before")]
        res = alternate(RUNS, *fns)
        base, running, paused = res[:3]
        # Target: the program is not slowed by more than 10% while the sink
        # is paused: the time its second half of lines (written during the
        # pause) takes beyond the same tapped run with the sink running,
        # as a share of the 1 s pause.
        row = add(f"f-{buf}-loop", f"(f) sink paused 1 s, buffer {buf}: writes during the pause",
                  base, paused, target_ratio=1.10, need_all=False, metric="half2", ref=running,
                  pause_ms=1000)
        if BEFORE:
            add_before(row, base, res[4], ref=res[3], pause_ms=1000)
        row = add(f"f-{buf}-wall", f"(f) sink paused 1 s, buffer {buf}: whole program (exit waits)",
                  base, paused, need_all=False, metric="wall")
        if BEFORE:
            add_before(row, base, res[4])


# ---------------------------------------------------------------- sink alone

# Ten entries as a server fleet would list them; none matches the file the
# bench opens, so every open pays the first test of each pattern.
OPEN_PATTERNS = ":".join([
    "/var/log/nginx/*.log",
    "/var/log/apache2/*.log",
    "/var/log/httpd/*_log",
    "/opt/tomcat/logs/catalina.*.log",
    "/opt/tomcat/logs/localhost_access_log.*.txt",
    "/var/lib/postgresql/15/main/log/postgresql-*.log",
    "/var/log/redis/redis-server*.log",
    "/srv/app/logs/**/*.txt",
    "/var/log/app/app.log*",
    "/var/log/[a-z]*/error-?.log",
])


def opens_run(env):
    path = SHM / f"logtap-bench-{os.getpid()}-open.dat"
    cmd = [str(OPENS), str(OPENS_N), str(path)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    path.unlink(missing_ok=True)
    m = STAT_RE.search(p.stderr)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"opens failed ({p.returncode}): {p.stderr.strip()}")
    u = re.search(r"user_ns=(\d+)", p.stderr)
    return {"loop": int(m.group(1)) / 1e9, "wall": int(m.group(1)) / 1e9,
            "cpu": int(u.group(1)) / 1e9 if u else 0.0,
            "hwm_kb": -1, "rss_kb": -1, "lines": OPENS_N}


def scenario_g():
    log(f"(g) open+close of a file no pattern matches, 10 patterns, {OPENS_N:,} times")
    nolib, base, tap = alternate(
        RUNS,
        lambda: opens_run(base_env()),
        lambda: opens_run(tapped_env(LLT_TAP_INTO=0)),
        lambda: opens_run(tapped_env(LLT_TAP_INTO=0, LLT_TAP_FILE=OPEN_PATTERNS)))
    # The figure is user-mode CPU per open ("cpu"): the kernel's part of an
    # open+close (several µs, and as noisy) is the same on both sides.
    add("g", "(g) open+close, 10 LLT_TAP_FILE patterns, none matching (user CPU per open)",
        base, tap, target_ns=100, metric="cpu",
        note=f"vs the library without LLT_TAP_FILE; without the library an open+close "
             f"takes {med(nolib, 'loop') / OPENS_N * 1e9:.0f} ns, with it and no "
             f"patterns {med(base, 'loop') / OPENS_N * 1e9:.0f} ns (wall); user CPU per open "
             f"{med(nolib, 'cpu') / OPENS_N * 1e9:.0f} / {med(base, 'cpu') / OPENS_N * 1e9:.0f} / "
             f"{med(tap, 'cpu') / OPENS_N * 1e9:.0f} ns (no library / no patterns / 10 patterns)")
    # Minimums too: on a shared machine the noise only ever adds time.
    lo = (min(r["cpu"] for r in tap) - min(r["cpu"] for r in base)) / OPENS_N * 1e9
    SCEN[-1]["note"] += f"; from the fastest runs of each side: {lo:+.0f} ns"
    log("  " + SCEN[-1]["note"])


SINK_ALONE = {}


def sink_alone():
    log("sink alone")
    frames = WORK / "frames.bin"
    sh([str(LOADGEN), "--file", str(frames), str(LINES), str(LINE_BYTES)],
       stderr=subprocess.DEVNULL)
    lines = (LINES + 39_999) // 40_000 * 40_000  # loadgen writes whole blocks
    t_rates, peaks = [], []
    for _ in range(RUNS):
        with open(os.devnull, "wb") as null:
            t0 = time.perf_counter()
            p = subprocess.Popen([str(SINK), "--read", str(frames)], stdout=null)
            _, status, ru = os.wait4(p.pid, 0)
            t_rates.append(lines / (time.perf_counter() - t0))
            p.returncode = os.waitstatus_to_exitcode(status)
        peaks.append(ru.ru_maxrss)  # KiB on Linux
    SINK_ALONE["read_lines_s"] = statistics.median(t_rates)
    SINK_ALONE["read_peak_kb"] = max(peaks)
    # Over the socket, fed by loadgen (64 KiB frames, one connection).
    sock_rates, sock_peaks = [], []
    for _ in range(RUNS):
        sock = WORK / "sink-alone.sock"
        sock.unlink(missing_ok=True)
        with open(os.devnull, "wb") as null:
            sp = subprocess.Popen([str(SINK), "--socket", str(sock)], stdout=null,
                                  stderr=subprocess.DEVNULL)
            while not sock.exists():
                time.sleep(0.005)
            out = subprocess.run([str(LOADGEN), str(sock), str(LINES), str(LINE_BYTES)],
                                 capture_output=True, text=True, check=True).stdout
            m = re.search(r"([\d.]+) lines/s", out)
            sock_rates.append(float(m.group(1)) if m else float("nan"))
            hwm = -1
            for row in open(f"/proc/{sp.pid}/status"):
                if row.startswith("VmHWM:"):
                    hwm = int(row.split()[1])
            sock_peaks.append(hwm)
            sp.send_signal(signal.SIGTERM)
            sp.wait()
    SINK_ALONE["socket_lines_s"] = statistics.median(sock_rates)
    SINK_ALONE["socket_peak_kb"] = max(sock_peaks)
    frames.unlink(missing_ok=True)
    log(f"  --read: {SINK_ALONE['read_lines_s']:,.0f} lines/s, peak RSS "
        f"{SINK_ALONE['read_peak_kb']:,} KiB; socket (loadgen): "
        f"{SINK_ALONE['socket_lines_s']:,.0f} lines/s, peak RSS "
        f"{SINK_ALONE['socket_peak_kb']:,} KiB")


# ---------------------------------------------------------------- sink outputs

SINK_OUT = []
RSYSLOGD = "/usr/sbin/rsyslogd"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rsyslog_start(d, port):
    """rsyslogd in the foreground: imtcp on 127.0.0.1:port, omfile to d."""
    work = d / "rsyslog-work"
    work.mkdir()
    out = d / "rsyslog.out"
    conf = d / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}")\n'
        'module(load="imtcp")\n'
        f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
        f'action(type="omfile" file="{out}" template="RSYSLOG_FileFormat")\n')
    p = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(d / "rsyslog.pid")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                p.kill()
                raise RuntimeError("rsyslogd did not start")
            time.sleep(0.05)
    return p, out


def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += b.count(b"\n")


def sink_outputs():
    """Lines/s and peak memory of the sink per output kind, fed by loadgen
    over the socket (one connection, 64 KiB frames): from the first byte
    sent to the sink's exit after SIGTERM, when every output has written
    everything (the sink drains its outputs before it exits)."""
    log("sink per output kind")
    runs = max(1, min(RUNS, 3))
    kinds = [
        ("json", "`--output json` (the default), stdout to /dev/null", []),
        ("file", "`--output file:DIR` on tmpfs, text lines, rotated at 1 MiB x 10", None),
        ("syslog-tcp", "`--output syslog:tcp:127.0.0.1:PORT` to rsyslogd (imtcp, omfile on tmpfs)",
         None),
    ]
    if not Path(RSYSLOGD).exists():
        log(f"  {RSYSLOGD} missing: syslog row skipped (apt-get install rsyslog)")
        kinds = kinds[:2]
    for key, name, _ in kinds:
        rates, peaks, delivered, rs_lag, dropped = [], [], [], [], []
        for _ in range(runs):
            d = SHM / f"logtap-bench-outputs-{os.getpid()}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            sock = d / "s.sock"
            args = [str(SINK), "--socket", str(sock)]
            rs = None
            if key == "json":
                args += ["--output", "json"]
            elif key == "file":
                args += ["--output", f"file:{d / 'logs'}"]
            else:
                port = free_port()
                rs, rs_out = rsyslog_start(d, port)
                args += ["--output", f"syslog:tcp:127.0.0.1:{port}"]
            try:
                errf = d / "stderr.txt"
                with open(os.devnull, "wb") as null, open(errf, "wb") as err:
                    sp = subprocess.Popen(args, stdout=null, stderr=err)
                    while not sock.exists():
                        time.sleep(0.005)
                    t0 = time.perf_counter()
                    sh([str(LOADGEN), str(sock), str(LINES), str(LINE_BYTES)],
                       stdout=subprocess.DEVNULL)
                    # VmHWM now: the burst is the peak (the drain only frees);
                    # ru_maxrss would count the fork before exec.
                    hwm = -1
                    for row in open(f"/proc/{sp.pid}/status"):
                        if row.startswith("VmHWM:"):
                            hwm = int(row.split()[1])
                    sp.send_signal(signal.SIGTERM)
                    sp.wait()
                    t1 = time.perf_counter()
                sent = (LINES + 39_999) // 40_000 * 40_000  # loadgen sends whole blocks
                # What the output dropped (its queue full: the output was
                # slower than the input for longer than --output-buffer
                # lasts), from the sink's own reports on stderr.
                lost = 0
                for row in open(errf, errors="replace"):
                    m = re.search(r"(dropped records|sink stopping; records)=(\d+)", row)
                    if m:
                        lost += int(m.group(2))
                dropped.append(lost)
                # Lines/s: what the output wrote, per second until it had
                # written everything.
                rates.append((sent - lost) / (t1 - t0))
                peaks.append(hwm)
                if key == "file":
                    got = sum(count_lines(f) for f in (d / "logs").rglob("*") if f.is_file())
                    delivered.append(got)
                elif key == "syslog-tcp":
                    # rsyslog may still be writing: wait until its file stops growing.
                    last, still = -1, 0
                    while still < 5:
                        n = count_lines(rs_out) if rs_out.exists() else 0
                        still = still + 1 if n == last else 0
                        last = n
                        time.sleep(0.2)
                    rs_lag.append(time.perf_counter() - t1 - 1.0)
                    delivered.append(last)
                else:
                    delivered.append(sent)
            finally:
                if rs is not None:
                    rs.terminate()
                    rs.wait()
                shutil.rmtree(d, ignore_errors=True)
        row = {"key": key, "name": name, "lines_s": statistics.median(rates),
               "peak_kb": max(peaks), "delivered": min(delivered), "sent": sent,
               "runs": delivered, "dropped": max(dropped)}
        log(f"  {key}: delivered per run {delivered}, dropped per run {dropped}, "
            f"lines/s per run {[round(r) for r in rates]}")
        SINK_OUT.append(row)
        extra = f", kept {row['delivered']:,} lines in the rotated files" if key == "file" \
            else f", delivered {row['delivered']:,}/{sent:,}"
        log(f"  {key}: {row['lines_s']:,.0f} lines/s, peak RSS {row['peak_kb']:,} KiB{extra}, "
            f"dropped at most {row['dropped']:,}")


# ---------------------------------------------------------------- counts

CG = {}


def callgrind_run(tag, mode, lines, env, sink=False):
    cgdir = WORK / "cg"
    cgdir.mkdir(exist_ok=True)
    for f in cgdir.glob(f"cg.{tag}.{lines}*"):
        f.unlink()
    out = cgdir / f"cg.{tag}.{lines}"
    s = None
    if sink:
        s = Sink(f"cg-{tag}")
        env = dict(env)
        env["LLT_TARGET"] = f"socket:{s.sock}"
    cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
           f"--callgrind-out-file={out}", str(WRITER), mode, str(lines)]
    with open(os.devnull, "wb") as null:
        subprocess.run(cmd, stdout=null, stderr=subprocess.DEVNULL, env=env, check=True)
    if s:
        s.stop()
        s.count_and_remove()
    files = sorted(cgdir.glob(f"cg.{tag}.{lines}*"))
    per = {}
    for f in files:
        for row in open(f, errors="replace"):
            if row.startswith("totals:") or row.startswith("summary:"):
                per[f.name] = int(row.split()[1])
                break
    # Thread 1 is the program; any other thread is the library's consumer.
    prog = sum(v for k, v in per.items() if k.endswith("-01") or "-" not in k[len(out.name):])
    other = sum(per.values()) - prog
    return prog, other, files


def top_functions(path, n=12):
    """The n most expensive functions (self cost) of a callgrind file; all if n is None."""
    p = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", str(path)], capture_output=True,
                       text=True)
    rows = []
    for row in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([ \d.]+%\)\s+(.*)", row)
        if m and "PROGRAM TOTALS" not in row:
            rows.append((int(m.group(1).replace(",", "")), m.group(2)))
    return rows if n is None else rows[:n]


# What each function of the tapped path is, for the cost breakdown.
CATEGORIES = [
    ("hook entry and tap decision (write hook, simple_tapped, fd table, errno guard)",
     r"hooks::fd|fd\.rs:write|tap\.rs|real\.rs|errno|ErrnoGuard"),
    ("stdio accounting (FILE buffer bookkeeping around each call)",
     r"stdio::|hooks::stdio|glibc\.rs"),
    ("ring push (reserve CAS, header, wake check)", r"transport::push|ring\.rs:logtap::transport::push"),
    ("memset", r"memset"),
    ("copying the bytes (memcpy)", r"memcpy|memmove|mempcpy"),
    ("frame planning over ring records (one iovec per write)", r"target::plan|target::drain|target::account"),
    ("glibc cancellation points (the process now has a second thread)", r"asynccancel"),
]


MEMSET = {
    "program thread": "memset: the 4 KiB stdio scratch array zeroed on every tapped stdio call",
    "library thread": "memset: Ring::release zeroing every consumed byte",
}


def breakdown(path, lines, thread, exclude=r"\?\?\?:main|writer\b"):
    """Instructions per line of `path` by category (whole run / lines)."""
    cats = {(MEMSET[thread] if name == "memset" else name): 0.0 for name, _ in CATEGORIES}
    other = 0.0
    for ir, fn in top_functions(path, None):
        if re.search(exclude, fn):
            continue
        for name, rx in CATEGORIES:
            if re.search(rx, fn):
                cats[MEMSET[thread] if name == "memset" else name] += ir / lines
                break
        else:
            other += ir / lines
    return cats, other


def short_fn(s):
    # "/path/src/ring.rs:logtap::transport::push [/.../liblogtap.so]" -> "ring.rs: logtap::transport::push"
    s = re.sub(r"\s*\[.*\]$", "", s)
    s = re.sub(r"^/rustc/[0-9a-f]+/library/", "std/", s)
    s = re.sub(r"^.*/(src/|sysdeps/|nptl/|csu/|io/)", r"\1", s)
    s = s.replace(str(ROOT) + "/", "")
    return s


def counts():
    if not shutil.which("valgrind"):
        log("valgrind not found: instruction counts skipped")
        return
    log(f"instruction counts (callgrind, {CG_LINES:,} vs {2 * CG_LINES:,} lines: marginal per line)")
    n1, n2 = CG_LINES, 2 * CG_LINES
    cases = [
        ("base", "write", base_env(), False, "write, untapped"),
        ("a", "write", tapped_env(LLT_TAP_INTO=0), False, "(a) write, loaded, nothing tapped"),
        ("b", "write", tapped_env(LLT_TAP_INTO=1, LLT_TARGET=f"file:{WORK / 'cg-target.bin'}"),
         False, "(b) write -> file"),
        ("c", "write", tapped_env(LLT_TAP_INTO=1), True, "(c) write -> socket + sink"),
        ("fbase", "fputs", base_env(), False, "fputs, untapped"),
        ("d", "fputs", tapped_env(LLT_TAP_INTO=1), True, "(d) fputs -> socket + sink"),
    ]
    for tag, mode, env, sink, label in cases:
        (WORK / "cg-target.bin").unlink(missing_ok=True)
        p1, o1, _ = callgrind_run(tag, mode, n1, env, sink)
        (WORK / "cg-target.bin").unlink(missing_ok=True)
        p2, o2, files = callgrind_run(tag, mode, n2, env, sink)
        CG[tag] = {
            "label": label,
            "prog": (p2 - p1) / (n2 - n1),
            "consumer": (o2 - o1) / (n2 - n1),
            "files": [str(f) for f in files],
        }
        log(f"  {label}: program thread {CG[tag]['prog']:.1f} instr/line, "
            f"library thread {CG[tag]['consumer']:.1f} instr/line")
    (WORK / "cg-target.bin").unlink(missing_ok=True)
    # Top functions of the tapped write path (b), per thread.
    for tag in ("b", "c", "d"):
        tops = {}
        for f in CG[tag]["files"]:
            rows = top_functions(f)
            if rows:
                th = "program thread" if f.endswith("-01") else "library thread"
                tops[th] = [(ir / n2, short_fn(fn)) for ir, fn in rows]
                CG[tag].setdefault("breakdown", {})[th] = breakdown(f, n2, th)
        CG[tag]["top"] = tops


STRACE = {}


def syscalls():
    if not shutil.which("strace"):
        log("strace not found: system call counts skipped")
        return
    n = CG_LINES
    log(f"system calls (strace -f -c, {n:,} lines)")
    for tag, mode in (("c", "write"), ("d", "fputs")):
        sink = Sink(f"st-{tag}")
        env = tapped_env(LLT_TAP_INTO=1, LLT_TARGET=f"socket:{sink.sock}")
        out = WORK / f"strace.{tag}.txt"
        with open(os.devnull, "wb") as null:
            subprocess.run(["strace", "-f", "-c", "-o", str(out), str(WRITER), mode, str(n)],
                           stdout=null, stderr=subprocess.DEVNULL, env=env, check=True)
        sink.stop()
        sink.count_and_remove()
        calls = {}
        for row in open(out):
            parts = row.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1].isidentifier():
                try:
                    calls[parts[-1]] = int(parts[3])
                except ValueError:
                    pass
        keep = {k: v for k, v in calls.items()
                if k in ("write", "writev", "sendmsg", "futex", "poll", "mmap", "munmap",
                         "clone3", "clone", "madvise")}
        STRACE[tag] = (mode, keep)
        log(f"  {mode} -> socket: " + ", ".join(f"{k} {v:,}" for k, v in sorted(keep.items())))


# ---------------------------------------------------------------- report


def machine():
    model = "?"
    try:
        for row in open("/proc/cpuinfo"):
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "glibc": platform.libc_ver()[1],
        "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip() or "?",
    }


def fmt_target(r):
    if r["target_ns"] is not None:
        t = f"≤ {r['target_ns']} ns/line"
        if r["key"] != "a":
            t += ", all delivered"
        return t
    if r["target_ratio"] is not None and "pause_share" in r:
        return (f"slowed ≤ {(r['target_ratio'] - 1) * 100:.0f}% of the pause (now "
                f"{pm(r['pause_added_ms'])} ms, {r['pause_share'] * 100:.1f}%)")
    if r["target_ratio"] is not None:
        return (f"≤ {(r['target_ratio'] - 1) * 100:.0f}% slower than tapped with the sink "
                "running")
    return "—"


def verdict(r):
    return "—" if r["pass"] is None else ("**pass**" if r["pass"] else "**FAIL**")


def write_report(m_start, m_end, elapsed):
    md = []
    md.append("# logtap benchmark results\n")
    md.append("Regenerated by `make bench` (`bench/run.py`). Do not edit by hand.\n")
    md.append("| | |\n|---|---|")
    md.append(f"| date | {m_start['date']} |")
    md.append(f"| machine | {m_start['nproc']} cores, {m_start['cpu']} |")
    md.append(f"| kernel / glibc | {m_start['kernel']} / {m_start['glibc']} |")
    md.append(f"| logtap revision | `{m_start['git']}` |")
    md.append(f"| load average (1/5/15 min) at start / end | {m_start['load']} — {m_end['load']} |")
    md.append(f"| lines per run | {LINES:,} of {LINE_BYTES} bytes, the writer's stdout on /dev/null |")
    md.append(f"| runs | {RUNS} rounds per scenario, untapped and tapped runs alternating "
              f"(ABBA); medians |")
    md.append(f"| bench time | {elapsed:.0f} s |")
    md.append("")
    md.append("A load average near or above the core count means other work shared the "
              "machine: the wall-clock figures are then noisy (see the min–max spread); "
              "the instruction counts below are not affected.\n")
    md.append("## Whole-process comparisons\n")
    md.append("Time is the writer's wall time from start to exit (the library's exit waits "
              "for delivery, `LLT_EXIT_TIMEOUT_MS=30000`), except for the (f) row marked "
              "*writes during the pause*, which is the writer's own time for the second half "
              "of its lines (the sink is SIGSTOPped at the middle line for 1 s). *Drain* is the "
              "sink's time from SIGTERM after the writer exited to its exit (what it still "
              "had to read and print); *end to end* adds it to the tapped time, and the "
              "socket targets are judged on it. *CPU* is the writer's user+system time "
              "(all its threads) added per line: less sensitive to a busy machine than wall "
              "time. *Dropped lines*: the bytes the library reported dropped (its notice "
              "frames). For (f), the ratio in brackets compares with the same tapped run "
              "with the sink running (the target), the other with the untapped run.\n")
    md.append("| scenario | untapped ms | tapped ms (min–max) | ratio | added ns/line | "
              "end to end ns/line | CPU ns/line | delivered (min) | dropped lines | drain ms | "
              "target | result |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in SCEN:
        deliv = (f"{int(r['delivered_med']):,} ({int(r['delivered_min']):,})"
                 if "delivered_med" in r else "—")
        drop = f"{int(r['dropped_med']):,}" if "dropped_med" in r else "—"
        lag = f"{r['lag_ms']:.0f}" if "lag_ms" in r and r["key"] != "b" else "—"
        ratio = f"{r['ratio']:.2f}"
        if "ref_ratio" in r:
            ratio += f" ({r['ref_ratio']:.2f})"
        e2e = f"{pm(r['e2e_ns_line'])}" if "e2e_ns_line" in r else "—"
        cpu = f"{pm(r['cpu_ns_line'])}" if r["metric"] == "wall" else "—"
        md.append(f"| {r['name']} | {r['base_ms']:.1f} | {r['tap_ms']:.1f} "
                  f"({r['tap_min_ms']:.0f}–{r['tap_max_ms']:.0f}) | {ratio} | "
                  f"{pm(r['ns_line'])} | {e2e} | {cpu} | {deliv} | {drop} | {lag} | "
                  f"{fmt_target(r)} | {verdict(r)} |")
    md.append("")
    if PEERS:
        md.append("## Peers: the container runtime's model and the program's own log file\n")
        md.append("Measured in the same rounds as (c), against the same untapped runs. *Pipe "
                  "model*: the writer's stdout is a pipe; `bench/pipe_reader.c` drains it and "
                  "writes one JSON object per line (`{\"log\":…,\"stream\":\"stdout\","
                  "\"time\":…}`, as Docker's json-file driver and conmon do) to a tmpfs file; "
                  "its *drain* is how long it still ran after the writer exited. *Own log "
                  "file*: the writer opens a tmpfs file and writes the same lines to it.\n")
        md.append(f"(c) / pipe model, added time per line: **{PEERS['ratio_e2e']:.2f}** end to end "
                  f"({pm(PEERS['c_e2e'])} ns vs {pm(PEERS['pipe_e2e'])} ns), "
                  f"{PEERS['ratio_writer']:.2f} for the writer alone ({pm(PEERS['c_writer'])} ns "
                  f"vs {pm(PEERS['pipe_writer'])} ns); the program's own log file adds "
                  f"{pm(PEERS['own'])} ns per line.\n")
    before_rows = [r for r in SCEN if "before" in r]
    if before_rows:
        md.append("## Before / after (`BENCH_BEFORE_LIB`)\n")
        md.append(f"The before build (`{os.environ.get('BENCH_BEFORE_LIB')}`, sink "
                  f"`{os.environ.get('BENCH_BEFORE_SINK') or 'this build'}`) ran in the same "
                  "rounds as this one, against the same untapped runs. Added ns/line: median "
                  "wall time (socket targets: end to end) minus untapped; for (f) *writes during "
                  "the pause*, the slowdown as a share of the pause.\n")
        md.append("| scenario | before: added ns/line | after: added ns/line | before: CPU ns/line "
                  "| after: CPU ns/line | before: delivered (min) | after: delivered (min) |")
        md.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in before_rows:
            bf = r["before"]
            if "pause_share" in r:
                cost = (f"{pm(bf['pause_added_ms'])} ms ({bf['pause_share'] * 100:.1f}%)",
                        f"{pm(r['pause_added_ms'])} ms ({r['pause_share'] * 100:.1f}%)")
            else:
                cost = (pm(bf.get("e2e_ns_line", bf["ns_line"])),
                        pm(r.get("e2e_ns_line", r["ns_line"])))
            cpu = ((pm(bf["cpu_ns_line"]), pm(r["cpu_ns_line"])) if r["metric"] == "wall"
                   else ("—", "—"))
            dl = (f"{int(bf['delivered_min']):,}" if "delivered_min" in bf else "—",
                  f"{int(r['delivered_min']):,}" if "delivered_min" in r else "—")
            md.append(f"| {r['name']} | {cost[0]} | {cost[1]} | {cpu[0]} | {cpu[1]} | "
                      f"{dl[0]} | {dl[1]} |")
        md.append("")
    md.append("## Memory\n")
    md.append("Peak resident memory (VmHWM) of the writer at exit, untapped vs tapped "
              "(medians), and of the sink while it served the run.\n")
    md.append("| scenario | writer untapped KiB | writer tapped KiB | library overhead KiB | sink peak KiB |")
    md.append("|---|---:|---:|---:|---:|")
    seen = set()
    for r in SCEN:
        if r["name"].endswith("whole program (exit waits)") or r["key"] in seen:
            continue
        seen.add(r["key"])
        sk = f"{r['sink_hwm_kb']:,}" if "sink_hwm_kb" in r else "—"
        md.append(f"| {r['name']} | {r['hwm_base_kb']:,.0f} | {r['hwm_tap_kb']:,.0f} | "
                  f"{r['hwm_tap_kb'] - r['hwm_base_kb']:+,.0f} | {sk} |")
    md.append("")
    if SINK_ALONE:
        md.append("## The sink alone\n")
        md.append("| input | lines/s decoded and printed (median) | peak RSS KiB |")
        md.append("|---|---:|---:|")
        md.append(f"| `--read` of a frame file (loadgen, 64 KiB frames), output to /dev/null | "
                  f"{SINK_ALONE['read_lines_s']:,.0f} | {SINK_ALONE['read_peak_kb']:,} |")
        md.append(f"| socket, one loadgen connection (64 KiB frames), output to /dev/null | "
                  f"{SINK_ALONE['socket_lines_s']:,.0f} | {SINK_ALONE['socket_peak_kb']:,} |")
        md.append("")
    if SINK_OUT:
        md.append("## The sink per output kind\n")
        md.append("One loadgen connection (64 KiB frames) into the sink with one output "
                  "(default `--output-buffer`); lines/s: lines the output wrote per second, "
                  "from the first byte sent to the sink's exit after SIGTERM, when the output "
                  "has written everything (median); peak RSS of the sink; dropped: what the "
                  "output reported it dropped because it was slower than the input for longer "
                  "than its queue lasts (the sink reads at full speed whatever its outputs "
                  "do).\n")
        md.append("| output | lines/s | peak RSS KiB | delivered | dropped (max of runs) |")
        md.append("|---|---:|---:|---:|---:|")
        for r in SINK_OUT:
            dl = (f"{r['delivered']:,} lines kept (rotation)" if r["key"] == "file"
                  else f"{r['delivered']:,} / {r['sent']:,}")
            md.append(f"| {r['name']} | {r['lines_s']:,.0f} | {r['peak_kb']:,} | {dl} | "
                      f"{r['dropped']:,} |")
        md.append("")
    if CG:
        md.append("## Instruction counts (callgrind)\n")
        md.append(f"User-space instructions per line, marginal: the difference between runs "
                  f"of {CG_LINES:,} and {2 * CG_LINES:,} lines divided by {CG_LINES:,}, so "
                  "start-up and exit are excluded. Deterministic, unaffected by load; system "
                  "call time in the kernel is not included.\n")
        md.append("| run | program thread instr/line | library thread instr/line |")
        md.append("|---|---:|---:|")
        for tag, c in CG.items():
            md.append(f"| {c['label']} | {c['prog']:.1f} | {c['consumer']:.1f} |")
        md.append("")
        if "base" in CG and "a" in CG:
            md.append(f"Added by the library with nothing tapped: "
                      f"{CG['a']['prog'] - CG['base']['prog']:.1f} instructions per write. "
                      f"Added on the program's thread by tapping to a file: "
                      f"{CG['b']['prog'] - CG['base']['prog']:.1f}, and "
                      f"{CG['b']['consumer']:.1f} more on the library's thread.\n")
        for tag in ("b", "d"):
            if "breakdown" not in CG.get(tag, {}):
                continue
            md.append(f"### What the tapped path costs, {CG[tag]['label']}\n")
            md.append("Instructions per line by part of the path (the writer's own code "
                      "excluded; the libc write itself and the kernel not counted). "
                      "Compare: the untapped program spends "
                      f"{CG['base' if tag == 'b' else 'fbase']['prog']:.0f} per line.\n")
            md.append("| thread | part | instr/line |")
            md.append("|---|---|---:|")
            for th, (cats, other) in CG[tag]["breakdown"].items():
                for name, v in sorted(cats.items(), key=lambda kv: -kv[1]):
                    if v >= 0.5:
                        md.append(f"| {th} | {name} | {v:.1f} |")
                md.append(f"| {th} | other (libc write, locks, strlen, start-up…) | {other:.1f} |")
            md.append("")
        for tag in ("b", "c", "d"):
            if "top" not in CG.get(tag, {}):
                continue
            md.append(f"### Top functions, {CG[tag]['label']} (instructions per line, "
                      f"{2 * CG_LINES:,}-line run incl. start-up)\n")
            for th, rows in CG[tag]["top"].items():
                md.append(f"*{th}*\n")
                md.append("| instr/line | function |")
                md.append("|---:|---|")
                for v, fn in rows:
                    md.append(f"| {v:.1f} | `{fn}` |")
                md.append("")
    if STRACE:
        md.append("## System calls (strace -f -c)\n")
        md.append(f"{CG_LINES:,} lines, whole process (program + library thread).\n")
        md.append("| run | " + " | ".join(["write", "writev", "sendmsg", "futex", "poll"]) + " |")
        md.append("|---|---:|---:|---:|---:|---:|")
        for tag, (mode, calls) in STRACE.items():
            md.append(f"| {mode} -> socket + sink | " +
                      " | ".join(f"{calls.get(k, 0):,}" for k in
                                 ["write", "writev", "sendmsg", "futex", "poll"]) + " |")
        md.append("")
    analysis = BENCH / "ANALYSIS.md"
    if analysis.exists():
        md.append("## Where the time goes\n")
        md.append(f"See [`bench/ANALYSIS.md`](../ANALYSIS.md) for the reading of these figures "
                  "and the recommended design changes.\n")
    (RESULTS / "results.md").write_text("\n".join(md) + "\n")
    (RESULTS / "results.json").write_text(json.dumps(
        {"machine": m_start, "machine_end": m_end, "lines": LINES, "runs": RUNS,
         "scenarios": SCEN, "sink_alone": SINK_ALONE, "peers": PEERS,
         "before_lib": os.environ.get("BENCH_BEFORE_LIB"),
         "callgrind": {k: {kk: vv for kk, vv in v.items() if kk != "files"}
                       for k, v in CG.items()},
         "strace": STRACE}, indent=1) + "\n")
    log(f"wrote {RESULTS / 'results.md'}")


def chart(m):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not available: chart.png not written (the table is complete)")
        return
    rows = [r for r in SCEN if r["metric"] == "wall" and "exit waits" not in r["name"]]
    if not rows:
        return
    names = [r["name"] for r in rows][::-1]
    vals = [r.get("e2e_ns_line", r["ns_line"]) for r in rows][::-1]
    targets = [r["target_ns"] for r in rows][::-1]
    colors = []
    for r in rows[::-1]:
        if r["key"] in ("pipe", "own"):
            colors.append("#4a78b5")  # the peers
        else:
            colors.append("#999999" if r["pass"] is None else
                          ("#2e8b57" if r["pass"] else "#c0392b"))
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.8))
    y = range(len(rows))
    ax.barh(list(y), vals, color=colors)
    # The before build (BENCH_BEFORE_LIB), same rounds: a hollow bar.
    bvals = [r["before"].get("e2e_ns_line", r["before"]["ns_line"]) if "before" in r else None
             for r in rows[::-1]]
    if any(v is not None for v in bvals):
        ax.barh([i for i, v in enumerate(bvals) if v is not None],
                [v for v in bvals if v is not None], height=0.35, fill=False,
                edgecolor="black", linestyle="--", label="before (BENCH_BEFORE_LIB)")
        ax.legend(fontsize=7, loc="lower right")
    for i, t in enumerate(targets):
        if t is not None:
            ax.plot([t, t], [i - 0.4, i + 0.4], color="black", lw=2)
    for i, r in enumerate(rows[::-1]):
        label = f"{pm(vals[i])} ns  (x{r['ratio']:.2f})"
        if bvals[i] is not None:
            label += f"  before {pm(bvals[i])} ns"
        if "delivered_min" in r:
            label += f"  delivered ≥ {100 * r['delivered_min'] / r['lines']:.0f}%"
        ax.text(max(vals[i], bvals[i] or 0, 0) + 4, i, label, va="center", fontsize=8)
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("ns added per line: median wall time, tapped − untapped (socket: end to end)\n"
                  "black bar: target; red: missed (time or lines lost); green: met; blue: peers",
                  fontsize=8)
    allv = vals + [v for v in bvals if v is not None]
    ax.set_xlim(min(0, min(allv)) - 10, max(max(allv), 300) * (2.0 if len(allv) > len(vals) else 1.6))
    ax.set_title(f"logtap: cost of tapping, {LINES:,} lines of {LINE_BYTES} B\n"
                 f"{m['nproc']} cores, {m['cpu']}, {m['date']}, load {m['load']}",
                 fontsize=9)
    ax.axvline(0, color="black", lw=0.5)
    fig.tight_layout()
    fig.savefig(RESULTS / "chart.png", dpi=110)
    plt.close(fig)
    log(f"wrote {RESULTS / 'chart.png'}")


def main():
    t0 = time.time()
    setup()
    m_start = machine()
    log(f"logtap bench: {LINES:,} lines x {RUNS} runs; {m_start['nproc']} cores, "
        f"{m_start['cpu']}, load {m_start['load']}")
    parts = [("a", scenario_a), ("b", scenario_b), ("c", scenario_c), ("d", scenario_d),
             ("e", scenario_e), ("f", scenario_f), ("g", scenario_g), ("sink", sink_alone),
             ("outputs", sink_outputs), ("cg", counts),
             ("strace", syscalls)]
    for name, fn in parts:
        if name in SKIP or (ONLY and name not in ONLY):
            continue
        try:
            fn()
        except Exception as e:  # a broken part is reported, the rest still runs
            log(f"  part {name} failed: {e}")
    if ONLY:
        # A partial run prints its figures; the report stays whole.
        log("BENCH_ONLY: bench/results/results.md not rewritten")
        return
    m_end = machine()
    write_report(m_start, m_end, time.time() - t0)
    chart(m_start)
    log("")
    log("targets (reported, not asserted):")
    for r in SCEN:
        if r["pass"] is not None:
            log(f"  {'PASS' if r['pass'] else 'FAIL'}  {r['name']}: {pm(r['ns_line'])} ns/line, "
                f"x{r['ratio']:.2f}" + (f", delivered {int(r['delivered_min']):,}/{r['lines']:,}"
                                       if "delivered_min" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
