"""Admin for tables that grow to millions of append-only rows: counts that do
not scan them, and history that is shown but never edited by hand."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.forms.models import BaseInlineFormSet
from django.utils.functional import cached_property

EXACT_COUNT_UP_TO = 10_000


class EstimatedCountPaginator(Paginator):
    """Counts exactly when the list is small or filtered; for an unfiltered big
    table it uses the planner's row estimate instead of COUNT(*)."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        query = getattr(qs, "query", None)
        if query is not None and not query.where:
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


class ShownOnlyFormSet(BaseInlineFormSet):
    """An inline of history, shown and never posted: the parent form's POST
    carries nothing for it, so it is never bound, always valid and saves
    nothing. At most `shown` rows of `rows()` (None: all of them); `has_more`
    says whether there are others, `total` how many there are in all."""

    shown: int | None = 100

    def __init__(self, data=None, files=None, *args, **kwargs):
        super().__init__(None, None, *args, **kwargs)

    def rows(self):
        """Every row, in the order shown: by default the inline's queryset."""
        return super().get_queryset()

    def get_queryset(self):
        if not hasattr(self, "_shown_rows"):
            rows = self.rows()
            self._shown_rows = rows if self.shown is None else rows[: self.shown]
        return self._shown_rows

    @cached_property
    def has_more(self) -> bool:
        return self.shown is not None and self.rows()[self.shown : self.shown + 1].exists()

    @cached_property
    def total(self) -> int:
        return self.rows().count() if self.has_more else len(self.get_queryset())

    def is_valid(self) -> bool:
        return True

    def save(self, commit=True):
        self.new_objects, self.changed_objects, self.deleted_objects = [], [], []
        return []


class ShownOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """A tabular inline of history (`ShownOnlyFormSet`): nothing added,
    changed or deleted from the page."""

    formset = ShownOnlyFormSet
    extra = 0
    can_delete = False
