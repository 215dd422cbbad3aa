"""Importing usage exported from an existing system (CSV or JSON Lines).

Every row goes through the same recording service as the API
(:func:`usage.recording.record_usage_batch`), so an imported generation is
validated, priced, rolled up and (unless ``debit=False``) debited exactly like a
live one. A dry run records each batch the same way and rolls it back.

Decisions, documented in docs/operations.md:

- The source row's ``id`` becomes the idempotency key ``import:<id>`` (an
  ``idempotency_key`` column wins if present), so re-running an import, or
  importing a file twice, never double counts: those rows are "replayed".
  A row without either is rejected (re-running it could not be safe).
- ``total_tokens`` must equal ``prompt_tokens + completion_tokens`` (cached
  tokens are part of the prompt); when exactly one of those two is missing it
  is derived from the total. A mismatch is a rejected row, never a guess.
- Instead of the flat token columns a row may carry ``provider`` and
  ``usage``, the provider's usage object as JSON (a JSON Lines object, or JSON
  text in a CSV cell), read exactly as the API reads it (usage.providers).
- Timestamps must carry an offset, as in the API. A naive timestamp is
  rejected unless the operator names its zone (``assume_tz``). Unix epoch
  seconds are accepted as UTC. A row without a timestamp is rejected: history
  stamped with the import time would land in the wrong month.
- "", "NULL", "null", "None" and "\\N" mean no value.
- A reported ``cost`` is used as is (rounded once to 12 places by
  billing.money); without one the row is priced from the model price table.
- Rows that cannot be imported (unknown company, bad numbers, conflicting
  duplicate ids, ...) go to the reject file with their line number and the
  reason, in the input's own format, so the fixed file can be imported again.
  They are not added to the API's RejectedEvent inbox: that inbox exists for
  senders that cannot retry; an import is retried by re-running it.

Memory stays flat: the file is streamed (one pre-scan pass for the encoding,
one pass to import), rows are recorded in batches, and only counters are kept.
Several forked workers can record at once (``workers``), each
streaming the file and taking the rows whose key hashes to it; see
:func:`worker_of`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import ctypes
import heapq
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import traceback
import zlib
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from django.db import connection, connections, transaction
from django.utils import timezone

from billing.companies import resolve_company
from billing.errors import CompanyNotFound
from billing.models import Company
from core.errors import ServiceError
from core.text import parse_decimal, unstorable_path
from usage.events import UsageEvent
from usage.providers import event_fields
from usage.recording import Outcome, record_usage_batch
from usage.schemas import strict_json_loads

NULLS = {"", "null", "none", "\\n"}
# Source column -> our name. Our own names map to themselves.
COLUMN_ALIASES = {
    "company_id": "company",
    "organization_id": "company",
    "model_used": "model",
    "created_at": "occurred_at",
    "timestamp": "occurred_at",
}
KNOWN_COLUMNS = {
    "id",
    "idempotency_key",
    "company",
    "job_id",
    "draft_job_id",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "question_count",
    "cost",
    "model",
    "occurred_at",
    "metadata",
    "processing_time_ms",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "service_tier",
    "provider",
    "usage",
}
REQUIRED_COLUMNS = {"company", "model", "occurred_at"}
SNIFF_BYTES = 64 * 1024


class ImportFileError(Exception):
    """The file as a whole cannot be imported (unreadable, missing columns)."""


class RowError(Exception):
    """One row cannot be imported; the message is the reason in the reject file.

    `raw` keeps what could not even be parsed (the CSV fields, the JSON text),
    so that the reject file still holds the row.
    """

    def __init__(self, reason: str, raw: list[str] | str | None = None) -> None:
        super().__init__(reason)
        self.raw = raw


@dataclass
class ImportSummary:
    path: str
    format: str
    encoding: str
    rows: int = 0
    imported: int = 0
    replayed: int = 0
    rejected: int = 0
    unpriced: int = 0
    total_cost: Decimal = Decimal(0)
    debit: bool = True
    dry_run: bool = False
    rejects_path: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_cost"] = str(self.total_cost)
        return data


# --- Encoding and format --------------------------------------------------------------


def detect_encoding(path: Path) -> tuple[str, str | None]:
    """(encoding, warning): utf-8-sig with a BOM, utf-8 if it all decodes, else cp1252/latin-1.

    Streams the whole file once in chunks, so a bad byte at the end is found
    before any row is imported, with flat memory.
    """
    with path.open("rb") as handle:
        if handle.read(3) == codecs.BOM_UTF8:
            return "utf-8-sig", None
    for encoding in ("utf-8", "cp1252"):
        if _decodes(path, encoding):
            if encoding == "utf-8":
                return encoding, None
            return encoding, "file is not UTF-8; read as Windows-1252 (cp1252)"
    return "latin-1", "file is neither UTF-8 nor Windows-1252; read as Latin-1"


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def detect_format(path: Path, encoding: str) -> str:
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv", ".txt"}:
        return "csv"
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    with path.open(encoding=encoding, newline="") as handle:
        head = handle.read(SNIFF_BYTES).lstrip()
    return "jsonl" if head.startswith("{") else "csv"


# --- Reading rows ------------------------------------------------------------------------

Row = tuple[int, dict[str, Any]]  # (line number, raw values by source column)


def read_csv(handle: IO[str], header_out: list[str]) -> Iterator[Row | tuple[int, RowError]]:
    sample = handle.read(SNIFF_BYTES)
    handle.seek(0)
    reader = csv.reader(handle, delimiter=_delimiter(sample))
    header = next((r for r in reader if any(c.strip() for c in r)), None)
    if header is None:
        return
    header_out.extend(header)
    names = [normalise_column(h) for h in header]
    line = reader.line_num
    for record in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue  # blank line
        if len(record) != len(names):
            yield start, RowError(f"expected {len(names)} fields, found {len(record)}", record)
            continue
        yield start, dict(zip(names, record, strict=True))


def _delimiter(sample: str) -> str:
    """The header line's most frequent of , ; tab | (csv.Sniffer misreads quoted JSON)."""
    header = next((line for line in sample.splitlines() if line.strip()), "")
    return max([",", ";", "\t", "|"], key=header.count) if header else ","


def read_jsonl(handle: IO[str]) -> Iterator[Row | tuple[int, RowError]]:
    for number, text in enumerate(handle, 1):
        if not text.strip():
            continue
        try:
            value = strict_json_loads(text)
        except ValueError as exc:
            where = (
                f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
            )
            yield number, RowError(f"not valid JSON: {where}", text.rstrip("\r\n"))
            continue
        if not isinstance(value, dict):
            yield number, RowError("each line must be a JSON object", text.rstrip("\r\n"))
            continue
        yield number, {normalise_column(k): v for k, v in value.items()}


def normalise_column(name: str) -> str:
    text = str(name).strip().lstrip("\ufeff").lower().replace(" ", "_").replace("-", "_")
    return COLUMN_ALIASES.get(text, text)


# --- One row -> one event ------------------------------------------------------------------


def _value(row: dict[str, Any], name: str) -> Any:
    value = row.get(name)
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in NULLS:
            return None
    return value


def _int(row: dict[str, Any], name: str) -> int | None:
    value = _value(row, name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise RowError(f"{name} must be a whole number, got {value!r}")
    try:
        number = parse_decimal(value if isinstance(value, int | Decimal) else str(value))
    except ValueError:
        raise RowError(f"{name} must be a whole number, got {value!r}")
    if not number.is_finite() or number != number.to_integral_value():
        raise RowError(f"{name} must be a whole number, got {value!r}")
    if number.adjusted() > 18:  # int() of 1e999999999 would build a billion digits
        raise RowError(f"{name} {value!r} is far too large")
    return int(number)


def _tokens(row: dict[str, Any]) -> tuple[int, int]:
    prompt, completion = _int(row, "prompt_tokens"), _int(row, "completion_tokens")
    total = _int(row, "total_tokens")
    if total is not None:
        if prompt is None and completion is not None:
            prompt = total - completion
        elif completion is None and prompt is not None:
            completion = total - prompt
        elif prompt is not None and completion is not None and prompt + completion != total:
            raise RowError(
                f"total_tokens {total} is not prompt_tokens {prompt} + completion_tokens {completion}"
            )
    if prompt is None or completion is None:
        raise RowError(
            "prompt_tokens and completion_tokens are required (or one of them and total_tokens)"
        )
    return prompt, completion


def _breakdown(row: dict[str, Any]) -> dict[str, Any]:
    """The event's token fields and tier: the flat columns, or `provider` + `usage`."""
    usage, provider = _value(row, "usage"), _text(row, "provider")
    if isinstance(usage, str):
        try:
            usage = strict_json_loads(usage)
        except ValueError:
            raise RowError("usage is not valid JSON")
    flat: dict[str, Any] = {}
    if usage is None and provider is None:
        flat["prompt_tokens"], flat["completion_tokens"] = _tokens(row)
    for name in ("cached_prompt_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                 "reasoning_tokens"):  # fmt: skip
        flat[name] = _int(row, name)
    if usage is not None or provider is not None:
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            flat[name] = _int(row, name)
    try:
        fields = event_fields(
            provider=provider, usage=usage, service_tier=_text(row, "service_tier"), flat=flat
        )
    except ServiceError as exc:
        raise RowError(exc.message.removeprefix("Invalid usage event: "))
    fields.pop("total_tokens", None)
    return fields


def _timestamp(row: dict[str, Any], assume_tz: zoneinfo.ZoneInfo | None) -> datetime:
    value = _value(row, "occurred_at")
    if value is None:
        raise RowError("created_at/occurred_at is required")
    if isinstance(value, bool):
        raise RowError(f"created_at {value!r} is not a timestamp")
    if isinstance(value, int | float) or (
        isinstance(value, str) and value.isascii() and value.isdigit()
    ):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (ValueError, OverflowError, OSError):  # out of range, or digits like '²'
            raise RowError(f"created_at {value!r} is not a Unix timestamp in range")
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise RowError(f"created_at {value!r} is not an ISO 8601 timestamp")
    if timezone.is_naive(moment):
        if assume_tz is None:
            raise RowError(
                f"created_at {value!r} has no UTC offset (add one, or import with --assume-tz)"
            )
        moment = moment.replace(tzinfo=assume_tz)
    return moment


def _metadata(row: dict[str, Any]) -> dict:
    value = _value(row, "metadata")
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = strict_json_loads(value)
        except ValueError:
            raise RowError("metadata is not valid JSON")
    if not isinstance(value, dict):
        raise RowError("metadata must be a JSON object")
    # A CSV cell's JSON is parsed here, after the row's own check.
    if (bad := unstorable_path(value)) is not None:
        raise RowError("metadata." + " ".join(bad))
    return value


def _text(row: dict[str, Any], name: str) -> str | None:
    value = _value(row, name)
    return None if value is None else str(value)


def event_from_row(
    row: dict[str, Any], *, assume_tz: zoneinfo.ZoneInfo | None = None
) -> UsageEvent:
    """The UsageEvent a source row describes; RowError naming the first problem."""
    if (bad := unstorable_path(row)) is not None:  # PostgreSQL could not store it
        raise RowError(" ".join(bad))
    key = _text(row, "idempotency_key")
    if key is None:
        source_id = _text(row, "id")
        if source_id is None:
            raise RowError("id is required (it makes re-running the import safe)")
        key = f"import:{source_id}"
    company = _text(row, "company")
    if company is None:
        raise RowError("company_id is required")
    tokens = _breakdown(row)
    cost = _value(row, "cost")
    return UsageEvent(
        company=company,
        idempotency_key=key,
        model=_text(row, "model") or "",
        **tokens,
        question_count=_int(row, "question_count") or 0,
        job_id=_text(row, "job_id"),
        draft_job_id=_text(row, "draft_job_id"),
        cost=None if cost is None else str(cost),
        occurred_at=_timestamp(row, assume_tz),
        metadata=_metadata(row),
        processing_time_ms=_int(row, "processing_time_ms"),
    )


# --- Recording -------------------------------------------------------------------------------


class CompanyCache:
    """Companies by the reference a file uses (UUID or external id); misses cached too."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._known: dict[str, Company | None] = {}

    def get(self, ref: str) -> Company:
        if ref not in self._known:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            try:
                self._known[ref] = resolve_company(ref)
            except CompanyNotFound:
                self._known[ref] = None
        company = self._known[ref]
        if company is None:
            raise RowError(f"unknown company {ref!r} (neither a company id nor an external id)")
        return company


def record_batch(batch: list[tuple[UsageEvent, Company]], *, debit: bool) -> list[Outcome]:
    """Record a batch set-based; one outcome per event, in order."""
    events = [event for event, _ in batch]
    companies = {event.company: company for event, company in batch}
    return record_usage_batch(events, debit=debit, companies=companies)


def dry_run_batch(batch: list[tuple[UsageEvent, Company]], *, debit: bool) -> list[Outcome]:
    """The dry run's batch: recorded exactly as an import would, then rolled back.

    It reports what the import would do as the database stands. (It does not
    see its own earlier batches, so a key repeated in a later batch of the file
    reads as new there too.)
    """
    with transaction.atomic():
        outcomes = record_batch(batch, debit=debit)
        transaction.set_rollback(True)
    return outcomes


# --- The import ------------------------------------------------------------------------------


@dataclass
class ImportOptions:
    format: str | None = None  # "csv" | "jsonl" | None (detect)
    debit: bool = True
    dry_run: bool = False
    # 1,000 amortises the per-batch round trips while keeping each transaction,
    # which holds the company's balance row, short (docs/performance.md).
    batch_size: int = 1000
    rejects_path: Path | None = None
    assume_tz: str | None = None
    encoding: str | None = None  # override detection
    # Processes recording at once (see _import_in_workers). 1: this process.
    workers: int = 1


class RejectWriter:
    """Rejected rows, in the input's format, with `_line` and `_reason` first."""

    def __init__(self, path: Path, fmt: str, header: list[str]) -> None:
        self.path, self.format, self.header = path, fmt, header
        self._handle: IO[str] | None = None
        self._csv = None

    def write(self, line: int, reason: str, raw: dict[str, Any] | list[str] | str | None) -> None:
        if self._handle is None:
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            if self.format == "csv":
                self._csv = csv.writer(self._handle)
                self._csv.writerow(["_line", "_reason", *self.header])
        if self._csv is not None:
            values = list(raw.values()) if isinstance(raw, dict) else list(raw or [])
            self._csv.writerow([line, reason, *values])
            return
        body = raw if isinstance(raw, dict) else {"_raw": raw}
        # A row's own _line/_reason (a reject file imported again) never overrides ours.
        own = {k: v for k, v in body.items() if k not in ("_line", "_reason")}
        self._handle.write(
            json.dumps({"_line": line, "_reason": reason, **own}, default=str) + "\n"
        )

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    @property
    def used(self) -> bool:
        return self._handle is not None


def import_usage(
    path: Path,
    options: ImportOptions,
    *,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Import every row of `path`; see the module docstring for the rules."""
    if not path.is_file():
        raise ImportFileError(f"{path} is not a file")
    encoding, warning = (options.encoding, None) if options.encoding else detect_encoding(path)
    fmt = options.format or detect_format(path, encoding)
    summary = ImportSummary(
        path=str(path), format=fmt, encoding=encoding, debit=options.debit, dry_run=options.dry_run
    )
    if warning:
        summary.warnings.append(warning)
    assume_tz = _zone(options.assume_tz)
    if _use_workers(options):
        _import_in_workers(path, summary, options, progress)
        return summary
    with path.open(encoding=encoding, newline="") as handle:
        _Run(summary, options, assume_tz, progress).run(handle, path)
    return summary


def _zone(name: str | None) -> zoneinfo.ZoneInfo | None:
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImportFileError(f"--assume-tz {name!r} is not a known IANA time zone")


Pending = tuple[int, Any, "tuple[UsageEvent, Company] | RowError"]


class _Run:
    """One pass over the file: parse, batch, record, count, reject."""

    def __init__(self, summary, options, assume_tz, progress) -> None:
        self.summary, self.options, self.assume_tz = summary, options, assume_tz
        self.progress = progress
        self.companies = CompanyCache()
        self.rejects: RejectWriter | None = None
        self.ignored: set[str] = set()
        self.share: tuple[int, int] | None = None  # (this worker, workers): rows it records

    def run(self, handle: io.TextIOBase, path: Path) -> None:
        header: list[str] = []
        rows = read_csv(handle, header) if self.summary.format == "csv" else read_jsonl(handle)
        rejects_path = self.options.rejects_path or default_rejects_path(path, self.summary.format)
        self.rejects = RejectWriter(rejects_path, self.summary.format, header)
        batch: list[Pending] = []
        checked = False
        try:
            for line, raw in rows:
                if not checked:
                    self._check_columns(header)
                    checked = True
                if self.share is not None and worker_of(raw, self.share[1]) != self.share[0]:
                    continue
                self.summary.rows += 1
                batch.append(self._parse(line, raw))
                if len(batch) >= self.options.batch_size:
                    self._flush(batch)
            self._flush(batch)
        finally:
            self.rejects.close()
        if self.rejects.used:
            self.summary.rejects_path = str(rejects_path)
        self.summary.ignored_columns = sorted(self.ignored)

    def _check_columns(self, header: list[str]) -> None:
        """A CSV without a required column is refused before any row is imported."""
        if self.summary.format != "csv":
            return
        names = {normalise_column(h) for h in header}
        missing = REQUIRED_COLUMNS - names
        if not names & {"id", "idempotency_key"}:
            missing.add("id")
        if missing:
            raise ImportFileError(
                "missing required column(s): " + ", ".join(sorted(_source_names(missing)))
            )

    def _parse(self, line: int, raw) -> Pending:
        """The row's event and company, or the RowError that rejects it (kept in line order)."""
        if isinstance(raw, RowError):
            return line, raw.raw, raw
        self.ignored.update(k for k in raw if k not in KNOWN_COLUMNS and not k.startswith("_"))
        try:
            event = event_from_row(raw, assume_tz=self.assume_tz)
            return line, raw, (event, self.companies.get(event.company))
        except RowError as exc:
            return line, raw, exc

    def _flush(self, batch: list[Pending]) -> None:
        if not batch:
            return
        valid = [parsed for _, _, parsed in batch if not isinstance(parsed, RowError)]
        record = dry_run_batch if self.options.dry_run else record_batch
        outcomes = iter(record(valid, debit=self.options.debit))
        for line, raw, parsed in batch:
            outcome = parsed if isinstance(parsed, RowError) else next(outcomes)
            self._count(line, raw, outcome)
        batch.clear()
        if self.progress is not None:
            self.progress(self.summary)

    def _count(self, line: int, raw, outcome: Outcome | RowError) -> None:
        if isinstance(outcome, RowError):
            self._reject(line, str(outcome), raw)
        elif isinstance(outcome, ServiceError):
            self._reject(line, f"{outcome.code}: {outcome.message}", raw)
        elif outcome.created:
            self.summary.imported += 1
            if outcome.usage.cost is None:
                self.summary.unpriced += 1
            else:
                self.summary.total_cost += outcome.usage.cost
        else:
            self.summary.replayed += 1

    def _reject(self, line: int, reason: str, raw) -> None:
        self.summary.rejected += 1
        assert self.rejects is not None
        self.rejects.write(line, reason, raw)


def _source_names(names: set[str]) -> set[str]:
    shown = {"company": "company_id", "model": "model_used", "occurred_at": "created_at"}
    return {shown.get(n, n) for n in names}


def default_rejects_path(path: Path, fmt: str) -> Path:
    return path.with_name(path.name + ".rejects" + (".csv" if fmt == "csv" else ".jsonl"))


# --- Several recording processes ---------------------------------------------------------
#
# One process alternates between Python (parsing, validating, building rows) and
# waiting for PostgreSQL, so it keeps about one core busy. Workers are forked
# processes (threads would share the GIL),
# each reading the whole file and recording the rows whose idempotency key
# hashes to it: every row with the same key goes to the same worker in file
# order, so replays and conflicting duplicates come out as in one process. Each
# worker has its own connection and transactions; batches of one company meet on
# its balance row and rollup buckets, which every writer locks in key order.
# Each worker writes its own reject file; they are merged back into line order.


def worker_of(raw: dict[str, Any] | RowError, workers: int) -> int:
    """The worker that records this row: by the idempotency key it will be stored
    under (see event_from_row), so `id` 5 and `idempotency_key` "import:5" meet;
    unreadable rows go to worker 0."""
    if isinstance(raw, RowError):
        return 0
    key = _text(raw, "idempotency_key")
    if key is None:
        key = f"import:{_text(raw, 'id') or ''}"
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % workers


def _use_workers(options: ImportOptions) -> bool:
    """Workers only where they can work: a real import, no open transaction (a worker's
    connection could not see what the caller has not committed)."""
    return options.workers > 1 and not options.dry_run and not connection.in_atomic_block


_COUNTS = ("rows", "imported", "replayed", "rejected", "unpriced", "total_cost")


class WorkerLost(RuntimeError):
    """A worker ended without reporting (killed, or out of memory)."""


def _import_in_workers(
    path: Path,
    summary: ImportSummary,
    options: ImportOptions,
    progress: Callable[[ImportSummary], None] | None,
) -> None:
    """Fork the workers, follow their reports, merge their reject files.

    Each worker has a pipe of its own (the parent notices at once when one ends
    without reporting) and dies with the parent (PR_SET_PDEATHSIG, and a check
    per batch), so stopping the import never leaves workers recording.
    """
    workers = options.workers
    target = options.rejects_path or default_rejects_path(path, summary.format)
    parts = [target.with_name(f"{target.name}.part{k}") for k in range(workers)]
    for part in parts:  # left by an interrupted run: never merged into this one
        part.unlink(missing_ok=True)
    context = multiprocessing.get_context("fork")
    pipes = [context.Pipe(duplex=False) for _ in range(workers)]
    connections.close_all()  # a forked child must not share the parent's socket
    sys.stdout.flush()
    sys.stderr.flush()
    children = []
    with_reports: set[int] = set()
    try:
        with _terminate_raises():
            for k in range(workers):
                job = replace(options, rejects_path=parts[k])
                child = context.Process(
                    target=_worker_main,
                    args=(k, path, summary, job, pipes, os.getpid()),
                    name=f"import-worker-{k}",
                )
                child.start()
                children.append(child)
            for _, sender in pipes:
                sender.close()
            _collect([reader for reader, _ in pipes], summary, progress, with_reports)
    except BaseException:
        _stop(children)
        for part in parts:
            part.unlink(missing_ok=True)
        raise
    _stop(children)
    if _merge_rejects([parts[k] for k in sorted(with_reports)], target, summary.format):
        summary.rejects_path = str(target)


@contextlib.contextmanager
def _terminate_raises():
    """SIGTERM (a cron timeout, a deploy) unwinds the parent, which stops its workers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(children) -> None:
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join()


def _collect(readers: list, summary: ImportSummary, progress, with_reports: set[int]) -> None:
    """Read the workers' reports until every one is done; raise the first failure."""
    counts: dict[int, dict] = {}
    done: set[int] = set()
    open_readers = dict(enumerate(readers))
    while open_readers:
        for reader in multiprocessing.connection.wait(list(open_readers.values())):
            k = next(i for i, r in open_readers.items() if r is reader)
            try:
                kind, payload = reader.recv()
            except EOFError:  # the worker's end closed: it has ended
                del open_readers[k]
                reader.close()
                if k not in done:
                    raise WorkerLost(f"import worker {k} ended without a report")
                continue
            if kind == "file_error":
                raise ImportFileError(payload)
            if kind == "crash":
                raise RuntimeError(f"import worker {k} failed:\n{payload}")
            counts[k] = payload
            for name in _COUNTS:
                zero = Decimal(0) if name == "total_cost" else 0
                setattr(summary, name, sum((c[name] for c in counts.values()), zero))
            if kind == "done":
                done.add(k)
                if payload["rejects"]:
                    with_reports.add(k)
                summary.ignored_columns = sorted({*summary.ignored_columns, *payload["ignored"]})
            elif progress is not None:
                progress(summary)


def _worker_main(
    k: int, path: Path, parent: ImportSummary, options: ImportOptions, pipes, parent_pid: int
) -> None:
    """One forked worker: record this worker's share of the file, report to the parent."""
    _die_with_parent(parent_pid)
    for n, (reader, sender) in enumerate(pipes):  # keep only our own sending end
        reader.close()
        if n != k:
            sender.close()
    report = pipes[k][1]
    try:
        summary = replace(parent, warnings=[], ignored_columns=[])
        run = _Run(summary, options, _zone(options.assume_tz), None)

        def progress(s: ImportSummary) -> None:
            if os.getppid() != parent_pid:  # the parent is gone: stop recording
                raise SystemExit(1)
            report.send(("progress", _counts_of(s)))

        run.progress = progress
        run.share = (k, options.workers)
        with path.open(encoding=summary.encoding, newline="") as handle:
            run.run(handle, path)
        report.send(
            (
                "done",
                {
                    **_counts_of(summary),
                    "ignored": summary.ignored_columns,
                    "rejects": summary.rejects_path is not None,
                },
            )
        )
    except ImportFileError as exc:
        report.send(("file_error", str(exc)))
    except SystemExit:
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            report.send(("crash", traceback.format_exc()))
    finally:
        connections.close_all()
        report.close()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (elsewhere: the per-batch check)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # died before the request took
        os._exit(1)


def _counts_of(summary: ImportSummary) -> dict:
    return {name: getattr(summary, name) for name in _COUNTS}


def _merge_rejects(parts: list[Path], target: Path, fmt: str) -> bool:
    """Merge the workers' reject files (each in line order) into `target`, streaming."""
    present = [p for p in parts if p.exists()]
    if not present:
        return False
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(p.open(encoding="utf-8", newline="")) for p in present]
        out = stack.enter_context(target.open("w", encoding="utf-8", newline=""))
        if fmt == "csv":
            readers = [csv.reader(h) for h in handles]
            heads = [next(r, None) for r in readers]
            writer = csv.writer(out)
            writer.writerow(next(h for h in heads if h is not None))
            streams = [((int(row[0]), row) for row in r) for r in readers]
            for _, row in heapq.merge(*streams, key=lambda item: item[0]):
                writer.writerow(row)
        else:
            streams = [((json.loads(line)["_line"], line) for line in h) for h in handles]
            for _, line in heapq.merge(*streams, key=lambda item: item[0]):
                out.write(line)
    for part in present:
        part.unlink()
    return True
