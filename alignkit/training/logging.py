"""metrics.jsonl (one JSON object per logged step) and the progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class MetricsLog:
    """Appends one JSON line per call. On resume, lines logged after the resumed step are dropped,
    so the file reads as one uninterrupted run."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:  # a line cut by a crash: logged after the checkpoint anyway
                    row = None
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    kept.append(line)
        from alignkit.training.checkpoint import (
            write_text_atomic,  # (torch: imported only by a training stage)
        )

        write_text_atomic(self.path, "".join(line + "\n" for line in kept))  # a kill now keeps the old file

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return round(v, 6) if isinstance(v, float) else v


def fmt(value, spec: str = "+.3f") -> str:
    """A logged number for a message: ``value`` formatted with ``spec``, or as it is when it is not a number
    (a metric that was NaN is stored as the string "nan")."""
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def progress_bar(enabled: bool = True) -> Progress:
    """A rich progress bar: steps, elapsed/remaining time and a free-text field for live metrics."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled)


def info(message: str) -> None:
    """A one-line status message on stderr (stdout stays for results)."""
    print(message, file=sys.stderr, flush=True)
