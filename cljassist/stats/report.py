"""`cljassist stats`: what was kept, per day and per model, from the statistics file (store.py).

    cljassist stats [--days N] [--by model|day] [--plot OUT.png] [--json]

For each day (local time, the day the suggestion was shown) and each model: suggestions shown,
accepted, the acceptance rate (accepted / shown; tracker.py says what counts as shown), how many
were taken whole and how many in part, the characters accepted and, of the accepted characters an
editor reported on 30 s later (`retained`), how many were still in the buffer. A suggestion taken in
several accepts (a word, then another) counts once, with all the characters it gave; it counts as
whole when the last of it was taken with a whole accept or nothing of it was left.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from cljassist.errors import InputError
from cljassist.stats.store import read_events, stats_path

__all__ = ["ShownSuggestion", "Row", "shown_suggestions", "rows", "since_day", "format_report", "write_plot",
           "main_stats"]

BY_CHOICES = ("day", "model")


@dataclass
class ShownSuggestion:
    sid: str
    time: float
    model: str
    chars: int  # its length
    accepted: int = 0  # characters taken, all accepts together
    whole: bool = False
    retained: int = 0  # characters reported still there 30 s after an accept
    reported: bool = False  # the editor sent a `retained` for it

    @property
    def day(self) -> str:
        return dt.date.fromtimestamp(self.time).isoformat()


def shown_suggestions(events: Iterable[dict[str, Any]]) -> list[ShownSuggestion]:
    """The suggestions shown, each with what was accepted and kept of it. An accept or a retained
    report whose suggestion is not in the file (rotated out with the older generation) is left out:
    it has no day and no model to count under."""
    by_sid: dict[str, ShownSuggestion] = {}
    for event in events:
        sid, kind = event["sid"], event["event"]
        if kind == "shown":
            by_sid.setdefault(sid, ShownSuggestion(sid, float(event["time"]), event["model"], max(0, event["chars"])))
            continue
        shown = by_sid.get(sid)
        if shown is None:
            continue
        # bounded as the daemon bounds them, so a hand-edited file cannot count more than was shown
        if kind == "accepted":
            taken = max(0, min(event["chars"], shown.chars - shown.accepted))
            shown.accepted += taken
            shown.whole = shown.whole or event["kind"] == "whole" or (shown.accepted == shown.chars and taken > 0)
        elif kind == "retained":
            shown.retained += max(0, min(event["chars"], shown.accepted - shown.retained))
            shown.reported = True
    return list(by_sid.values())


@dataclass
class Row:
    key: str
    shown: int = 0
    accepted: int = 0
    whole: int = 0
    partial: int = 0
    accepted_chars: int = 0
    kept_chars: int = 0  # still in the buffer 30 s later
    reported_chars: int = 0  # accepted characters an editor reported on (the base of `kept_share`)

    @property
    def rate(self) -> float | None:
        return self.accepted / self.shown if self.shown else None

    @property
    def kept_share(self) -> float | None:
        return self.kept_chars / self.reported_chars if self.reported_chars else None

    def add(self, s: ShownSuggestion) -> None:
        self.shown += 1
        if s.accepted:
            self.accepted += 1
            self.whole += s.whole
            self.partial += not s.whole
            self.accepted_chars += s.accepted
        if s.reported:
            self.kept_chars += s.retained
            self.reported_chars += s.accepted

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate": _rounded(self.rate), "kept_share": _rounded(self.kept_share)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def rows(suggestions: Iterable[ShownSuggestion], key: Callable[[ShownSuggestion], str]) -> list[Row]:
    """One row per distinct key, sorted by key."""
    table: dict[str, Row] = {}
    for s in suggestions:
        k = key(s)
        table.setdefault(k, Row(k)).add(s)
    return [table[k] for k in sorted(table)]


def total_row(suggestions: Iterable[ShownSuggestion]) -> Row:
    row = Row("total")
    for s in suggestions:
        row.add(s)
    return row


def since_day(days: int, now: float | None = None) -> float:
    """The start (local time) of the first of the last `days` days, today included."""
    today = dt.date.fromtimestamp(time.time() if now is None else now)
    first = today - dt.timedelta(days=days - 1)
    return dt.datetime.combine(first, dt.time()).timestamp()


_COLUMNS = ("shown", "accepted", "rate", "whole", "partial", "chars accepted", "chars kept", "kept")


def _cells(row: Row) -> list[str]:
    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    return [str(row.shown), str(row.accepted), share(row.rate), str(row.whole), str(row.partial),
            str(row.accepted_chars), str(row.kept_chars), share(row.kept_share)]


def _table(title: str, table: list[Row], total: Row) -> list[str]:
    body = [[r.key, *_cells(r)] for r in table] + [[total.key, *_cells(total)]]
    header = [title, *_COLUMNS]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *(line(cells) for cells in body)]


def format_report(suggestions: list[ShownSuggestion], by: list[str], path: Path, days: int | None) -> str:
    span = f"in the last {days} day{'s' if days != 1 else ''}" if days else "in all that is recorded"
    lines = [f"What was kept: {len(suggestions)} suggestions shown {span} ({path})"]
    if not suggestions:
        return lines[0] + "\n"
    total = total_row(suggestions)
    for name in by:
        lines += ["", *_table(name, rows(suggestions, _KEYS[name]), total)]
    lines += ["",
              "rate: accepted / shown (the first suggestion of each reply is the one shown)",
              "whole / partial: accepted suggestions taken entirely / a word or a line of them",
              "kept: of the accepted characters the editor reported on 30 s later, the share still there"]
    return "\n".join(lines) + "\n"


_KEYS: dict[str, Callable[[ShownSuggestion], str]] = {"day": lambda s: s.day, "model": lambda s: s.model}


def report_json(suggestions: list[ShownSuggestion], by: list[str], path: Path, days: int | None,
                warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"file": str(path), "days": days, "warnings": warnings}
    for name in by:
        out[f"by_{name}"] = [r.as_json() for r in rows(suggestions, _KEYS[name])]
    out["total"] = total_row(suggestions).as_json()
    return out


def write_plot(suggestions: list[ShownSuggestion], out: Path) -> None:
    """A PNG: the acceptance rate per day, one line per model, above the characters accepted and
    kept per day. InputError when matplotlib is missing or there is nothing to plot."""
    if not suggestions:
        raise InputError("--plot: nothing to plot, no suggestions recorded in that time")
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None
    days = sorted({s.day for s in suggestions})
    figure, (rate_axes, chars_axes) = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 0.6 * len(days) + 3), 6))
    try:
        for model in sorted({s.model for s in suggestions}):
            by_day = {r.key: r for r in rows((s for s in suggestions if s.model == model), _KEYS["day"])}
            points = [(i, 100 * by_day[d].rate) for i, d in enumerate(days) if d in by_day]
            rate_axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=model)
        rate_axes.set_ylabel("accepted / shown (%)")
        rate_axes.set_ylim(0, 100)
        rate_axes.legend(loc="upper left", fontsize="small")
        rate_axes.set_title("What was kept")
        per_day = {r.key: r for r in rows(suggestions, _KEYS["day"])}
        positions = range(len(days))
        chars_axes.bar([x - 0.2 for x in positions], [per_day[d].accepted_chars for d in days], width=0.4,
                       label="characters accepted")
        chars_axes.bar([x + 0.2 for x in positions], [per_day[d].kept_chars for d in days], width=0.4,
                       label="of them kept 30 s later (where reported)")
        chars_axes.set_ylabel("characters")
        chars_axes.set_xticks(list(positions), days, rotation=45, ha="right")
        chars_axes.legend(loc="upper left", fontsize="small")
        figure.tight_layout()
        try:
            figure.savefig(out, format="png")
        except OSError as exc:
            raise InputError(f"--plot: cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)


def main_stats(args) -> int:
    """`cljassist stats`."""
    days = args.days
    if days is not None and days < 1:
        raise InputError(f"--days must be at least 1, got {days}")
    path = stats_path()
    read = read_events(path)
    for warning in read.warnings:
        print(f"cljassist stats: {warning}", file=sys.stderr)
    suggestions = shown_suggestions(read.events)
    if days is not None:
        start = since_day(days)
        suggestions = [s for s in suggestions if s.time >= start]
    by = [args.by] if args.by else list(BY_CHOICES)
    if args.plot:
        write_plot(suggestions, Path(args.plot))
    if args.json:
        print(json.dumps(report_json(suggestions, by, path, days, read.warnings), indent=1))
    else:
        print(format_report(suggestions, by, path, days), end="")
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0
