"""The machine a benchmark ran on, and the CPU it spent while a section ran: ours, the kernel's, others'.

These VMs are shared: another job's CPU use changes the figures. Each section's split (the benchmark's own
process tree, kernel work, every other process) is measured from /proc so that a disturbed run says so.
"""

from __future__ import annotations

import os
import platform
import sys
import time

OTHER_LOAD_WARNING = 0.15  # cores of other processes from which a section's figures count as disturbed
_HZ = os.sysconf("SC_CLK_TCK")
_PF_KTHREAD = 0x00200000


def machine_info(tmp: str, malloc_tuned: bool, **versions: str) -> dict:
    import tidelog

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError):
        mem_gib = None
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": mem_gib, "python": sys.version.split()[0],
            "implementation": platform.python_implementation(), "kernel": platform.release(),
            "tidelog": tidelog.__version__, **versions, "tmp_dir": tmp,
            "malloc": ("glibc mallopt M_MMAP_THRESHOLD=16 MiB, M_TRIM_THRESHOLD=256 MiB" if malloc_tuned
                       else "default")}


def machine_line(info: dict, *extra: str) -> str:
    """The report's machine line: cores, CPU, memory, kernel and the versions that matter."""
    return (f"machine: nproc={info['nproc']}, {info['cpu_model']}, {info['memory_gib']} GiB RAM, Linux "
            f"{info['kernel']}; Python {info['python']}, " + ", ".join(extra + (f"tidelog {info['tidelog']}",)))


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all CPUs, idle and iowait excluded), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _HZ


def _snapshot() -> dict:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    stats: dict[int, tuple[int, int, int]] = {}  # pid: (utime + stime, ppid, flags)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    cols = f.read().rsplit(")", 1)[1].split()
                stats[int(entry)] = (int(cols[11]) + int(cols[12]), int(cols[1]), int(cols[6]))
            except (OSError, IndexError, ValueError):
                continue
    ours, todo = set(), [os.getpid()]  # this process and everything it started (servers, member processes)
    while todo:
        pid = todo.pop()
        ours.add(pid)
        todo += [child for child, (_, ppid, _) in stats.items() if ppid == pid and child not in ours]
    kernel = sum(t for pid, (t, ppid, flags) in stats.items()
                 if pid not in ours and (flags & _PF_KTHREAD or ppid == 2 or pid == 2))
    # /proc/stat: user nice system idle iowait irq softirq steal
    return {"t": time.perf_counter(), "busy": sum(v[:8]) - v[3] - v[4], "irq": v[5] + v[6],
            "ours": sum(stats[pid][0] for pid in ours if pid in stats), "kthreads": kernel}


class LoadMeter:
    """CPU (average cores busy) per section: the benchmark's process tree, kernel work (softirq, kernel
    threads such as loopback TCP and writeback) and every other process."""

    def __init__(self) -> None:
        self.sections: dict[str, dict] = {}
        self._started: dict[str, dict] = {}

    def start(self, section: str) -> None:
        self._started[section] = _snapshot()

    def stop(self, section: str) -> None:
        a, b = self._started.pop(section), _snapshot()
        wall = b["t"] - a["t"]

        def cores(key: str) -> float:
            return (b[key] - a[key]) / _HZ / wall

        busy, ours, kernel = cores("busy"), cores("ours"), cores("irq") + cores("kthreads")
        self.sections[section] = {"wall_s": wall, "busy_cores": busy, "benchmark_cores": ours,
                                  "kernel_cores": kernel, "other_cores": max(busy - ours - kernel, 0.0)}

    def disturbed(self, section: str) -> bool:
        m = self.sections.get(section)
        return bool(m) and m["other_cores"] >= OTHER_LOAD_WARNING

    def line(self, section: str) -> str | None:
        m = self.sections.get(section)
        if not m:
            return None
        text = (f"CPU during this section (cores, average over {m['wall_s']:.0f} s): {m['busy_cores']:.2f} busy of "
                f"{os.cpu_count()}; the benchmark's processes {m['benchmark_cores']:.2f}, kernel (softirq, kernel "
                f"threads) {m['kernel_cores']:.2f}, other processes {m['other_cores']:.2f}")
        if self.disturbed(section):
            text += " -- WARNING: other processes competed for the CPU; these figures are disturbed"
        return text
