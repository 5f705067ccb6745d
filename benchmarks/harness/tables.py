"""The Markdown a benchmark prints: a table per section (median, min-max, same-run ratios) and the targets.

Every figure is shown with its min-max and every ratio with the min-max of its per-round ratios, so that
a reader sees at once how much a single run can be trusted on a shared machine.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .rounds import Rounds, values


@dataclass(frozen=True)
class Compare:
    """A ratio column: numerator / denominator, where None stands for the row's own system."""

    label: str
    numerator: str | None
    denominator: str | None
    skip_prefix: str = ""  # rows whose system starts with this get no value


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    metrics: tuple[str, ...]
    compares: tuple[Compare, ...] = ()


def fmt(v: float, metric: str) -> str:
    if metric == "records/s":
        return f"{v / 1e6:.3f} M"
    if metric == "GB/s":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}x ({r['paired_min']:.2f}-{r['paired_max']:.2f})"


def section_table(rounds: Rounds, sec: Section, ratios: list[dict], marks: dict[str, str] | None = None) -> list[str]:
    """One row per system: each metric's median and min - max, then the section's ratio columns (each
    ratio computed is appended to `ratios`). `marks` adds a footnote mark after a system's name."""
    marks = marks or {}
    head = ["system"]
    for m in sec.metrics:
        head += [f"{m} median", "min - max"]
    head += [c.label for c in sec.compares]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    systems = rounds.systems(sec.key)
    for system in systems:
        samples = rounds.samples(sec.key, system)
        name = system + (f" ({marks[system]})" if system in marks else "")
        row = [name + (" (capped)" if any(s.capped for s in samples) else "")]
        for m in sec.metrics:
            vals = values(samples, m)
            row += [fmt(statistics.median(vals), m), f"{fmt(min(vals), m)} - {fmt(max(vals), m)}"]
        for c in sec.compares:
            num, den = c.numerator or system, c.denominator or system
            if num == den or (c.skip_prefix and system.startswith(c.skip_prefix)) or not rounds.has(sec.key, num, den):
                row.append("")
                continue
            r = rounds.paired(sec.key, num, den, sec.metrics[0])
            ratios.append(r)
            row.append(fmt_ratio(r))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def sections_report(rounds: Rounds, secs: list[Section], notes: dict | None = None) -> tuple[list[str], dict]:
    """Every section that ran: its title, table, footnotes (`notes`: {(section, system): [texts]}, runs where
    something went wrong) and the CPU line; with the JSON of its figures and ratios."""
    out: list[str] = []
    results: dict = {"series": [], "ratios": []}
    notes = notes or {}
    for sec in secs:
        if sec.key not in rounds.sections():
            continue
        flagged = [(system, texts) for (key, system), texts in notes.items() if key == sec.key]
        marks = {system: "*" * (i + 1) for i, (system, _) in enumerate(flagged)}
        out += [f"## {sec.title}", ""] + section_table(rounds, sec, results["ratios"], marks)
        for system, texts in flagged:
            out += [
                "",
                f"({marks[system]}) {system}: in {len(texts)} of {rounds.warmup + rounds.runs} runs "
                "(warm-up included), " + "; ".join(texts),
            ]
        load = rounds.meter.line(sec.key)
        if load:
            out += ["", load]
        out.append("")
        results["series"] += rounds.summaries(sec.key, sec.metrics)
    return out, results


def targets_table(targets: list[tuple], ran: list[str]) -> tuple[list[str], list[dict]]:
    """Targets (section, name, measured, goal, unit): `measured` is a number, a ratio dict (`Rounds.paired`)
    or None (not measured). Shown for the sections that ran; met means measured >= goal, except for a time
    (unit "ms"), where the goal is a maximum: met means measured <= goal."""
    rows = [t for t in targets if t[2] is not None or t[0] in ran]
    if not rows:
        return [], []
    out = ["## Targets", "", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    results = []
    for _, name, value, goal, unit in rows:
        at_most = unit == "ms"
        if unit == "x":
            want = f"{goal:.2f}x"
        elif unit == "MB/s":
            want = f"{goal:,.0f} MB/s"
        elif at_most:
            want = f"{goal:.2f} ms"
        else:
            want = fmt(goal, unit)
        want = ("<= " if at_most else ">= ") + want
        if value is None:
            out.append(f"| {name} | not measured | {want} | - |")
            results.append({"target": name, "measured": None, "goal": goal, "unit": unit, "met": None})
            continue
        if isinstance(value, dict):
            shown, measured = fmt_ratio(value), value["ratio"]
        elif unit == "MB/s":
            shown, measured = f"{value:,.0f} MB/s", value
        elif at_most:
            shown, measured = f"{value:.2f} ms", value
        else:
            shown, measured = fmt(value, unit), value
        met = measured <= goal if at_most else measured >= goal
        out.append(f"| {name} | {shown} | {want} | {'yes' if met else 'NO'} |")
        results.append({"target": name, "measured": measured, "goal": goal, "unit": unit, "met": met})
    return out, results
