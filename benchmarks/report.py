"""The suite's report: benchmarks/results/<date>[-full].json, .md and .png from the suite's result dict.

The result dict (suite.run) holds:
- "figures": throughput figures, each {scenario, system, metric, median, min, max, runs, tidelog, settings};
- "latency": fixed-rate e2e latency figures, each {scenario, system, rate, tidelog, settings, runs,
  p50/p90/p99/p99.9/max: {median, min, max}} in ms;
- "targets", "skipped" {system: reason}, "versions", "notes", "machine", "mode", "date", "elapsed_s";
- "cpu" {section: CPU split} and "machine_load" (what other processes took meanwhile, said in the header).

Per scenario the reference is the first tidelog system (`primary`); every other row gets
`ratio` = tidelog / that system for throughput and that system / tidelog for latency, so a ratio above 1
always means tidelog did better.
"""

from __future__ import annotations

import json
import os

LAT_PCTS = ("p50", "p99", "p99.9")


def primary(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r.get("tidelog")), None)


def scenarios(items: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in items:
        out.setdefault(f["scenario"], []).append(f)
    return out


def comparisons(result: dict) -> list[dict]:
    """Every (scenario, tidelog reference, other system) with both medians and the ratio."""
    out = []
    for scenario, rows in scenarios(result.get("figures", [])).items():
        ref = primary(rows)
        if ref is None:
            continue
        for r in rows:
            if r is ref:
                continue
            out.append(
                {
                    "scenario": scenario,
                    "metric": r["metric"],
                    "tidelog_system": ref["system"],
                    "tidelog": ref["median"],
                    "system": r["system"],
                    "value": r["median"],
                    "ratio": ref["median"] / r["median"] if r["median"] else None,
                    "peer": not r.get("tidelog"),
                    "settings": r.get("settings", ""),
                }
            )
    for scenario, rows in scenarios(result.get("latency", [])).items():
        ref = primary(rows)
        if ref is None:
            continue
        for r in rows:
            if r is ref:
                continue
            for p in LAT_PCTS:
                if ref.get(p) and r.get(p):
                    t, v = ref[p]["median"], r[p]["median"]
                    out.append(
                        {
                            "scenario": scenario,
                            "metric": f"{p} ms",
                            "tidelog_system": ref["system"],
                            "tidelog": t,
                            "system": r["system"],
                            "value": v,
                            "ratio": v / t if t else None,
                            "peer": True,
                            "settings": r.get("settings", ""),
                        }
                    )
    return out


def latency_targets(result: dict) -> list[dict]:
    """Target: e2e at a fixed 1k msgs/s, p50 <= 1 ms and p99 <= 5 ms."""
    out = []
    for e in result.get("latency", []):
        if e.get("tidelog") and e.get("rate") == 1000 and e.get("p50"):
            for p, goal in (("p50", 1.0), ("p99", 5.0)):
                v = e[p]["median"]
                out.append(
                    {
                        "target": f"e2e latency at 1k msgs/s: {p}",
                        "measured": v,
                        "goal": goal,
                        "unit": "ms (at most)",
                        "met": v <= goal,
                        "source": "suite",
                    }
                )
    return out


def durable_targets(result: dict) -> list[dict]:
    """Target: durable produce (fsync before ack, group commit) >= 50% of the no-fsync throughput."""
    rows = {f["system"]: f for f in result.get("figures", []) if f["scenario"] == "durable produce 1 KiB"}
    a = rows.get("tidelog Producer, serve --fsync always")
    n = rows.get("tidelog Producer, serve --fsync never")
    if not a or not n or not n["median"]:
        return []
    v = a["median"] / n["median"]
    return [
        {
            "target": "gRPC durable produce: fsync always / never (Producer)",
            "measured": v,
            "goal": 0.5,
            "unit": "x",
            "met": v >= 0.5,
            "source": "suite",
        }
    ]


def _num(v: float | None, metric: str = "records/s") -> str:
    if v is None:
        return "-"
    if metric.endswith("ms"):
        return f"{v:.3f}"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def _spread(f: dict, metric: str) -> str:
    if len(f.get("runs", [])) > 1:
        return f"{_num(f['median'], metric)} ({_num(f['min'], metric)}–{_num(f['max'], metric)})"
    return _num(f["median"], metric)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: dict) -> str:
    m = result.get("machine", {})
    out = [
        f"# tidelog peer benchmark suite ({result.get('mode', '?')}, {result.get('date', '?')})",
        "",
        f"- machine: nproc={m.get('nproc')}, {m.get('cpu_model')}, {m.get('memory_gib')} GiB, Linux "
        f"{m.get('kernel')}, Python {m.get('python')}; clients and servers share the cores",
        "- figures: median of the runs (min–max when more than one run); records/s of record payloads "
        "(MB/s = records/s × record size)",
        "- ratio: tidelog (the first tidelog row of the scenario, **bold**) / that system for throughput, "
        "that system / tidelog for latency: above 1 means tidelog did better",
        f"- total time: {result.get('elapsed_s', 0):.0f} s",
    ]
    if result.get("machine_load"):
        out.append(f"- **{result['machine_load']}**")
    out.append("")
    for name, v in sorted(result.get("versions", {}).items()):
        out.append(f"- {name}: {v}")
    out.append("")
    for scenario, rows in scenarios(result.get("figures", [])).items():
        ref = primary(rows)
        out += [f"## {scenario} (records/s)", "", "| system | records/s | ratio | settings |", "|---|---:|---:|---|"]
        for r in rows:
            ratio = "" if ref is None or r is ref or not r["median"] else f"{ref['median'] / r['median']:.2f}x"
            name = f"**{r['system']}**" if r is ref else r["system"]
            capped = " (capped)" if r.get("capped_runs") else ""
            out.append(
                f"| {_cell(name)} | {_spread(r, r['metric'])}{capped} | {ratio} | {_cell(r.get('settings', ''))} |"
            )
        out.append("")
    for scenario, rows in scenarios(result.get("latency", [])).items():
        ref = primary(rows)
        out += [
            f"## {scenario} (ms, from the scheduled send time)",
            "",
            "| system | p50 | p99 | p99.9 | max | received/sent | ratio p50 / p99 | settings |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            cells = []
            for p in ("p50", "p99", "p99.9", "max"):
                v = r.get(p)
                cells.append(
                    "-"
                    if not v
                    else (
                        f"{v['median']:.3f}"
                        if v["min"] == v["max"]
                        else f"{v['median']:.3f} ({v['min']:.3f}–{v['max']:.3f})"
                    )
                )
            ratio = ""
            if ref is not None and r is not ref and ref.get("p50") and r.get("p50"):
                ratio = f"{r['p50']['median'] / ref['p50']['median']:.2f}x / {r['p99']['median'] / ref['p99']['median']:.2f}x"
            name = f"**{r['system']}**" if r is ref else r["system"]
            recv = f"{sum(r.get('received', [])):,}/{sum(r.get('sent', [])):,}"
            out.append(f"| {_cell(name)} | {' | '.join(cells)} | {recv} | {ratio} | {_cell(r.get('settings', ''))} |")
        out.append("")
    targets = result.get("targets", [])
    if targets:
        out += [
            "## Targets (this run's medians)",
            "",
            "| target | measured | goal | met | from |",
            "|---|---:|---:|---|---|",
        ]
        for t in targets:
            meas = t.get("measured")
            unit = t.get("unit", "")
            shown = "-" if meas is None else (f"{meas:.2f}x" if unit == "x" else f"{meas:,.3g} {unit}")
            met = {True: "yes", False: "NO", None: "-"}[t.get("met")]
            out.append(f"| {_cell(t['target'])} | {shown} | {t['goal']:,.3g} | {met} | {t.get('source', '')} |")
        out.append("")
    if result.get("skipped"):
        out += ["## Skipped", ""] + [f"- {k}: {_cell(v)}" for k, v in result["skipped"].items()] + [""]
    if result.get("notes"):
        out += ["## Notes", ""] + [f"- {_cell(n)}" for n in result["notes"]] + [""]
    out += ["## Settings", ""] + [f"- **{k}**: {v}" for k, v in result.get("settings", {}).items()] + [""]
    return "\n".join(out)


def chart(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = scenarios(result.get("figures", []))
    lats = scenarios(result.get("latency", []))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(14, 11))
    # throughput: one group of bars per scenario, tidelog's in blue shades, peers in grey/orange
    x = 0.0
    ticks, labels = [], []
    for scenario, rows in figs.items():
        width = 0.8 / max(len(rows), 1)
        for i, r in enumerate(rows):
            color = "tab:blue" if r.get("tidelog") else f"C{1 + (hash(r['system']) % 8)}"
            err = [[max(r["median"] - r["min"], 0)], [max(r["max"] - r["median"], 0)]]
            ax1.bar(
                x + i * width,
                r["median"],
                width,
                color=color,
                yerr=err,
                capsize=2,
                edgecolor="black" if r.get("tidelog") else None,
                linewidth=0.5,
            )
            ax1.text(x + i * width, r["median"], r["system"][:28], rotation=90, fontsize=5, ha="center", va="bottom")
        ticks.append(x + 0.4 - width / 2)
        labels.append(scenario)
        x += 1.0
    ax1.set_yscale("log")
    ax1.set_xticks(ticks)
    ax1.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax1.set_ylabel("records/s (log)")
    ax1.set_title("Throughput by scenario: tidelog (blue) vs peers (median, min–max bars)")
    # latency percentiles: per scenario and system, p50 / p99 / p99.9
    x = 0.0
    ticks, labels = [], []
    pcolors = {"p50": "tab:green", "p99": "tab:orange", "p99.9": "tab:red"}
    for scenario, rows in lats.items():
        for r in rows:
            for j, p in enumerate(LAT_PCTS):
                v = r.get(p)
                if v:
                    ax2.bar(
                        x + j * 0.25,
                        v["median"],
                        0.25,
                        color=pcolors[p],
                        label=p if not ticks else None,
                        edgecolor="black" if r.get("tidelog") else None,
                        linewidth=0.8,
                    )
            ticks.append(x + 0.25)
            labels.append(f"{r['system']}\n{scenario.replace('e2e latency 1 KiB at ', '@')}")
            x += 1.0
        x += 0.5
    ax2.set_yscale("log")
    ax2.set_xticks(ticks)
    ax2.set_xticklabels(labels, fontsize=7)
    ax2.set_ylabel("ms from the scheduled send (log)")
    ax2.set_title("End-to-end latency percentiles at fixed rates (lower is better)")
    if lats:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rate_chart(result: dict, path: str) -> bool:
    """Latency against rate, one line per system and percentile (p50 solid, p99 dashed; median of the
    runs), log-log; a point where fewer messages arrived than were sent is marked with an x. False
    (nothing written) when fewer than two rates were measured."""
    by_system: dict[str, list[dict]] = {}
    for e in result.get("latency", []):
        by_system.setdefault(e["system"], []).append(e)
    if len({e["rate"] for e in result.get("latency", [])}) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for i, (system, entries) in enumerate(sorted(by_system.items())):
        entries = sorted(entries, key=lambda e: e["rate"])
        color = "tab:blue" if entries[0].get("tidelog") else f"C{1 + i % 8}"
        for pct, style in (("p50", "-"), ("p99", "--")):
            points = [(e["rate"], e[pct]["median"], e) for e in entries if e.get(pct)]
            if not points:
                continue
            ax.plot([r for r, _, _ in points], [v for _, v, _ in points], style, color=color, marker="o",
                    label=f"{system} {pct}", linewidth=2 if entries[0].get("tidelog") else 1)  # fmt: skip
            for r, v, e in points:
                if sum(e.get("received", [])) < sum(e.get("sent", [])):
                    ax.plot([r], [v], "x", color="black", markersize=10)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages/s (1 KiB, one per send)")
    ax.set_ylabel("ms from the scheduled send (log)")
    ax.set_title("End-to-end latency against rate (x: fewer received than sent)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict, out_dir: str, stem: str | None = None) -> list[str]:
    """Add comparisons and the suite's targets, then write <stem>.json, .md and .png; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    result = dict(result)
    result["targets"] = list(result.get("targets", [])) + latency_targets(result) + durable_targets(result)
    result["comparisons"] = comparisons(result)
    if stem is None:
        stem = result.get("date", "results") + ("" if result.get("mode") == "quick" else f"-{result.get('mode')}")
    base = os.path.join(out_dir, stem)
    logs = result.pop("logs", None)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(base + ".md", "w") as f:
        f.write(markdown(result))
    chart(result, base + ".png")
    paths = [base + ".json", base + ".md", base + ".png"]
    if rate_chart(result, base + "-latency.png"):
        paths.append(base + "-latency.png")
    if logs:
        with open(base + ".log", "w") as f:
            for name, text in logs.items():
                f.write(f"==== {name} ====\n{text}\n")
        paths.append(base + ".log")
    return paths
