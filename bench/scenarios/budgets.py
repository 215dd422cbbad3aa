"""11. Budgets under concurrency: N generations start at once against a budget that covers K.

Each generation either reserves its estimate first (POST /reservations' service,
usage.reservations.reserve) or only asks the quota check (usage.quota), then
"generates" (a short sleep, as the LLM call), then reports its actual cost
(the estimate within ±20 %, seeded) and, with a hold, settles it. Reported:
the overspend (spent beyond the limit, as a share of the limit) with and
without reservations, and the latency of a reservation at p50 and p99 while
all N ask at once. Run against a company's monthly limit and a key's daily
limit. :func:`race` is also what tests/api/test_budget_concurrency.py runs.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection

from bench.context import Context
from bench.measure import Result, fill

ZERO = Decimal(0)


@dataclass
class RaceResult:
    limit: Decimal
    started: int = 0  # generations that were let start
    spent: Decimal = ZERO
    # With holds: what the admitted generations cost beyond their estimates (the
    # one estimate error the holds cannot know in advance).
    estimate_error: Decimal = ZERO
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def overspend(self) -> Decimal:
        return max(self.spent - self.limit, ZERO)

    @property
    def overspend_share(self) -> Decimal:
        return self.overspend / self.limit


def race(
    *,
    company,
    key,
    limit: Decimal,
    n: int,
    estimate: Decimal,
    reserve_first: bool,
    seed: int = 1,
    generation_seconds: float = 0.02,
) -> RaceResult:
    """Start `n` generations at once for `company` (sent with `key`); see the module."""
    from usage.errors import BudgetExceeded
    from usage.events import UsageEvent
    from usage.quota import quota_status
    from usage.recording import record_usage
    from usage.reservations import Estimate, reserve

    result = RaceResult(limit=limit)
    lock = threading.Lock()
    barrier = threading.Barrier(n)
    run = uuid.uuid4().hex[:8]

    def generation(i: int) -> None:
        rng = random.Random(seed * 100_003 + i)
        actual = (estimate * Decimal(str(rng.uniform(0.8, 1.2)))).quantize(Decimal("0.000001"))
        hold = None
        barrier.wait()
        t0 = time.perf_counter()
        if reserve_first:
            try:
                hold = reserve(
                    company=company,
                    api_key=key,
                    estimate=Estimate(cost=estimate),
                    idempotency_key=f"race-{run}-{i}",
                ).reservation
            except BudgetExceeded:
                pass
            allowed = hold is not None
        else:
            allowed = quota_status(company, key=key).allowed
        elapsed = (time.perf_counter() - t0) * 1000
        with lock:
            result.latencies_ms.append(elapsed)
        if not allowed:
            return
        time.sleep(generation_seconds * rng.uniform(0.5, 1.5))  # the LLM call
        event = UsageEvent(
            company=str(company.pk),
            idempotency_key=f"race-usage-{run}-{i}",
            model="bench-race",
            prompt_tokens=1000,
            completion_tokens=500,
            draft_job_id=f"race-{run}",
            cost=actual,
            api_key=key,
            reservation_id=str(hold.pk) if hold is not None else None,
        )
        record_usage(event, company=company)
        with lock:
            result.started += 1
            result.spent += actual
            if hold is not None:
                result.estimate_error += max(actual - estimate, ZERO)

    def run_one(i: int) -> None:
        try:
            generation(i)
        except Exception as exc:  # noqa: BLE001 - reported, and the test fails on it
            with lock:
                result.errors.append(f"{i}: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


# --- The scenario ---------------------------------------------------------------------

N, K = 50, 10
ESTIMATE = Decimal("0.05")


def _world(scope: str, tag: str):
    """A fresh company with plenty of credit, the limit of `scope` set at K estimates."""
    from billing.api_keys import create_api_key
    from billing.ledger import post_entry
    from billing.models import Company

    limit = ESTIMATE * K
    company = Company.objects.create(
        name=f"bench budgets {tag}",
        external_id=f"bench-budgets-{tag}-{uuid.uuid4().hex[:8]}",
        monthly_spend_limit=limit if scope == "company" else None,
    )
    post_entry(company=company, kind="purchase", amount="1000", idempotency_key="bench-budget")
    daily = limit if scope == "key" else None
    key, _ = create_api_key(name=f"bench {scope}", company=company, daily_limit=daily)
    return company, key, limit


def budgets(ctx: Context) -> list[Result]:
    from bench.cleanup import delete_companies

    rounds = ctx.repeat or 5
    results = []
    try:
        for scope in ("company", "key"):
            results.append(_measure(ctx, scope, rounds))
        results.append(_one_at_a_time(ctx))
    finally:
        delete_companies("external_id LIKE %s", ["bench-budgets-%"])
    return results


def _measure(ctx: Context, scope: str, rounds: int) -> Result:
    limit_name = "a company's monthly limit" if scope == "company" else "a key's daily limit"
    result = Result(
        name=f"budgets_{scope}",
        title=f"{N} generations at once, budget for {K}: {limit_name}",
        target="overspend with holds: 0 beyond the estimate error of holds in flight",
    )
    with_holds, without, errors, latencies = [], [], [], []
    for r in range(rounds):
        for reserve_first in (True, False):
            company, key, limit = _world(scope, f"{scope}-{r}-{int(reserve_first)}")
            race_result = race(
                company=company,
                key=key,
                limit=limit,
                n=N,
                estimate=ESTIMATE,
                reserve_first=reserve_first,
                seed=r,
            )
            errors += race_result.errors
            if reserve_first:
                with_holds.append(race_result)
                latencies += race_result.latencies_ms
            else:
                without.append(race_result)
            ctx.log(
                f"  {scope} round {r} {'holds' if reserve_first else 'quota only'}: "
                f"started {race_result.started}, overspend {race_result.overspend_share:.1%}"
            )
    fill(result, latencies)  # the reservation's latency, N at once
    worst_holds = max(with_holds, key=lambda x: x.overspend)
    worst_without = max(without, key=lambda x: x.overspend)
    bound_met = all(x.overspend <= x.estimate_error for x in with_holds)
    result.met = bound_met and not errors
    result.notes += [
        f"with reservations: overspend {_share_range(with_holds)} of the limit "
        f"(worst {worst_holds.overspend} of {worst_holds.limit}, within its holds' estimate "
        f"error {worst_holds.estimate_error}: {'yes' if bound_met else 'NO'}); "
        f"started {_range([x.started for x in with_holds])} of {N}",
        f"quota check only: overspend {_share_range(without)} of the limit "
        f"(worst {worst_without.overspend}); started {_range([x.started for x in without])} of {N}",
        f"latency above: one reservation while {N} ask at once for the same company "
        f"(admissions of a company queue on its balance row), {rounds} rounds; "
        f"p50 {result.median:.1f} ms, p99 {result.p99:.1f} ms",
    ]
    if errors:
        result.status = "error"
        result.notes.append(f"{len(errors)} generations failed, first: {errors[0]}")
    return result


def _one_at_a_time(ctx: Context, count: int = 200) -> Result:
    """A reservation's own latency, without others waiting on the same company."""
    from bench.measure import timed
    from usage.reservations import Estimate, reserve

    company, key, _ = _world("key", "single")
    key.daily_limit = Decimal(10**6)  # a limit to check, never reached: every hold admitted
    key.save(update_fields=["daily_limit"])
    counter = iter(range(10**9))

    def once() -> None:
        reserve(
            company=company,
            api_key=key,
            estimate=Estimate(cost=Decimal("0.0001")),
            idempotency_key=f"single-{next(counter)}",
        )

    result = Result(
        name="reserve_one",
        title="POST /reservations' service, one at a time (key with limits)",
        target="a few ms: it is one short transaction",
    )
    fill(result, timed(once, warmup=5, repeat=ctx.repeat * 40 if ctx.repeat else count))
    result.notes.append(f"p99 {result.p99:.1f} ms")
    return result


def _share_range(races: list[RaceResult]) -> str:
    shares = sorted(x.overspend_share for x in races)
    return f"{shares[0]:.1%}–{shares[-1]:.1%}" if shares[0] != shares[-1] else f"{shares[0]:.1%}"


def _range(values: list[int]) -> str:
    return f"{min(values)}–{max(values)}" if min(values) != max(values) else str(values[0])
