"""Admin changelist paging that never counts a big table in full.

Django's changelist asks its paginator for `count`, which is a `COUNT(*)` of
the filtered queryset: a full scan of 10M usage rows (about a second) on every
page. `CappedCountPaginator` counts at most `cap` rows instead
(`SELECT count(*) FROM (... LIMIT cap)`), which is exact for small results and
cheap for big ones; when the cap is reached it shows "about N" (the planner's
`pg_class.reltuples`) for an unfiltered table, or "more than N" for a filtered
one. `templates/admin/pagination.html` prints `count_label`.
"""

from __future__ import annotations

from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """A paginator whose count reads at most `cap + 1` rows of the queryset."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.exact = counted <= self.cap
        if self.exact:
            return counted
        if not self.object_list.query.where:
            estimate = table_estimate(self.object_list)
            if estimate > self.cap:
                self.estimated = True
                return estimate
        # Pages past the cap can still be reached by their number; they are
        # just not offered as links.
        return self.cap + 1

    exact = True
    estimated = False

    @property
    def count_label(self) -> str:
        """What the changelist prints as its result count."""
        count = self.count
        if self.exact:
            return f"{count:,}"
        if self.estimated:
            return f"about {count:,}"
        return f"more than {self.cap:,}"


def table_estimate(queryset) -> int:
    """The planner's row estimate of the queryset's table (0 when unknown)."""
    connection = connections[queryset.db]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row else 0


class CappedCountMixin:
    """For ModelAdmins of big tables: capped count, no second full count, no facets.

    Facets ("Show counts") count every filter choice over the whole filtered
    table: a full scan per page at 10M rows.
    """

    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
