"""Where the harness writes a run: the day's file under bench/results/, or --out.

The report is only ever appended to, so the runs before and after a change
stay side by side; docs/performance.md is written by hand and never touched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_goes_to_the_file_of_its_utc_day_under_bench_results():
    ended = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    assert report.default_path(ended) == ROOT / "bench" / "results" / "2026-12-01.md"


def test_a_new_file_starts_with_the_preamble_and_later_runs_are_appended(tmp_path):
    out = tmp_path / "nested" / "smoke.md"
    report.write(out, "### Run A\n\nfirst\n")
    report.write(out, "### Run B\n\nsecond\n")
    text = out.read_text()
    assert text.startswith("# Benchmark runs: smoke\n")
    assert text.index("## Runs") < text.index("### Run A") < text.index("### Run B")
    assert text.endswith("second\n")


def test_what_a_file_already_holds_is_kept(tmp_path):
    out = tmp_path / "2026-11-30.md"
    out.write_text("# Runs written by hand\n\n### Run 17:08\n\nkept\n")
    report.write(out, "### Run 18:05\n\nnew\n")
    assert (
        out.read_text()
        == "# Runs written by hand\n\n### Run 17:08\n\nkept\n\n### Run 18:05\n\nnew\n"
    )
