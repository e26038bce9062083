"""How scripts/bench.py measures: timed windows free of other processes' load, memory high-water
marks, and the machine's dense matmul peak (the denominator of MFU).

A shared machine is the norm (CI runners, laptops, a colleague's job), so every timed window
records the CPU share other processes took during it (LoadMeter, from /proc); a window over the
limit is thrown away and, after waiting for the machine to quieten, run again.
"""
import contextlib
import os
import platform
import resource
import statistics
import sys
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PEAK_SIZES = (2048, 4096)  # n of the n x n x n matmuls that measure the peak (--peak-sizes)


# -----------------------------------------------------------------------------
# timing, memory and background load


def device_now() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(fn, units_per_call, warmup, windows, calls_per_window, device, max_other_load=None):
    """[(units/s, other load)] of timed windows of `calls_per_window` calls each, after warm-up.

    A window during which other processes took more than `max_other_load` of the CPUs is run
    again, after waiting for the machine to quieten (up to 2 x `windows` extra windows)."""
    for _ in range(warmup):
        fn()
    out, extra = [], 2 * windows
    while sum(is_clean(load, max_other_load) for _, load in out) < windows and len(out) < windows + extra:
        if out and not is_clean(out[-1][1], max_other_load):
            wait_for_quiet(max_other_load)
        sync(device)
        meter, start = LoadMeter(), time.perf_counter()
        for _ in range(calls_per_window):
            fn()
        sync(device)
        out.append((units_per_call * calls_per_window / (time.perf_counter() - start), meter.others()))
    return out


def is_clean(load, max_other_load):
    return load is None or max_other_load is None or load <= max_other_load


QUIET_WAIT_S = {"left": 900.0}  # per process: how long we may still sit out other processes' load


def wait_for_quiet(max_other_load, probe_s=0.5):
    """Sleep until other processes use at most max_other_load of the CPUs over a probe_s window
    (gives up, silently, once this process has waited QUIET_WAIT_S in all). A quiet machine costs
    one probe, so callers may call it before every measurement."""
    if max_other_load is None or max_other_load >= 1:  # no load can exceed it: nothing to wait for
        return
    while QUIET_WAIT_S["left"] > 0:
        meter = LoadMeter()
        time.sleep(probe_s)
        QUIET_WAIT_S["left"] -= probe_s
        if is_clean(meter.others(), max_other_load):
            return


def summarise(windows, max_other_load):
    """Median rate of the clean windows (all windows if none was clean), with the evidence."""
    clean = [r for r, load in windows if is_clean(load, max_other_load)]
    return {"rate": statistics.median(clean or [r for r, _ in windows]),
            "windows": [round(r, 3) for r, _ in windows], "window_load": [load for _, load in windows],
            "clean_windows": len(clean)}


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def own_cpu_seconds() -> float:
    """CPU time of this process and all its descendants (live loader workers included)."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parent[int(entry)] = int(fields[1])
                cpu[int(entry)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    ours, total = {os.getpid()}, 0
    for pid in sorted(parent):  # children have larger pids than parents, bar pid wrap-around
        if pid in ours or parent[pid] in ours:
            ours.add(pid)
            total += cpu.get(pid, 0)
    return total / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """CPU time that *other* processes used while we measured, as a fraction of all cores:
    busy time from /proc/stat minus our own process tree's. 0 means a quiet machine; None where
    /proc is missing (not Linux)."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            own = own_cpu_seconds()
        except OSError:
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, less idle and iowait
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own

    def others(self):
        end = self._read()
        if self.start is None or end is None:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self.start))
        return round(max(0.0, busy - own) / (wall * os.cpu_count()), 3)


# -----------------------------------------------------------------------------
# the dense matmul peak


def matmul_peak_tflops(device, precision, sizes=PEAK_SIZES, repeats=5, max_other_load=None):
    """The best TFLOP/s of n x n x n matmuls in `precision` (2 n^3 FLOPs each) over `sizes`,
    counting only calls during which other processes stayed under `max_other_load` (up to
    3 x `repeats` tries per size). On a GPU 8192^3 is added: 4096^3 takes a fraction of a
    millisecond there, too short to keep every unit busy."""
    dtype, best = DTYPES[precision], 0.0
    for n in sizes + ((8192,) if device.type == "cuda" else ()):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)  # first call: kernel selection, packing buffers
        clean, every, load = [], [], None
        while len(clean) < repeats and len(every) < 3 * repeats:
            if not is_clean(load, max_other_load):
                wait_for_quiet(max_other_load)
            sync(device)
            meter, start = LoadMeter(), time.perf_counter()
            torch.mm(a, b)
            sync(device)
            every.append(time.perf_counter() - start)
            load = meter.others()
            if is_clean(load, max_other_load):
                clean.append(every[-1])
        best = max(best, 2 * n ** 3 / min(clean or every) / 1e12)
    return best


def memory_now(device) -> int:
    """Bytes in use now: CUDA tensors allocated, or this process's resident set on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return current_rss_bytes()


def peak_memory_mb(device, base) -> float:
    """Peak use since memory_now() returned `base`, above that base, in MiB."""
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()
    return (peak - base) / 2 ** 20


def cpu_name():
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({torch.backends.cpu.get_cpu_capability()})"
    return platform.processor() or platform.machine()
