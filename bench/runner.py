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
from bench.scenarios import api, budgets, importer, pages, provider, reconcile, service, statements

# (number, name, function). Read-only scenarios first, then the ones that write.
SCENARIOS: list[tuple[str, str, Callable]] = [
    ("1", "usage_tab", pages.usage_tab),
    ("2", "overview", pages.overview),
    ("3", "admin", lambda ctx: [pages.admin_changelist(ctx), pages.admin_changelist_company(ctx)]),
    ("7", "csv_export", pages.csv_export),
    ("9", "provider_reconcile", provider.provider_reconcile),
    ("4", "reconcile", reconcile.reconcile),
    ("10", "statements", statements.close_statements),
    ("0", "record_usage", service.record_usage_service),
    ("5", "api_single", api.api_single),
    ("6", "api_batch", api.api_batch),
    ("8", "import_usage", importer.import_usage),
    ("11", "budgets", budgets.budgets),
]


# Measured a second time past one machine, each right after its first run so the
# report shows them side by side: the API through PgBouncer (--pooler-url), the
# pages reading the streaming replica (--replica-url).
THROUGH_POOLER = {"api_single", "api_batch"}
ON_REPLICA = {"usage_tab", "overview", "csv_export"}


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


def run_variants(ctx: Context, number: str, name: str, fn: Callable) -> list[Result]:
    """The scenario again through PgBouncer or on the replica, when asked for."""
    if ctx.pooler_url and name in THROUGH_POOLER:
        with ctx.through_pooler():
            return _relabel(run_one(ctx, number, name, fn), "pooled", "through PgBouncer")
    if ctx.has_replica and name in ON_REPLICA:
        from config.routers import measure_replica

        with ctx.on_replica():
            verdict = measure_replica()
            results = _relabel(run_one(ctx, number, name, fn), "replica", "on the replica")
        for r in results:
            r.notes.insert(0, f"replica before the run: {verdict.reason}")
        return results
    return []


def _relabel(results: list[Result], suffix: str, label: str) -> list[Result]:
    for r in results:
        r.name, r.title = f"{r.name}_{suffix}", f"{r.title}, {label}"
    return results


def run_all(args, marker: dict, *, log) -> bool:
    ctx = Context(marker=marker, repeat=args.repeat, log=log, pooler_url=args.pooler_url or "")
    results: list[Result] = []
    for number, name, fn in selected(args.scenarios):
        first = run_one(ctx, number, name, fn)
        if ctx.has_replica and name in ON_REPLICA:
            _relabel(first, "primary", "on the primary")
        if ctx.pooler_url and name in THROUGH_POOLER:
            _relabel(first, "direct", "direct")
        results.extend(first)
        results.extend(run_variants(ctx, number, name, fn))
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
