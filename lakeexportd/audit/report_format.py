"""Renderers of the metadata report: terminal table, Markdown, and one self-contained HTML page.

The HTML page has inline CSS and an inline SVG line chart of rows per day per stream: no
JavaScript, no fonts or images from the network, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import datetime as dt
import html as html_lib
from collections.abc import Mapping, Sequence

from lakeexportd.audit.summaries import FeedAbout, FeedSummary, LakeStatistics
from lakeexportd.audit.text_table import human_age, human_bytes, render

HEADERS = ("FEED", "KIND", "FORMAT", "STATE", "SOURCE", "RECORDS", "SIZE", "FILES", "PARTS/VERS",
           "LAST EXPORT", "STATUS", "FRESHNESS", "LAG")
NUMERIC = ("RECORDS", "SIZE", "FILES", "PARTS/VERS", "FRESHNESS", "LAG")
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def summary_row(s: FeedSummary) -> tuple[object, ...]:
    layers = s.partitions if s.kind == "stream" else s.versions
    status = "ERROR" if s.error else s.last_status
    return (s.feed, s.kind, shown_format(s), s.state, s.source, f"{s.records:,}",
            human_bytes(s.size_bytes), s.files, layers, s.last_export, status,
            human_age(s.freshness_s), human_age(s.lag_s))


def shown_format(s: FeedSummary) -> str:
    """``parquet``, or ``delta v12`` (the Delta version ``_metadata.json`` summarises)."""
    if s.format == "delta" and s.delta_version is not None:
        return f"delta v{s.delta_version}"
    return s.format


def stats_lines(stats: LakeStatistics) -> list[str]:
    lines = [
        f"{stats.feeds} feeds ({stats.streams} streams, {stats.tables} tables): "
        f"{stats.records:,} records, {human_bytes(stats.size_bytes)} in {stats.files} files, "
        f"{stats.partitions} day partitions, {stats.versions} table versions",
    ]
    if stats.stalest_feed:
        lines.append(f"stalest active feed: {stats.stalest_feed} "
                     f"(newest data {human_age(stats.stalest_freshness_s)} old)")
    if stats.failed_last_run:
        lines.append(f"last run failed: {', '.join(stats.failed_last_run)}")
    if stats.unreadable:
        lines.append(f"unreadable metadata: {', '.join(stats.unreadable)}")
    return lines


def _errors(summaries: Sequence[FeedSummary]) -> list[str]:
    return [f"{s.feed}: {s.error}" for s in summaries if s.error]


def text(summaries: Sequence[FeedSummary], stats: LakeStatistics) -> str:
    table = render(HEADERS, [summary_row(s) for s in summaries], right=NUMERIC)
    return "\n".join([table, "", *stats_lines(stats), *_errors(summaries)])


def markdown(summaries: Sequence[FeedSummary], stats: LakeStatistics, now: dt.datetime) -> str:
    def cells(values: Sequence[object]) -> str:
        return "| " + " | ".join("-" if v is None else str(v).replace("|", "\\|")
                                 for v in values) + " |"

    align = ["---:" if h in NUMERIC else "---" for h in HEADERS]
    lines = [f"# Lake report ({now:%Y-%m-%d %H:%M:%S} UTC)", "",
             *(f"- {line}" for line in stats_lines(stats)), "", cells(HEADERS), cells(align),
             *(cells(summary_row(s)) for s in summaries)]
    errors = _errors(summaries)
    if errors:
        lines += ["", "## Errors", "", *(f"- {e}" for e in errors)]
    return "\n".join(lines) + "\n"


def chart(daily: dict[str, dict[str, int]], *, width: int = 900, height: int = 320) -> str:
    """An SVG line chart: one polyline per stream (or per set of streams with equal counts)
    over the union of their days."""
    days = sorted({day for per_day in daily.values() for day in per_day})
    if not days:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40">' \
               '<text x="10" y="25">no stream data yet</text></svg>'
    left, right, top, bottom = 70, 170, 20, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(max(per_day.values(), default=0) for per_day in daily.values()) or 1
    step = plot_w / max(len(days) - 1, 1)

    def x(i: int) -> float:
        return left + i * step if len(days) > 1 else left + plot_w / 2

    def y(v: int) -> float:
        return top + plot_h - v / peak * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="rows per day per stream">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
             'class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>']
    for frac in (0, 0.5, 1):
        value = round(peak * frac)
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f'{value:,}</text>')
    every = max(1, len(days) // 8)  # at most ~8 date labels
    for i, day in enumerate(days):
        if i % every == 0 or i == len(days) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" '
                         f'text-anchor="middle">{day}</text>')
    # Streams with the same counts every day (feeds of one source) would hide each other:
    # they share one line, named for all of them.
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, per_day in sorted(daily.items()):
        groups.setdefault(tuple(per_day.get(d, 0) for d in days), []).append(name)
    for n, (counts, names) in enumerate(groups.items()):
        name = ", ".join(names) + (" (same counts)" if len(names) > 1 else "")
        color = _COLORS[n % len(_COLORS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(counts))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{points}"><title>{html_lib.escape(name)}</title></polyline>')
        ly = top + 14 + n * 18
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" '
                     f'fill="{color}"/><text x="{left + plot_w + 28}" y="{ly}">'
                     f'{html_lib.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:14px}
th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fde2e2}
svg text{font-size:11px;fill:#333} svg .axis{stroke:#888}
"""


def about_table(summaries: Sequence[FeedSummary], about: Mapping[str, FeedAbout]) -> str:
    """The "About the feeds" table: who to ask about each feed and what it holds (the
    configuration's description, owner and tags; ``-`` where it says nothing)."""
    esc = html_lib.escape
    rows = []
    for s in summaries:
        info = about.get(s.feed, FeedAbout())
        cells = [s.feed, info.description or "-", info.owner or "-", ", ".join(info.tags) or "-"]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("FEED", "DESCRIPTION", "OWNER", "TAGS"))
    return (f'<table class="about"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(rows) + "\n</tbody></table>")


def html(summaries: Sequence[FeedSummary], stats: LakeStatistics,
         daily: dict[str, dict[str, int]], now: dt.datetime, lake: str,
         about: Mapping[str, FeedAbout] | None = None) -> str:
    esc = html_lib.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADERS)
    body = []
    for s in summaries:
        bad = s.error or s.last_status == "failed"
        cells = "".join(
            f'<td class="n">{esc(str(v))}</td>' if h in NUMERIC else
            f"<td>{esc('-' if v is None else str(v))}</td>"
            for h, v in zip(HEADERS, summary_row(s)))
        body.append(f'<tr class="bad">{cells}</tr>' if bad else f"<tr>{cells}</tr>")
    items = "".join(f"<li>{esc(line)}</li>" for line in [*stats_lines(stats),
                                                          *_errors(summaries)])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>lakeexportd report</title><style>{_CSS}</style></head><body>\n"
        f"<h1>Lake report</h1><p>{esc(lake)} at {now:%Y-%m-%d %H:%M:%S} UTC</p>\n"
        f"<ul>{items}</ul>\n<h2>Feeds</h2>\n<table><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(body) + "\n</tbody></table>\n<h2>About the feeds</h2>\n"
        + about_table(summaries, about or {}) + "\n<h2>Rows per day per stream</h2>\n"
        + chart(daily) + "\n</body></html>\n"
    )
