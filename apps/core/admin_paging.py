"""Admin changelists that stay fast at millions of rows."""

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
