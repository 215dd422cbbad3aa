"""Runs the selected scenarios in a safe order and writes the report.

A scenario whose URL or command is not in the code yet reports "not
available"; one that fails reports "error" with the reason. Neither stops the
run, so the harness works on any branch and, after the merge, simply measures
more.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from bench import report
from bench.context import Context
from bench.measure import Result
from bench.scenarios import api, importer, pages, provider, reconcile, service

# (number, name, function). Read-only scenarios first, then the ones that write.
SCENARIOS: list[tuple[str, str, Callable]] = [
    ("1", "usage_tab", pages.usage_tab),
    ("2", "overview", pages.overview),
    ("3", "admin", lambda ctx: [pages.admin_changelist(ctx), pages.admin_changelist_company(ctx)]),
    ("7", "csv_export", pages.csv_export),
    ("9", "provider_reconcile", provider.provider_reconcile),
    ("4", "reconcile", reconcile.reconcile),
    ("0", "record_usage", service.record_usage_service),
    ("5", "api_single", api.api_single),
    ("6", "api_batch", api.api_batch),
    ("8", "import_usage", importer.import_usage),
]


def selected(spec: str) -> list[tuple[str, str, Callable]]:
    if not spec:
        return SCENARIOS
    wanted = {part.strip() for part in spec.split(",") if part.strip()}
    unknown = wanted - {n for n, _, _ in SCENARIOS} - {name for _, name, _ in SCENARIOS}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return [s for s in SCENARIOS if s[0] in wanted or s[1] in wanted]


def run_one(ctx: Context, number: str, name: str, fn: Callable) -> list[Result]:
    ctx.log(f"scenario {number} {name}")
    t0 = time.perf_counter()
    try:
        out = fn(ctx)
    except Exception as exc:  # noqa: BLE001 - one scenario never stops the run
        ctx.log(traceback.format_exc())
        out = Result(name, name, "", status="error", notes=[f"{type(exc).__name__}: {exc}"[:500]])
    results = out if isinstance(out, list) else [out]
    for r in results:
        ctx.log(f"  {r.name}: {r.status} {report._fmt(r.median, r.unit)} ({time.perf_counter() - t0:.0f}s)")  # fmt: skip
    return results


def run_all(args, marker: dict, *, log) -> bool:
    ctx = Context(marker=marker, repeat=args.repeat, log=log)
    results: list[Result] = []
    for number, name, fn in selected(args.scenarios):
        results.extend(run_one(ctx, number, name, fn))
    facts = report.machine()
    section = report.run_section(results, marker, facts, size=args.size, note=args.note)
    print()
    print(report.table(results))
    print()
    print(report.notes(results))
    out = args.out or report.default_path()
    report.write(out, section)
    log(f"report appended to {out}")
    return not any(r.status == "error" for r in results)
