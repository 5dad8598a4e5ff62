"""Turns load-tests/results/raw/*.json into results/latest.md and results/chart.svg."""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess

ORDER = ["direct", "switchyard", "litellm", "portkey"]
NAMES = {"direct": "mock directly (limit)", "switchyard": "switchyard", "litellm": "LiteLLM 1.106.2 (2 workers)", "portkey": "Portkey 1.15.2"}


def load(raw, name):
    path = raw / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def audit_cost_lines(raw):
    """The audit log's cost from the interleaved off/on slices of scenario 2."""
    pairs = []
    for number in range(1, 1000):
        on, off = load(raw, f"audit-on-throughput-{number}"), load(raw, f"audit-off-throughput-{number}")
        if not on or not off:
            break
        pairs.append({
            "on": on, "off": off,
            "cpu_on": load(raw, f"audit-on-cpu-{number}") or {}, "cpu_off": load(raw, f"audit-off-cpu-{number}") or {},
        })
    if not pairs or not all(p["off"]["rps"] for p in pairs):
        return []
    costs = sorted((1 - p["on"]["rps"] / p["off"]["rps"]) * 100 for p in pairs)
    quartile = len(costs) // 4
    pooled = (1 - sum(p["on"]["rps"] for p in pairs) / sum(p["off"]["rps"] for p in pairs)) * 100
    seconds = pairs[0]["on"].get("seconds")
    slices = f"{len(pairs)} pair{'s' if len(pairs) > 1 else ''} of {fmt(seconds, 0) + ' s ' if seconds else ''}slices"
    lines = [
        f"Audit log cost (scenario 2 against two gateways side by side, audit off and on, {slices} alternating "
        f"which goes first; the audit writer catches up after each audit-on slice): the median pair costs "
        f"**{fmt(median(costs), 1)} %** of throughput (middle half of pairs: {fmt(costs[quartile], 1)} to "
        f"{fmt(costs[-1 - quartile], 1)} %; all slices pooled: {fmt(pooled, 1)} %; median "
        f"{fmt(median([p['on']['rps'] for p in pairs]), 0)} req/s on, {fmt(median([p['off']['rps'] for p in pairs]), 0)} req/s off)."
    ]

    def cpu_us(side, key):
        """Gateway CPU per request over every slice of one side."""
        ticks = sum(p[f"cpu_{side}"].get(key, 0) for p in pairs)
        hz = pairs[0][f"cpu_{side}"].get("ticks_per_second")
        requests = sum(p[side]["ok"] for p in pairs)
        return ticks / hz * 1e6 / requests if ticks and hz and requests else None

    on, off, written = cpu_us("on", "cpu_ticks_loaded"), cpu_us("off", "cpu_ticks_loaded"), cpu_us("on", "cpu_ticks_written")
    if on and off and written:
        lines.append(
            f"Gateway CPU per request: {fmt(off, 1)} µs with the audit log off, {fmt(on, 1)} µs with it on "
            f"(+{fmt((on / off - 1) * 100, 1)} %), and {fmt(written, 1)} µs (+{fmt((written / off - 1) * 100, 1)} %) once the "
            "audit writer, which runs in the idle scheduling class and so defers its work under full load, has also written "
            "every record to the database.")
    lines.append("")
    return lines


def callgrind_counts(raw, variant):
    """Counts per request of the busiest thread (the request thread) in a callgrind dump."""
    best = None
    for path in raw.glob(f"callgrind-{variant}.*.1-*"):
        events = totals = None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:"):
                totals = [int(value) for value in line.split()[1:]]
        if events and totals:
            counts = dict(zip(events, totals + [0] * (len(events) - len(totals))))
            if best is None or counts["Ir"] > best["Ir"]:
                best = counts
    requests = (load(raw, f"{variant}-counted") or {}).get("ok")
    if not best or not requests:
        return None
    return {event: value / requests for event, value in best.items()} | {"requests": requests}


def audit_count_lines(raw):
    """The audit log's cost on the request thread, counted by callgrind."""
    off, on = callgrind_counts(raw, "audit-off"), callgrind_counts(raw, "audit-on")
    if not off or not on:
        return []
    def extra(event):
        return on.get(event, 0) - off.get(event, 0)
    return [
        f"Counted by callgrind (each gateway under valgrind, {fmt(on['requests'], 0)} requests after a warm-up, the request "
        f"thread only; deterministic, so it shows what the timed slices cannot resolve): the audit log adds "
        f"**{fmt(extra('Ir'), 0)} instructions per request** ({fmt(extra('Ir') / off['Ir'] * 100, 1)} % of "
        f"{fmt(off['Ir'], 0)}), {fmt(extra('D1mr') + extra('D1mw'), 1)} simulated L1 data misses "
        f"({fmt(off['D1mr'] + off['D1mw'], 0)} with it off), {fmt(extra('I1mr'), 1)} L1 instruction misses "
        f"({fmt(off['I1mr'], 0)}) and {fmt(extra('DLmr') + extra('DLmw'), 2)} last-level misses "
        f"({fmt(off['DLmr'] + off['DLmw'], 2)}: mostly the journal's fresh lines). It does not see the kernel, the "
        "writer or real memory latency; the timed slices above do.",
        "",
    ]


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fmt(value, digits=2):
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return None if not a or not b else a / b


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--audit-only", action="store_true", help="print the audit log's cost, write nothing")
    parser.add_argument("--quick", default="0")
    parser.add_argument("--placement", default="")
    parser.add_argument("--open-streams", default="")
    parser.add_argument("--command", default="load-tests/run.sh")
    parser.add_argument("--hard-limit", default=str(__import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]))
    args = parser.parse_args()
    if args.audit_only:
        print("\n".join(audit_cost_lines(args.raw) + audit_count_lines(args.raw)))
        return

    rows = {}
    for target in ORDER:
        latency = load(args.raw, f"{target}-latency")
        if latency is None:
            continue
        rows[target] = {
            "latency": latency,
            "throughput": load(args.raw, f"{target}-throughput"),
            "streaming": load(args.raw, f"{target}-streaming"),
            "open": load(args.raw, f"{target}-open-streams"),
            "open_rss": load(args.raw, f"{target}-open-streams-rss"),
            "memory": load(args.raw, f"{target}-memory"),
            "oha": load(args.raw, f"{target}-throughput-oha"),
        }
    direct = rows.get("direct")
    sy = rows.get("switchyard")

    def get(row, scenario, *keys):
        value = row and row.get(scenario)
        for key in keys:
            value = value and value.get(key)
        return value

    lines = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    quick = args.quick == "1"
    lines.append("# switchyard benchmark" + (" (quick run: seconds per scenario, not comparable)" if quick else ""))
    lines.append("")
    lines.append(f"- Date: {now}")
    lines.append(f"- Machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}")
    lines.append(f"- Placement: {args.placement}")
    lines.append(f"- switchyard: {'debug' if quick else 'release'} build, `load-tests/switchyard/config.toml`: master key auth on, JSON logs at warn, "
                 "the OpenAI-format adapter to the mock. Policy routing on (`load-tests/switchyard/policies/bench.toml`: an alias, a rule that scans every prompt for secrets, one retry per target). Requests use a virtual key with request and token rate limits and a USD budget (in-process counters, usage sums to SQLite); the audit log is on (journal, hash-chained records in SQLite).")
    lines.append("- Load generator: `load-tests` `loadgen` (HTTP/1.1 keep-alive, one request at a time per connection; "
                 "records latency and time to the first chunk carrying content, not the role-only opening chunk; counts every non-2xx).")
    lines.append("- Mock upstream: `load-tests` `mock-upstream`, zero delay, prebuilt bodies; 20 content chunks per stream.")
    lines.append("")
    lines.append("## Results")
    lines.append("")
    lines.append("| target | 1: p50 ms | 1: p99 ms | 1: added p50 / p99 ms | 2: req/s | 2: p50 / p99 ms | 2: vs direct | 2: switchyard ÷ target "
                 "| 2: req/s by oha | 3: streams/s | 3: first content p50 / p99 ms | 3: added first content p99 ms | 4: streams ok / failed | 4: peak RSS MB | 5: idle RSS MB | 5: RSS after 2 MB |")
    lines.append("|" + "---|" * 16)
    for target, row in rows.items():
        rps = get(row, "throughput", "rps")
        added = lambda key: None if not direct else (get(row, "latency", "latency_ms", key) or 0) - (get(direct, "latency", "latency_ms", key) or 0)
        streamed = get(row, "streaming", "ok")
        added_ttfc = None if not direct or not streamed else get(row, "streaming", "first_chunk_ms", "p99") - get(direct, "streaming", "first_chunk_ms", "p99")
        open_ok = get(row, "open", "ok")
        open_failed = (get(row, "open", "non_2xx") or 0) + (get(row, "open", "errors") or 0)
        cells = [
            NAMES[target],
            fmt(get(row, "latency", "latency_ms", "p50"), 3),
            fmt(get(row, "latency", "latency_ms", "p99"), 3),
            "—" if target == "direct" else f"{fmt(added('p50'), 3)} / {fmt(added('p99'), 3)}",
            fmt(rps, 0),
            f"{fmt(get(row, 'throughput', 'latency_ms', 'p50'))} / {fmt(get(row, 'throughput', 'latency_ms', 'p99'))}",
            f"{fmt(ratio(rps, get(direct, 'throughput', 'rps')) * 100 if direct and rps else None, 1)} %",
            "—" if target == "switchyard" else f"{fmt(ratio(get(sy, 'throughput', 'rps'), rps), 1)}×",
            fmt(get(row, "oha", "summary", "requestsPerSec"), 0),
            fmt(get(row, "streaming", "rps"), 0),
            "no stream succeeded" if not streamed else f"{fmt(get(row, 'streaming', 'first_chunk_ms', 'p50'))} / {fmt(get(row, 'streaming', 'first_chunk_ms', 'p99'))}",
            "—" if target == "direct" else fmt(added_ttfc, 3),
            f"{open_ok if open_ok is not None else '—'} / {open_failed}",
            fmt((get(row, "open_rss", "peak_rss_kb") or 0) / 1024, 1),
            fmt((get(row, "memory", "idle_rss_kb") or 0) / 1024, 1),
            fmt((get(row, "memory", "rss_after_throughput_kb") or 0) / 1024, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += audit_cost_lines(args.raw)
    lines += audit_count_lines(args.raw)
    lines.append("Scenarios: 1 added latency, concurrency 1, non-streaming; 2 throughput, 50 connections, non-streaming; "
                 "3 streaming, 50 connections, 20 chunks per response; "
                 f"4 {args.open_streams} concurrent streams held open by a mock sending 1 chunk a second"
                 + (" (fewer than 10,000: this machine's open-file hard limit, `ulimit -Hn` = "
                    f"{args.hard_limit}, cannot be raised without CAP_SYS_RESOURCE, and each proxied stream holds two sockets); "
                    if args.open_streams and int(args.open_streams) < 10000 else "; ")
                 + "5 memory (RSS of every process of the target, LiteLLM's workers included). "
                 "Ratios are within this one run, so they hold on a noisy machine better than the absolute numbers.")
    failures = [f"{t}/{s}: {get(r, s, 'first_failure')}" for t, r in rows.items() for s in ("latency", "throughput", "streaming", "open") if get(r, s, "first_failure")]
    if failures:
        lines.append("")
        lines.append("First failure seen per run (non-2xx or transport error):")
        lines.extend(f"- {f}" for f in failures)
        for target in sorted({f.split("/")[0] for f in failures}):
            log = args.raw / f"{target}.log"
            errors = [l.strip() for l in log.read_text(errors="replace").splitlines() if "Error" in l] if log.exists() else []
            if errors:
                common = max(set(errors), key=errors.count)
                lines.append(f"- {target}'s own log, most frequent error ({errors.count(common)}×): `{common[:200]}`")
    lines.append("")
    lines.append("## Commands")
    lines.append("")
    lines.append(f"`{args.command}` runs everything below; per target (URL, model and auth differ):")
    lines.append("")
    lines.append("```")
    lines.append("loadgen --url $TARGET/v1/chat/completions --body '{\"model\":…,\"messages\":[…],\"max_tokens\":64,\"stream\":false}' --connections 1 --requests 2000      # 1")
    lines.append("loadgen … --connections 50 --duration 20                          # 2")
    lines.append("loadgen … (\"stream\":true) --connections 50 --duration 20        # 3")
    lines.append(f"loadgen … (\"stream\":true, slow mock) --connections {args.open_streams} --requests {args.open_streams} --ramp-ms 3000   # 4")
    lines.append("```")
    if not quick:
        lines.append("")
        lines.append("![throughput and p99 per target](chart.svg)")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quick.md" if quick else "latest.md"
    (args.out / name).write_text("\n".join(lines) + "\n")
    if not quick:
        (args.out / "chart.svg").write_text(chart(rows))
    print(f"wrote {args.out / name}")


def chart(rows):
    """Two bar charts side by side: scenario 2 requests/s and p99 latency per target."""
    targets = list(rows)
    width, height, pad = 820, 360, 60
    panel = (width - 3 * pad) / 2
    colors = {"direct": "#9aa5b1", "switchyard": "#2f7d32", "litellm": "#c0392b", "portkey": "#2c5aa0"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>']
    for p, (title, key, unit) in enumerate([("Throughput, 50 connections (req/s)", ("throughput", "rps"), "req/s"),
                                            ("p99 latency, 50 connections (ms)", ("throughput", "latency_ms", "p99"), "ms")]):
        x0 = pad + p * (panel + pad)
        values = []
        for t in targets:
            v = rows[t]
            for k in key:
                v = v and v.get(k)
            values.append(v or 0)
        top = max(values) or 1
        out.append(f'<text x="{x0}" y="24" font-size="14" font-weight="bold">{title}</text>')
        bar = panel / max(len(targets), 1)
        for i, (t, v) in enumerate(zip(targets, values)):
            h = (height - 110) * v / top
            x = x0 + i * bar + 8
            y = height - 60 - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 16:.1f}" height="{h:.1f}" fill="{colors.get(t, "#777")}"/>')
            out.append(f'<text x="{x + (bar - 16) / 2:.1f}" y="{y - 6:.1f}" text-anchor="middle">{v:,.0f}</text>' if unit == "req/s"
                       else f'<text x="{x + (bar - 16) / 2:.1f}" y="{y - 6:.1f}" text-anchor="middle">{v:.2f}</text>')
            out.append(f'<text x="{x + (bar - 16) / 2:.1f}" y="{height - 40}" text-anchor="middle">{t}</text>')
        out.append(f'<line x1="{x0}" y1="{height - 60}" x2="{x0 + panel}" y2="{height - 60}" stroke="#333"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
