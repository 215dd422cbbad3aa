"""The machine facts, the results table, and the run's report under bench/results/.

Each run is appended to the file of its day (`bench/results/<UTC date>.md`),
never rewriting what is there, so the runs before and after a change stay side
by side. docs/performance.md, which holds the current figures and the
decisions, is edited by hand; the harness never writes it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from django.db import connection

from bench.measure import Result

PG_SETTINGS = [
    "shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size",
    "synchronous_commit", "fsync", "max_connections", "max_parallel_workers_per_gather",
    "random_page_cost", "jit", "max_wal_size", "checkpoint_timeout", "wal_compression",
]  # fmt: skip
RESULTS = Path(__file__).resolve().parent / "results"
PREAMBLE = """# Benchmark runs: {title}

Written by `python -m bench` (docs/performance.md, "Running the harness"): one
section per run, appended in the order the runs ended, each with its machine,
code and dataset. The current figures and what was decided from them are in
docs/performance.md.

Columns: `median` and `p95` are per request or per run (ms or s) for pages,
and the throughput for rate scenarios (`p95` of a rate is its slowest run);
`lower bound` is the plain SQL (or pgbench) doing the same work in the same
run on the same data; `ratio` is how many times slower than that bound.

## Runs
"""


def machine() -> dict[str, str]:
    facts = {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "python": platform.python_version(),
    }
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        facts["postgresql"] = cursor.fetchone()[0]
        for name in PG_SETTINGS:
            cursor.execute(f"SHOW {name}")
            facts[name] = cursor.fetchone()[0]
    facts["git"] = _git_head()
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _git_head() -> str:
    """The commit measured, and whether tracked files differed from it."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        )
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "?"
    files = len(changed.stdout.splitlines())
    return out.stdout.strip() + (f" + uncommitted changes to {files} file(s)" if files else "")


def dataset_facts(marker: dict) -> dict[str, str]:
    sizes = {}
    with connection.cursor() as cursor:
        for table in ("question_generation_usage", "billing_ledgerentry", "usage_daily_rollup"):
            cursor.execute(
                "SELECT pg_size_pretty(pg_total_relation_size(%s)), "
                "(SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass)",
                [table, table],
            )
            size, tuples = cursor.fetchone()
            sizes[table] = f"~{tuples:,} rows, {size}"
    return {
        "usage rows built": f"{marker['rows']:,} over {marker['companies']:,} companies",
        "built": f"{marker['built_at']:%Y-%m-%d %H:%M} UTC in {marker['build_seconds']:.0f} s",
        **sizes,
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}"


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | median | p95 | peak MB | lower bound | ratio | target | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.title} | {r.status} | | | | | {r.target} | - |")
            continue
        met = "yes" if r.met else ("no" if r.met is not None else "-")
        lower = f"{_fmt(r.lower_bound, r.unit)} ({r.lower_bound_label})" if r.lower_bound else "-"
        lines.append(
            f"| {r.title} | {_fmt(r.median, r.unit)} | {_fmt(r.p95, r.unit)} | "
            f"{f'{r.peak_mb:.0f}' if r.peak_mb else '-'} | {lower} | "
            f"{f'{r.ratio:.1f}x' if r.ratio else '-'} | {r.target} | {met} |"
        )
    return "\n".join(lines)


def notes(results: list[Result]) -> str:
    out = []
    for r in results:
        for note in r.notes:
            out.append(f"- {r.name}: {note}")
    return "\n".join(out)


def run_section(results, marker, facts, *, size: str, note: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"### Run {stamp} (size {size})", ""]
    if note:
        parts += [note, ""]
    parts.append("Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items() if k != "git"))
    parts.append("")
    parts.append(f"Code: `{facts.get('git', '?')}`")
    parts.append("")
    parts.append("Dataset: " + "; ".join(f"{k}: {v}" for k, v in dataset_facts(marker).items()))
    parts += ["", table(results), "", notes(results), ""]
    return "\n".join(parts)


def default_path(now: datetime | None = None) -> Path:
    """The file of the day (UTC) a run ends on: bench/results/YYYY-MM-DD.md."""
    return RESULTS / f"{(now or datetime.now(UTC)):%Y-%m-%d}.md"


def write(path: str | Path, section: str) -> None:
    """Append the run to `path`, keeping everything already there (a new file gets the preamble)."""
    file = Path(path)
    if file.exists():
        text = file.read_text()
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        text = PREAMBLE.format(title=file.stem)
    file.write_text(text.rstrip() + "\n\n" + section.rstrip() + "\n")
