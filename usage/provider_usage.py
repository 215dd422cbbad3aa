"""The provider's own books: importing its daily usage and cost buckets, and its project map.

`import_provider_usage` stores the daily buckets of saved admin-API pages
(usage.provider_pages reads them) in one transaction, serialised across hosts
by an advisory lock. A bucket is one UTC day of one report (usage or cost):
the same day with the same figures is left as it is (re-running an import, or
overlapping pages, counts it once); other figures for a day (the provider
completed or corrected it) make the new bucket current and keep the old one,
superseded, for audit. A dry run is this same path rolled back.

The project map says which of the provider organisation's projects (OpenAI),
workspaces (Anthropic) and API keys are this product's; the comparison applies
it, so it is stored once and changing it needs no re-import.

Model names: the providers report dated snapshots (`gpt-4o-2024-08-06`,
`claude-sonnet-4-20250514`) where the product may record the alias. Both
sides are compared under :func:`canonical_model`: lower-cased, mapped through
PROVIDER_MODEL_ALIASES, and with a trailing snapshot date dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.audit import record_audit
from core.errors import InvalidInput
from usage.models import ProviderBucket, ProviderCostLine, ProviderProjectMap, ProviderUsageLine
from usage.provider_pages import COST, USAGE, Bucket, CostResult, UsageResult, read_buckets

LOCK_NAME = "usage.import_provider_usage"
# The scope id of usage outside any project (OpenAI) or in the default workspace (Anthropic).
DEFAULT_SCOPE = "default"
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_MAP_KEYS = {"ours", "exclude", "unlisted"}


def canonical_model(name: str) -> str:
    """The name both sides are compared under: `gpt-4o-2024-08-06` and `gpt-4o` are `gpt-4o`."""
    aliases = {k.lower(): v.lower() for k, v in settings.PROVIDER_MODEL_ALIASES.items()}
    model = (name or "").strip().lower()
    model = aliases.get(model, model)
    model = _SNAPSHOT.sub("", model)
    return aliases.get(model, model)


def model_prefixes(provider: str) -> list[str]:
    """Our model names (lower-cased prefixes) that this provider bills."""
    names = {
        "openai": settings.PROVIDER_OPENAI_MODEL_PREFIXES,
        "anthropic": settings.PROVIDER_ANTHROPIC_MODEL_PREFIXES,
    }[provider]
    return [prefix.strip().lower() for prefix in names if prefix.strip()]


# --- The project map ------------------------------------------------------------


@dataclass(frozen=True)
class ProjectMap:
    """Which scope ids (projects, workspaces, API keys) are ours; `None` map: all are."""

    ours: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    unlisted: str = ProviderProjectMap.Unlisted.OURS

    def is_ours(self, *, project_id: str, api_key_id: str) -> bool:
        ids = {project_id or DEFAULT_SCOPE, api_key_id} - {""}
        if ids & self.exclude:
            return False
        if ids & self.ours:
            return True
        return self.unlisted == ProviderProjectMap.Unlisted.OURS


ALL_OURS = ProjectMap()


def parse_project_map(text: str, *, source: str = "") -> ProjectMap:
    """`{"ours": [ids], "exclude": [ids], "unlisted": "ours"|"exclude"}`, checked.

    `unlisted` (what an id in neither list is) defaults to "exclude" when
    `ours` lists anything, else to "ours". The id `default` is usage outside
    any project or in the default workspace.
    """
    where = source or "project map"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{where}: not JSON: {exc}", fields={"project_map": "not JSON"}) from exc
    if not isinstance(data, dict) or set(data) - _MAP_KEYS:
        unknown = sorted(set(data) - _MAP_KEYS) if isinstance(data, dict) else []
        raise InvalidInput(
            f"{where}: must be an object with only ours, exclude and unlisted"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
            fields={"project_map": "unexpected shape"},
        )
    ours, exclude = _id_list(data, "ours", where), _id_list(data, "exclude", where)
    if ours & exclude:
        raise InvalidInput(
            f"{where}: listed both as ours and excluded: {', '.join(sorted(ours & exclude))}",
            fields={"project_map": "an id in both lists"},
        )
    unlisted = data.get("unlisted", "exclude" if ours else "ours")
    if unlisted not in ProviderProjectMap.Unlisted.values:
        raise InvalidInput(
            f"{where}: unlisted must be 'ours' or 'exclude', not {unlisted!r}",
            fields={"project_map": "unlisted"},
        )
    return ProjectMap(ours=ours, exclude=exclude, unlisted=unlisted)


def _id_list(data: dict, key: str, where: str) -> frozenset[str]:
    values = data.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise InvalidInput(
            f"{where}: {key} must be a list of ids (strings)", fields={"project_map": key}
        )
    return frozenset(v.strip() for v in values)


def stored_project_map(provider: str) -> ProjectMap:
    row = ProviderProjectMap.objects.filter(provider=provider).first()
    if row is None:
        return ALL_OURS
    return ProjectMap(
        ours=frozenset(row.ours), exclude=frozenset(row.exclude), unlisted=row.unlisted
    )


def _store_project_map(
    *, provider: str, project_map: ProjectMap, source: str, actor=None, actor_label: str = ""
) -> None:
    before = stored_project_map(provider)
    values = {
        "ours": sorted(project_map.ours),
        "exclude": sorted(project_map.exclude),
        "unlisted": project_map.unlisted,
    }
    row, _ = ProviderProjectMap.objects.update_or_create(
        provider=provider, defaults={**values, "source": source}
    )
    if before != project_map:
        record_audit(
            action="provider_project_map.set",
            actor=actor,
            actor_label=actor_label,
            obj=row,
            before={"ours": sorted(before.ours), "exclude": sorted(before.exclude)}
            | {"unlisted": before.unlisted},
            after=values,
        )


# --- Importing buckets ------------------------------------------------------------


@dataclass
class ImportSummary:
    """What an import stored (or, in a dry run, would store)."""

    provider: str
    files: int = 0
    buckets: int = 0
    usage_buckets: int = 0
    cost_buckets: int = 0
    new: int = 0
    unchanged: int = 0
    replaced: int = 0
    results: int = 0
    first_day: date | None = None
    last_day: date | None = None
    models: list[str] = field(default_factory=list)
    replaced_days: list[dict] = field(default_factory=list)
    projects: dict[str, dict] = field(default_factory=dict)
    project_map_updated: bool = False
    dry_run: bool = False

    def as_json(self) -> dict:
        data = asdict(self)
        data["first_day"] = self.first_day.isoformat() if self.first_day else None
        data["last_day"] = self.last_day.isoformat() if self.last_day else None
        return data


def import_provider_usage(
    *,
    paths: Iterable[Path],
    provider: str,
    report: str | None = None,
    project_map: ProjectMap | None = None,
    project_map_source: str = "",
    dry_run: bool = False,
    actor=None,
    actor_label: str = "",
) -> ImportSummary:
    """Store every daily bucket of the saved pages at `paths` (in order; a later
    bucket of a day wins over an earlier one). All or nothing: a file that is not
    in the documented shape raises ExportError and nothing is stored."""
    paths = list(paths)
    buckets = [b for path in paths for b in read_buckets(path, provider=provider, report=report)]
    summary = ImportSummary(provider=provider, files=len(paths), dry_run=dry_run)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [LOCK_NAME])
        if project_map is not None:
            _store_project_map(
                provider=provider,
                project_map=project_map,
                source=project_map_source,
                actor=actor,
                actor_label=actor_label,
            )
            summary.project_map_updated = True
        scope = stored_project_map(provider)
        for bucket in buckets:
            _apply(bucket, summary)
            _count_scopes(bucket, scope, summary)
        if buckets:
            record_audit(
                action="provider_usage.import",
                actor=actor,
                actor_label=actor_label,
                after={k: v for k, v in summary.as_json().items() if k != "projects"},
            )
        if dry_run:
            transaction.set_rollback(True)
    return summary


def bucket_hash(bucket: Bucket) -> str:
    """The bucket's figures, order-free: equal figures, equal hash (raw text aside)."""
    rows = sorted(json.dumps(_figures(r), sort_keys=True) for r in bucket.results)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _figures(result: UsageResult | CostResult) -> dict:
    data = asdict(result)
    data.pop("raw")
    if isinstance(result, CostResult):
        data["amount"] = format(result.amount.normalize(), "f")
    return data


def _apply(bucket: Bucket, summary: ImportSummary) -> None:
    summary.buckets += 1
    summary.results += len(bucket.results)
    summary.usage_buckets += bucket.report == USAGE
    summary.cost_buckets += bucket.report == COST
    summary.first_day = min(filter(None, [summary.first_day, bucket.day]))
    summary.last_day = max(filter(None, [summary.last_day, bucket.day]))
    digest = bucket_hash(bucket)
    current = (
        ProviderBucket.objects.select_for_update()
        .filter(provider=bucket.provider, report=bucket.report, day=bucket.day)
        .filter(superseded_at__isnull=True)
        .first()
    )
    if bucket.report == USAGE:
        summary.models = sorted(
            set(summary.models) | {canonical_model(r.model) for r in bucket.results}
        )
    if current is not None and current.content_hash == digest:
        summary.unchanged += 1
        return
    if current is not None:
        current.superseded_at = timezone.now()
        current.save(update_fields=["superseded_at"])
        summary.replaced += 1
        summary.replaced_days.append({"report": bucket.report, "day": bucket.day.isoformat()})
    else:
        summary.new += 1
    stored = ProviderBucket.objects.create(
        provider=bucket.provider,
        report=bucket.report,
        day=bucket.day,
        content_hash=digest,
        result_count=len(bucket.results),
        source=bucket.source[-500:],
        replaces=current,
    )
    _store_lines(stored, bucket)


def _store_lines(stored: ProviderBucket, bucket: Bucket) -> None:
    if bucket.report == USAGE:
        ProviderUsageLine.objects.bulk_create(
            ProviderUsageLine(bucket=stored, canonical_model=canonical_model(r.model), **_fields(r))
            for r in bucket.results
        )
    else:
        ProviderCostLine.objects.bulk_create(
            ProviderCostLine(bucket=stored, canonical_model=canonical_model(r.model), **_fields(r))
            for r in bucket.results
        )


def _fields(result: UsageResult | CostResult) -> dict:
    return {name: getattr(result, name) for name in result.__dataclass_fields__}


def _count_scopes(bucket: Bucket, scope: ProjectMap, summary: ImportSummary) -> None:
    """Tokens per project/workspace, ours or excluded: what a project map needs."""
    if bucket.report != USAGE:
        return
    totals: dict[str, dict] = defaultdict(lambda: {"ours_tokens": 0, "excluded_tokens": 0})
    totals.update(summary.projects)
    for r in bucket.results:
        ours = scope.is_ours(project_id=r.project_id, api_key_id=r.api_key_id)
        key = "ours_tokens" if ours else "excluded_tokens"
        totals[r.project_id or DEFAULT_SCOPE][key] += r.input_tokens + r.output_tokens
    summary.projects = dict(totals)
