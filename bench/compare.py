#!/usr/bin/env python3
"""kiln next to a real BuildKit v0.11.6, on identical marshalled definitions (`bench/compare`).

Both engines get the same bytes (`kiln-bench defs` writes them with kiln's builder): the
200-step RUN chain and W1 (three stages writing 30,000,000 random bytes each, one writing 2,000
small files, a stage copying all four). Rounds alternate kiln and BuildKit (A B A B) on roots in
one tmpfs; each case is timed as a whole command (`kiln build` / `buildctl build`). Printed per
case: median (min-max) wall time per engine, the ratio kiln/BuildKit of the medians, the target,
CPU seconds (kiln: the process and its children; BuildKit: the daemon's and buildctl's), and peak
RSS (kiln: the process, children included, so an upper bound; BuildKit: buildkitd's VmHWM, reset
before each run). Results also go to bench/results.json. Prints figures; asserts nothing.

Knobs: KILN_COMPARE_ROUNDS (3), KILN_COMPARE_CHAIN (200), KILN_COMPARE_ONLY (comma list of case
ids), KILN_BUILDKIT_DIR (../shared/buildkit), KILN_COMPARE_TMPFS_SIZE (12g).
"""

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KILN = REPO / "target" / "release" / "kiln"
BENCH = REPO / "target" / "release" / "kiln-bench"
BK_DIR = Path(os.environ.get("KILN_BUILDKIT_DIR", REPO.parent / "shared" / "buildkit"))
BUILDCTL = BK_DIR / "buildctl"
ROUNDS = int(os.environ.get("KILN_COMPARE_ROUNDS", "3"))
ONLY = [c for c in os.environ.get("KILN_COMPARE_ONLY", "").split(",") if c]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# (id, description, target ratio kiln/BuildKit or None when BuildKit cannot do it)
CASES = [
    ("chain-cold", "200-step RUN chain, cold", 0.5),
    ("chain-cached", "same, fully cached (new process)", 0.8),
    ("w1-cold", "W1, cold", 0.8),
    ("w1-cached", "W1, cached", 0.8),
    ("w1-cached-output", "W1, cached, with a local output", 0.8),
    ("w1-cold-export", "W1 cold + local cache export mode=max", 0.7),
    ("w1-export-empty", "W1 cached, local cache export to an empty dir (blobs made)", 0.8),
    ("w1-registry-push", "W1 cached, first cache push to a loopback registry (blobs made)", 0.8),
    ("import-local-output", "fresh root + local cache import, with a local output", None),
    ("import-local", "fresh root + local cache import, no output", None),
    ("import-registry-output", "fresh root + registry cache import, with a local output", None),
    ("import-registry", "fresh root + registry cache import, no output", None),
    ("df-cold", "multi-stage Dockerfile (dockerfile.v0), cold", 0.8),
    ("df-cached", "same Dockerfile, cached", 0.8),
    ("df-import-local", "same Dockerfile, fresh root/pruned daemon + local cache import", 0.8),
]
NO_BK_IMPORT = (
    "n/a: buildctl v0.11.6 imports no cache for a raw definition (`build < def --import-cache` "
    "runs every vertex); the Dockerfile rows compare imports through the dockerfile.v0 frontend"
)


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sample:
    def __init__(self, wall, cpu, rss_kb):
        self.wall, self.cpu, self.rss_kb = wall, cpu, rss_kb


def run_measured(cmd, stdin_path, logf):
    """Runs cmd; returns (wall seconds, rusage of it and its waited-for children)."""
    with open(stdin_path, "rb") as stdin:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=stdin, stdout=logf, stderr=logf)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        logf.flush()
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}); see {logf.name}")
    return wall, ru


def proc_cpu(pid):
    """utime+stime+cutime+cstime of pid, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def proc_hwm_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Kiln:
    name = "kiln"

    def __init__(self, work, rootfs, logf):
        self.work, self.rootfs, self.logf = work, rootfs, logf

    def build(self, root, definition, extra):
        cmd = [str(KILN), "--root", str(root), "build", "--local", f"rootfs={self.rootfs}", "--progress", "plain"]
        wall, ru = run_measured(cmd + extra, definition, self.logf)
        return Sample(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)


class BuildKit:
    name = "buildkit"

    def __init__(self, work, rootfs, registry, logf):
        self.state, self.rootfs, self.logf = work / "bk", rootfs, logf
        out = subprocess.run([str(BK_DIR / "start"), str(self.state), registry], check=True, capture_output=True,
                             text=True)
        self.addr = out.stdout.strip()
        self.pid = int((self.state / "buildkitd.pid").read_text())

    def prune(self):
        subprocess.run([str(BUILDCTL), "--addr", self.addr, "prune", "--all"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)

    def build(self, definition, extra):
        # Resets buildkitd's peak RSS to its current RSS (Linux clear_refs 5) so VmHWM is this run's.
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        cpu0 = proc_cpu(self.pid)
        # buildctl v0.11.6 has no `quiet` progress; plain lines go to the log like kiln's would.
        cmd = [str(BUILDCTL), "--addr", self.addr, "build", "--local", f"rootfs={self.rootfs}", "--progress", "plain"]
        wall, ru = run_measured(cmd + extra, definition, self.logf)
        cpu = proc_cpu(self.pid) - cpu0 + ru.ru_utime + ru.ru_stime
        return Sample(wall, cpu, proc_hwm_kb(self.pid))

    def stop(self):
        subprocess.run([str(BK_DIR / "stop"), str(self.state)], check=False, capture_output=True, timeout=120)


class Registry:
    def __init__(self, work):
        self.dir = work / "registry"
        self.dir.mkdir()
        port = free_port()
        self.addr = f"127.0.0.1:{port}"
        cfg = self.dir / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'storage'}\nhttp:\n  addr: {self.addr}\n"
        )
        self.proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "log", "w"))
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2)
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"docker-registry did not start: {(self.dir / 'log').read_text()}")
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


def main():
    for tool in (KILN, BENCH, BUILDCTL, Path("/usr/bin/docker-registry")):
        if not tool.exists():
            sys.exit(f"bench/compare: {tool} is missing (run bench/compare, which builds and installs it)")
    work = Path(tempfile.mkdtemp(prefix="kiln-compare-"))
    size = os.environ.get("KILN_COMPARE_TMPFS_SIZE", "12g")
    on_tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(work)]).returncode == 0
    if not on_tmpfs:
        log(f"warning: cannot mount a tmpfs on {work}; roots stay on disk")
    logf = open(work.parent / f"{work.name}.log", "w")
    registry = bk = None
    try:
        defs = work / "defs"
        subprocess.run([str(BENCH), "defs", str(defs)], check=True)
        rootfs = work / "rootfs"
        subprocess.run([str(REPO / "tests" / "fixtures" / "make-rootfs"), str(rootfs)], check=True,
                       stdout=subprocess.DEVNULL)
        registry = Registry(work)
        bk = BuildKit(work, rootfs, registry.addr, logf)
        kiln = Kiln(work, rootfs, logf)
        df_dir = defs / "multistage"
        df_args = ["--frontend", "dockerfile.v0", "--local", f"context={df_dir}", "--local", f"dockerfile={df_dir}",
                   "--opt", "context:base=local:rootfs"]
        devnull = Path("/dev/null")
        samples = {c[0]: {"kiln": [], "buildkit": []} for c in CASES}
        want = lambda c: not ONLY or c in ONLY  # noqa: E731
        chain, w1 = defs / "chain.pb", defs / "w1.pb"
        for r in range(ROUNDS):
            log(f"== round {r + 1}/{ROUNDS}")

            def record(case, engine, sample):
                samples[case][engine].append(sample)
                log(f"  {case:24} {engine:8} {sample.wall:8.3f} s  cpu {sample.cpu:7.2f} s  rss {sample.rss_kb / 1024:6.0f} MB")

            kroot = fresh(work / "kiln-chain")
            if want("chain-cold") or want("chain-cached"):
                bk.prune()
                record("chain-cold", "kiln", kiln.build(kroot, chain, []))
                record("chain-cold", "buildkit", bk.build(chain, []))
                record("chain-cached", "kiln", kiln.build(kroot, chain, []))
                record("chain-cached", "buildkit", bk.build(chain, []))
            shutil.rmtree(kroot, ignore_errors=True)

            if want("df-cold") or want("df-cached") or want("df-import-local"):
                kroot = fresh(work / "kiln-df")
                bk.prune()
                record("df-cold", "kiln", kiln.build(kroot, devnull, df_args))
                record("df-cold", "buildkit", bk.build(devnull, df_args))
                record("df-cached", "kiln", kiln.build(kroot, devnull, df_args))
                record("df-cached", "buildkit", bk.build(devnull, df_args))
                # Both export a local cache (not timed), then build on a fresh root / pruned
                # daemon importing it: BuildKit imports through its Dockerfile frontend.
                caches = {e: fresh(work / f"df-cache-{e}") for e in ("kiln", "buildkit")}
                kiln.build(kroot, devnull, df_args + ["--export-cache", f"type=local,dest={caches['kiln']},mode=max"])
                bk.build(devnull, df_args + ["--export-cache", f"type=local,dest={caches['buildkit']},mode=max"])
                shutil.rmtree(kroot, ignore_errors=True)
                kroot = fresh(work / "kiln-df-import")
                bk.prune()
                record("df-import-local", "kiln",
                       kiln.build(kroot, devnull, df_args + ["--import-cache", f"type=local,src={caches['kiln']}"]))
                record("df-import-local", "buildkit",
                       bk.build(devnull, df_args + ["--import-cache", f"type=local,src={caches['buildkit']}"]))
                shutil.rmtree(kroot, ignore_errors=True)
                for c in caches.values():
                    shutil.rmtree(c, ignore_errors=True)
            if ONLY and not any(want(c[0]) for c in CASES if not c[0].startswith("df-")):
                continue

            kroot = fresh(work / "kiln-w1")
            bk.prune()
            record("w1-cold", "kiln", kiln.build(kroot, w1, []))
            record("w1-cold", "buildkit", bk.build(w1, []))
            if want("w1-cached"):
                record("w1-cached", "kiln", kiln.build(kroot, w1, []))
                record("w1-cached", "buildkit", bk.build(w1, []))
            if want("w1-cached-output"):
                for engine in (kiln, bk):
                    out = fresh(work / f"out-{engine.name}")
                    args = ["--output", f"type=local,dest={out}"]
                    s = kiln.build(kroot, w1, args) if engine is kiln else bk.build(w1, args)
                    record("w1-cached-output", engine.name, s)
                    shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(kroot, ignore_errors=True)

            # Cold + export first: the later exports of this root (and BuildKit's) find the
            # layer blobs made, as a CI machine re-exporting a warm cache does.
            cache = fresh(work / "cache-kiln")
            kroot = fresh(work / "kiln-w1-export")
            bk.prune()
            record("w1-cold-export", "kiln",
                   kiln.build(kroot, w1, ["--export-cache", f"type=local,dest={cache},mode=max"]))
            bk_cache = fresh(work / "cache-bk")
            record("w1-cold-export", "buildkit",
                   bk.build(w1, ["--export-cache", f"type=local,dest={bk_cache},mode=max"]))
            shutil.rmtree(bk_cache, ignore_errors=True)
            if want("w1-export-empty"):
                for engine in (kiln, bk):
                    dest = fresh(work / f"cache-empty-{engine.name}")
                    args = ["--export-cache", f"type=local,dest={dest},mode=max"]
                    s = kiln.build(kroot, w1, args) if engine is kiln else bk.build(w1, args)
                    record("w1-export-empty", engine.name, s)
                    shutil.rmtree(dest, ignore_errors=True)
            if want("w1-registry-push"):
                for engine in (kiln, bk):
                    ref = f"{registry.addr}/w1-{engine.name}-{r}:cache"
                    args = ["--export-cache", f"type=registry,ref={ref},mode=max"]
                    s = kiln.build(kroot, w1, args) if engine is kiln else bk.build(w1, args)
                    record("w1-registry-push", engine.name, s)
            shutil.rmtree(kroot, ignore_errors=True)

            imports = [
                ("import-local-output", ["--import-cache", f"type=local,src={cache}"], True),
                ("import-local", ["--import-cache", f"type=local,src={cache}"], False),
                ("import-registry-output",
                 ["--import-cache", f"type=registry,ref={registry.addr}/w1-kiln-{r}:cache"], True),
                ("import-registry", ["--import-cache", f"type=registry,ref={registry.addr}/w1-kiln-{r}:cache"],
                 False),
            ]
            for case, args, output in imports:
                if not want(case) or ("registry" in case and not want("w1-registry-push")):
                    continue
                kroot = fresh(work / "kiln-import")
                out = fresh(work / "out-import")
                extra = args + (["--output", f"type=local,dest={out}"] if output else [])
                record(case, "kiln", kiln.build(kroot, w1, extra))
                shutil.rmtree(kroot, ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
        report(samples, on_tmpfs)
    finally:
        if bk:
            bk.stop()
        if registry:
            registry.stop()
        logf.close()
        if on_tmpfs:
            subprocess.run(["umount", "-l", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def summary(ss):
    if not ss:
        return None
    walls = [s.wall for s in ss]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_s": statistics.median(s.cpu for s in ss),
        "peak_rss_mb": max(s.rss_kb for s in ss) / 1024,
        "runs": len(ss),
    }


def report(samples, on_tmpfs):
    rows = []
    for cid, desc, target in CASES:
        k, b = summary(samples[cid]["kiln"]), summary(samples[cid]["buildkit"])
        if k is None:
            continue
        ratio = k["median_s"] / b["median_s"] if b else None
        rss_ratio = k["peak_rss_mb"] / b["peak_rss_mb"] if b and b["peak_rss_mb"] else None
        rows.append({"case": cid, "description": desc, "kiln": k, "buildkit": b, "ratio": ratio, "target": target,
                     "meets_target": None if ratio is None else ratio <= target, "rss_ratio": rss_ratio,
                     "note": None if b else NO_BK_IMPORT})
    fmt = lambda s: f"{s['median_s']:.3f} ({s['min_s']:.3f}-{s['max_s']:.3f})" if s else "n/a"  # noqa: E731
    log("")
    log(f"kiln vs BuildKit v0.11.6 — median (min-max) seconds of {ROUNDS} rounds, "
        f"roots on {'tmpfs' if on_tmpfs else 'disk'}")
    log(f"| workload | kiln | BuildKit | kiln/BuildKit | target | kiln CPU s | BuildKit CPU s | kiln RSS MB | BuildKit RSS MB |")
    log("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k, b = r["kiln"], r["buildkit"]
        ratio = f"**{r['ratio']:.2f}x**" if r["ratio"] is not None else "n/a"
        target = f"<= {r['target']}x {'ok' if r['meets_target'] else 'MISSED'}" if r["ratio"] is not None else "-"
        log(f"| {r['description']} | {fmt(k)} | {fmt(b)} | {ratio} | {target} | {k['cpu_s']:.2f} | "
            f"{b['cpu_s'] if b else float('nan'):.2f} | {k['peak_rss_mb']:.0f} | "
            f"{b['peak_rss_mb'] if b else float('nan'):.0f} |")
    rss = [r["rss_ratio"] for r in rows if r["rss_ratio"] is not None]
    if rss:
        log(f"peak memory kiln/BuildKit: {min(rss):.2f}x - {max(rss):.2f}x (target <= 0.5x)")
    if any(r["note"] for r in rows):
        log(f"imports: {NO_BK_IMPORT}")
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "roots": "tmpfs" if on_tmpfs else "disk"},
        "rounds": ROUNDS,
        "rows": rows,
    }
    out = REPO / "bench" / "results.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
