"""Admin for tables that grow to millions of append-only rows: counts that do
not scan them, and history that is shown but never edited by hand."""

from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property

EXACT_COUNT_UP_TO = 10_000


class EstimatedCountPaginator(Paginator):
    """Counts exactly when the list is small or filtered; for an unfiltered big
    table on PostgreSQL it uses the planner's row estimate instead of COUNT(*)."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        query = getattr(qs, "query", None)
        if query is not None and not query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [qs.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > EXACT_COUNT_UP_TO:
                return int(row[0])
        return super().count


class ReadOnlyAdminMixin:
    """History (events, memberships, …) is written by the services that keep
    their totals exact; the admin shows it and changes nothing."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
