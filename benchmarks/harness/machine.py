"""The machine a benchmark ran on, and the CPU it spent while a section ran: ours, the kernel's, others'.

These VMs are shared: another job's CPU use changes the figures. Each section's split (the benchmark's own
process tree, kernel work, every other process) is measured from /proc so that a disturbed run says so.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from .processes import proc_table, process_tree

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
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "tidelog": tidelog.__version__,
        **versions,
        "tmp_dir": tmp,
        "malloc": ("glibc mallopt M_MMAP_THRESHOLD=16 MiB, M_TRIM_THRESHOLD=256 MiB" if malloc_tuned else "default"),
    }


def announce(info: dict) -> None:
    print(
        f"# machine: nproc={info['nproc']}, CPU: {info['cpu_model']}, Python {info['python']}, "
        f"malloc: {info['malloc']}",
        flush=True,
    )


def machine_line(info: dict, *extra: str) -> str:
    """The report's machine line: cores, CPU, memory, kernel and the versions that matter."""
    return (
        f"machine: nproc={info['nproc']}, {info['cpu_model']}, {info['memory_gib']} GiB RAM, Linux "
        f"{info['kernel']}; Python {info['python']}, " + ", ".join(extra + (f"tidelog {info['tidelog']}",))
    )


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all CPUs, idle and iowait excluded), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _HZ


def _snapshot() -> dict:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    table = proc_table()
    ours = process_tree(os.getpid(), table)  # this process and everything it started (servers, members)
    kernel = sum(
        t
        for pid, (t, ppid, flags) in table.items()
        if pid not in ours and (flags & _PF_KTHREAD or ppid == 2 or pid == 2)
    )
    # /proc/stat: user nice system idle iowait irq softirq steal
    return {
        "t": time.perf_counter(),
        "busy": sum(v[:8]) - v[3] - v[4],
        "irq": v[5] + v[6],
        "ours": sum(table[pid][0] for pid in ours if pid in table),
        "kthreads": kernel,
    }


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
        self.sections[section] = {
            "wall_s": wall,
            "busy_cores": busy,
            "benchmark_cores": ours,
            "kernel_cores": kernel,
            "other_cores": max(busy - ours - kernel, 0.0),
        }

    def disturbed(self, section: str) -> bool:
        m = self.sections.get(section)
        return bool(m) and m["other_cores"] >= OTHER_LOAD_WARNING

    def line(self, section: str) -> str | None:
        m = self.sections.get(section)
        if not m:
            return None
        text = (
            f"CPU during this section (cores, average over {m['wall_s']:.0f} s): {m['busy_cores']:.2f} busy of "
            f"{os.cpu_count()}; the benchmark's processes {m['benchmark_cores']:.2f}, kernel (softirq, kernel "
            f"threads) {m['kernel_cores']:.2f}, other processes {m['other_cores']:.2f}"
        )
        if self.disturbed(section):
            text += " -- WARNING: other processes competed for the CPU; these figures are disturbed"
        return text


def shared_machine_note(cpu: dict[str, dict]) -> str | None:
    """What other processes took while the sections ran (`LoadMeter.sections`), said once for a report."""
    others = sorted(m["other_cores"] for m in cpu.values() if "other_cores" in m)
    if not others:
        return None
    disturbed = sum(o >= OTHER_LOAD_WARNING for o in others)
    text = (
        f"other processes used {others[0]:.2f}-{others[-1]:.2f} cores (median {others[len(others) // 2]:.2f}) "
        f"of {os.cpu_count()} during the {len(others)} measured sections"
    )
    if not disturbed:
        return f"Machine: {text}; no section was disturbed."
    return (
        f"Shared machine: {text}; {disturbed} of them at {OTHER_LOAD_WARNING} core or more. Other jobs ran on "
        "this machine during the run, so these figures are noisy (single runs especially): trust the same-run "
        "ratios more than the absolute rates, and look at each section's CPU split in the JSON's \"cpu\"."
    )
