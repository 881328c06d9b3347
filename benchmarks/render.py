"""The text a benchmark run ends with: its tables, the targets, and what to be wary of."""

from __future__ import annotations

from loadgen import LoadResult
from report import EMULATOR, MAILMUX, PROXY, Figure, MemoryRun, Report


def render(report: Report) -> str:
    s = report.settings
    out = [
        "",
        f"mailmux benchmark ({s['mode']}): {s['placement']}",
        f"closed loop: {s['closed_loop']}; open loop: benchmarks/loadgen.py; "
        f"body {s['native_bytes']} B native / {s['sendgrid_bytes']} B SendGrid",
    ]
    out += _throughput(report)
    out += _latency(report)
    out += _memory(report)
    out += ["", "Targets"]
    out += _table(
        ["", "target", "limit", "measured"],
        [[f"[{v.status}]", v.name, v.limit, v.measured] for v in report.verdicts()],
        numeric=False,
    )
    out += [f"caution: {text}" for text in report.cautions()]
    out += [f"note: {text}" for text in report.notes]
    return "\n".join(out)


def _throughput(report: Report) -> list[str]:
    s = report.settings
    out = [
        "",
        f"Throughput: closed loop, {s['connections']} connections, {s['throughput_rounds']} "
        f"round(s) x {s['throughput_seconds']:g} s, alternating; medians",
    ]
    out += _table(
        [
            "",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-success",
            "server",
            "req/s per core",
            "emulator",
            "load core",
            "others",
        ],
        [
            [
                f.target + (" (reference)" if f.target == EMULATOR else ""),
                f"{f.rate:,.0f}",
                f"{f.p50_ms:.2f}",
                f"{f.p99_ms:.2f}",
                _bad(f),
                _share(f.server_cpu),
                "-" if f.per_core_rate is None else f"{f.per_core_rate:,.0f}",
                _share(f.emulator_cpu),
                _share(f.load_core_cpu),
                _cores(f.background_cpu),
            ]
            for f in report.figures(report.throughput).values()
        ],
    )
    ratio = report.throughput_ratio()
    if ratio is not None:
        rounds = ", ".join(f"{r:.1%}" for r in report.round_ratios())
        out.append(f"  mailmux / bare proxy: {ratio:.1%} (per round: {rounds})")
    per_core = report.per_core_ratio()
    if per_core is not None:
        out.append(f"  mailmux / bare proxy in requests per CPU-second: {per_core:.1%}")
    out.append(
        "  server, emulator: share of one core each used; req/s per core: req/s / server share;"
        " load core: how busy the core shared by emulator and load generator was; others:"
        " cores' worth of CPU used by processes outside the benchmark"
    )
    return out


def _latency(report: Report) -> list[str]:
    if report.half_rate is None:
        return []
    s = report.settings
    out = [
        "",
        f"Latency at half load: open loop at {report.half_rate:,.0f} req/s (half of mailmux's "
        f"median), {s['latency_rounds']} round(s) x {s['latency_seconds']:g} s per target; "
        "medians; timed from each request's due time",
    ]
    out += _table(
        ["", "p50 ms", "p99 ms", "non-success", "generator lag p99 ms", "others"],
        [
            [
                f.target,
                f"{f.p50_ms:.3f}",
                f"{f.p99_ms:.3f}",
                _bad(f),
                "-" if f.lag_p99_ms is None else f"{f.lag_p99_ms:.3f}",
                _cores(f.background_cpu),
            ]
            for f in report.figures(report.latency).values()
        ],
    )
    for over in (EMULATOR, PROXY):
        added = report.added_p50_ms(over)
        if added is not None:
            out.append(f"  added p50, {MAILMUX} - {over}: {added:+.3f} ms")
    return out


def _memory(report: Report) -> list[str]:
    if not report.memory:
        return []
    first = report.memory[0]
    out = [
        "",
        f"Memory: {first.connections} connections closed loop against an emulator answering "
        f"after {first.emulator_latency_ms:g} ms, {first.result.duration_s:.0f} s, fresh server",
    ]
    out += _table(
        ["", "peak MB", "VmHWM MiB", "req/s", "mean ms", "upstream conns", "non-success"],
        [_memory_row(run) for run in report.memory],
    )
    out.append(
        "  upstream conns: connections the server held to the emulator afterwards, pooled:"
        " the most requests it had waiting on the emulator at once"
    )
    return out


def _memory_row(run: MemoryRun) -> list[str]:
    r = run.result
    name = run.target + (" (reference)" if run.target == PROXY else "")
    return [
        name,
        f"{run.peak_mb:.1f}",
        f"{run.hwm_kib / 1024:.1f}",
        f"{r.rate:,.0f}",
        f"{r.mean_ms:,.0f}",
        f"{run.upstream_connections:,}",
        _bad_result(r),
    ]


def _table(header: list[str], rows: list[list[str]], numeric: bool = True) -> list[str]:
    """Columns padded to fit; all but the first right-aligned when they hold numbers."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [
            cell.rjust(width) if numeric and i > 0 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  " + "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _bad(figure: Figure) -> str:
    return "0" if figure.clean else f"{figure.unexpected} status, {figure.errors} errors"


def _bad_result(result: LoadResult) -> str:
    return "0" if result.clean else f"{result.unexpected} status, {result.errors} errors"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
