"""9. Reconciliation against the provider: a month of every company's usage.

The provider's side is built from the dataset itself: the last complete UTC
month of usage of the OpenAI and Anthropic models, summed per UTC day and
model and written as the admin APIs' saved pages (OpenAI: seven daily buckets
a page under snapshot names; Anthropic: JSON Lines), with one deliberate gap
(two more gpt-4o generations on the 15th than we recorded). The pages are
imported with `import_provider_usage` (fresh, then again: every day must come
back unchanged), and then timed:

- `reconcile_provider --json` over the month, in a fresh process;
- the admin page for the month, in-process with the test client;

against the lower bound, the SQL that sums our side (one index-only range scan
per company). The report must find exactly the planted gap.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from django.db import connection

from bench.context import Context, command_exists, sql_ms, url_exists
from bench.measure import Result, fill, median, not_available, timed

SNAPSHOTS = {
    "gpt-4o": ("openai", "gpt-4o-2024-08-06"),
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18"),
    "o3": ("openai", "o3-2025-04-16"),
    "claude-sonnet-4": ("anthropic", "claude-sonnet-4-20250514"),
}
GAP_DAY, GAP_MODEL, GAP_GENERATIONS = 15, "gpt-4o", 2
PAGE = "/admin/usage/providerbucket/reconciliation/"


def _month() -> tuple[date, date]:
    """The last calendar month that ended before the dataset's newest row."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(occurred_at) FROM question_generation_usage")
        newest = cursor.fetchone()[0].astimezone(UTC).date()
    until = newest.replace(day=1) - timedelta(days=1)
    return until.replace(day=1), until


def our_totals_sql() -> str:
    from usage.provider_reconciliation import _our_totals_sql

    return _our_totals_sql()


def _bounds(since: date, until: date) -> list[datetime]:
    start = datetime.combine(since, time.min, tzinfo=UTC)
    return [start, datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)]


def write_pages(folder: Path, since: date, until: date) -> dict[str, list[Path]]:
    """The provider's pages for [since, until] from our own rows, with the planted gap."""
    with connection.cursor() as cursor:
        cursor.execute(our_totals_sql(), _bounds(since, until))
        rows = cursor.fetchall()
    days: dict[tuple[str, date], list[dict]] = {}
    for day, model, generations, prompt, cached, completion, _cost, _unpriced in rows:
        if model not in SNAPSHOTS:
            continue
        provider, snapshot = SNAPSHOTS[model]
        if model == GAP_MODEL and day.day == GAP_DAY:
            prompt += GAP_GENERATIONS * prompt // generations
            cached += GAP_GENERATIONS * cached // generations
            completion += GAP_GENERATIONS * completion // generations
            generations += GAP_GENERATIONS
        result = _result(provider, snapshot, generations, prompt, cached, completion)
        days.setdefault((provider, day), []).append(result)
    return {
        "openai": _openai_pages(folder, days, since, until),
        "anthropic": _anthropic_pages(folder, days, since, until),
    }


def _result(provider, snapshot, generations, prompt, cached, completion) -> dict:
    if provider == "openai":
        return {
            "object": "organization.usage.completions.result",
            "input_tokens": prompt, "input_cached_tokens": cached, "output_tokens": completion,
            "input_audio_tokens": 0, "output_audio_tokens": 0, "num_model_requests": generations,
            "project_id": "proj_qgen", "user_id": None, "api_key_id": None,
            "model": snapshot, "batch": False, "service_tier": "default",
        }  # fmt: skip
    return {
        "uncached_input_tokens": prompt - cached, "cache_read_input_tokens": cached,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": completion, "server_tool_use": {"web_search_requests": 0},
        "api_key_id": None, "workspace_id": None, "model": snapshot,
        "service_tier": "standard", "context_window": "0-200k",
    }  # fmt: skip


def _each_day(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def _openai_pages(folder: Path, days: dict, since: date, until: date) -> list[Path]:
    every = _each_day(since, until)
    paths = []
    for n in range(0, len(every), 7):
        chunk = every[n : n + 7]
        buckets = [
            {
                "object": "bucket",
                "start_time": int(_bounds(d, d)[0].timestamp()),
                "end_time": int(_bounds(d, d)[1].timestamp()),
                "results": days.get(("openai", d), []),
            }
            for d in chunk
        ]
        more = n + 7 < len(every)
        page = {
            "object": "page",
            "data": buckets,
            "has_more": more,
            "next_page": f"p{n}" if more else None,
        }
        paths.append(folder / f"openai_usage_{n // 7 + 1}.json")
        paths[-1].write_text(json.dumps(page))
    return paths


def _anthropic_pages(folder: Path, days: dict, since: date, until: date) -> list[Path]:
    lines = []
    every = _each_day(since, until)
    for n in range(0, len(every), 7):
        buckets = [
            {
                "starting_at": _bounds(d, d)[0].isoformat().replace("+00:00", "Z"),
                "ending_at": _bounds(d, d)[1].isoformat().replace("+00:00", "Z"),
                "results": days.get(("anthropic", d), []),
            }
            for d in every[n : n + 7]
        ]
        more = n + 7 < len(every)
        lines.append(json.dumps({"data": buckets, "has_more": more, "next_page": None}))
    path = folder / "anthropic_usage.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return [path]


def _forget_provider_data() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE usage_providerusageline, usage_providercostline, usage_providerbucket,"
            " usage_providerprojectmap"
        )


def _import(ctx: Context, paths: list[Path], provider: str) -> dict:
    run = ctx.child(
        "command", "import_provider_usage", *map(str, paths), "--provider", provider, "--json"
    )
    if run.get("error"):
        raise RuntimeError(run["error"][:500])
    return {"elapsed": run["elapsed"], "report": _last_json(run.get("stdout", ""))}


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    return {}


def provider_reconcile(ctx: Context) -> list[Result]:
    title_cmd = "reconcile_provider --json, a month of every company's usage"
    title_page = "admin reconciliation page, the same month"
    target_cmd = "<= 2x the month's SQL + 1 s start-up, peak < 150 MB, finds exactly the gap"
    target_page = "p95 <= 1.5x the month's SQL + 50 ms, finds exactly the gap"
    if not command_exists("reconcile_provider") or not url_exists(PAGE):
        why = "reconcile_provider or the admin page is not in this code yet"
        return [
            not_available("provider_cron", title_cmd, target_cmd, why),
            not_available("provider_page", title_page, target_page, why),
        ]
    since, until = _month()
    _forget_provider_data()
    with tempfile.TemporaryDirectory(prefix="bench-provider-") as folder:
        pages = write_pages(Path(folder), since, until)
        first = {p: _import(ctx, paths, p) for p, paths in pages.items()}
        again = {p: _import(ctx, paths, p) for p, paths in pages.items()}
    unchanged = all(r["report"].get("new") == 0 for r in again.values())
    ctx.log(f"    imported {since}..{until}: " + ", ".join(
        f"{p} {r['report'].get('buckets')} days in {r['elapsed']:.2f}s" for p, r in first.items()
    ) + f"; again: {'all unchanged' if unchanged else 'CHANGED'}")  # fmt: skip

    lower = timed(
        lambda: sql_ms(our_totals_sql(), _bounds(since, until)), warmup=1, repeat=ctx.reps(10)
    )
    lower_ms = median(lower)
    cron = _cron(ctx, since, until, lower_ms, unchanged, title_cmd, target_cmd)
    page = _page(ctx, since, until, lower_ms, title_page, target_page)
    return [cron, page]


def _found_the_gap(report: dict) -> bool:
    totals = report.get("totals", {})
    lost = [line for line in report.get("lines", []) if line["status"] != "matches"]
    return (
        totals.get("we_recorded_less") == 1
        and totals.get("we_recorded_more") == 0
        and len(lost) == 1
        and lost[0]["model"] == GAP_MODEL
        and int(lost[0]["day"][-2:]) == GAP_DAY
    )


def _cron(ctx, since, until, lower_ms, unchanged, title, target) -> Result:
    from usage.provider_reconciliation import reconcile_provider

    result = Result("provider_cron", title, target, unit="ms", lower_bound_label="our side's SQL")
    samples, peaks, errors = [], [], set()
    for _ in range(ctx.reps(3)):
        run = ctx.child(
            "command", "reconcile_provider", "--since", since.isoformat(),
            "--until", until.isoformat(), "--json",
        )  # fmt: skip
        samples.append(run["elapsed"] * 1000)
        peaks.append(run["peak_mb"])
        errors.add(run.get("error") or "exit 0")
    fill(result, samples)
    result.lower_bound, result.peak_mb = lower_ms, max(peaks)
    # The child keeps no output of a command that exits 1; its message counts the
    # gaps, and the same comparison in this process says which they are.
    expected = "CommandError: openai: 1 day/model lines beyond the tolerance"
    report = reconcile_provider(provider="openai", since=since, until=until).as_json()
    other = reconcile_provider(provider="anthropic", since=since, until=until)
    found = errors == {expected} and _found_the_gap(report) and other.ok
    result.notes.append(
        f"{since}..{until}: {report['totals']['lines'] + len(other.lines)} day/model lines; exit "
        f"{sorted(errors)}; planted gap found exactly: {found}; re-import unchanged: {unchanged}; "
        "includes Python start-up"
    )
    result.met = (
        found and unchanged and result.peak_mb < 150 and result.median <= 2 * lower_ms + 1000
    )
    return result


def _page(ctx, since, until, lower_ms, title, target) -> Result:
    result = Result("provider_page", title, target, lower_bound_label="our side's SQL")
    client = ctx.client()
    url = f"{PAGE}?provider=openai&since={since}&until={until}"

    def get():
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        return response

    body = get().content.decode()
    samples = timed(get, warmup=1, repeat=ctx.reps(10))
    fill(result, samples)
    result.lower_bound = lower_ms
    marks = [
        body.count(f'class="recon-status {s}"') for s in ("we_recorded_less", "we_recorded_more")
    ]
    found = marks == [1, 0]
    shown = body.count('class="recon-status ')
    result.notes.append(f"{shown} lines shown; planted gap found exactly: {found}")
    result.met = found and result.p95 <= 1.5 * lower_ms + 50
    return result
