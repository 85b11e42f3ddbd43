import json

from django.contrib import admin, messages
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from apps.core import jsonsafe
from apps.core.admin_extensions import AdminExtensions, ExtendedAdminMixin
from apps.core.bigtables import (
    EXACT_COUNT_UP_TO,
    EstimatedCountPaginator,
    ReadOnlyAdminMixin,
    ShownOnlyFormSet,
    ShownOnlyInline,
)

from . import selectors, services
from .models import Account, AccountMembership, ApiKey, Customer, Event, EventStat
from .services.touch import account_members_touch

# What the apps above add to the customer's page (customers never imports
# them): segment history (segments), journeys (journeys), Customer 360
# (analytics), from their own admin modules.
customer_page = AdminExtensions()


def _traits_preview(customer: Customer) -> tuple[str, bool]:
    """The customer's traits as shown (cut short if need be), and whether they
    were cut; worked out once per page."""
    if not hasattr(customer, "_traits_preview"):
        customer._traits_preview = jsonsafe.preview(customer.traits)
    return customer._traits_preview


def _trait(customer: Customer, name: str) -> str:
    """A trait for a list column, bounded; blank if the traits are not an
    object (an older version stored whatever it was given)."""
    traits = customer.traits
    value = traits.get(name, "") if isinstance(traits, dict) else ""
    if isinstance(value, str):
        return value if len(value) <= 100 else value[:100] + jsonsafe.ELLIPSIS
    return jsonsafe.preview(value, indent=None, max_chars=100)[0]


class TraitFilter(admin.SimpleListFilter):
    """Filter customers by the value of one trait."""

    trait = ""

    def lookups(self, request, model_admin):
        return [(v, v) for v in selectors.trait_values(self.trait)]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{f"traits__{self.trait}": value}) if value else queryset


class PlanFilter(TraitFilter):
    title = parameter_name = trait = "plan"


class StatusFilter(TraitFilter):
    title = parameter_name = trait = "status"


class ProfileFilter(admin.SimpleListFilter):
    """Known customers by default (identified, not merged: those segments,
    journeys and counts see); anonymous visitors, merged profiles or everyone
    on request."""

    title = "profile"
    parameter_name = "profile"
    ALL = "all"

    def lookups(self, request, model_admin):
        return [
            ("anonymous", "Anonymous visitors"),
            ("merged", "Merged into another"),
            (self.ALL, "All profiles"),
        ]

    def choices(self, changelist):
        value = self.value()
        yield {
            "selected": value is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Known customers",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value()
        if value == "anonymous":
            return queryset.anonymous()
        if value == "merged":
            return queryset.merged()
        if value == self.ALL:
            return queryset
        return queryset.known()


class AccountMemberFilter(admin.SimpleListFilter):
    """The members of one account (`?account=<id>`, linked from the account's
    page); shown only while it is applied (listing every account as a choice
    would not scale)."""

    title = "account"
    parameter_name = "account"

    def lookups(self, request, model_admin):
        value = self.value()
        if not value:
            return []
        account = Account.objects.filter(pk=value).first() if value.isdigit() else None
        return [(value, str(account) if account else "no such account")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(account_memberships__account_id=int(value))


class PlannedCountPaginator(EstimatedCountPaginator):
    """EstimatedCountPaginator for a list that is always filtered (customers:
    known ones by default): past EXACT_COUNT_UP_TO rows by the planner's
    estimate, the planner's estimate stands in for COUNT(*), which would
    read a million customers on every page of the list."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is None or not query.where:
            return super().count
        try:
            sql, params = query.sql_with_params()
        except EmptyResultSet:  # a filter that can match nothing
            return 0
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if estimate > EXACT_COUNT_UP_TO:
            return estimate
        return self.object_list.count()


_IDENTITY_FIELDS = ("anonymous_id", "profile")


class EventStatInline(admin.TabularInline):
    model = EventStat
    fields = readonly_fields = ("name", "count", "first_at", "last_at")
    ordering = ("-last_at",)
    extra = 0
    can_delete = False
    verbose_name_plural = "Event totals"

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Customer)
class CustomerAdmin(ExtendedAdminMixin, admin.ModelAdmin):
    extensions = customer_page
    list_display = ("who", "email", "phone", "plan", "status", "timezone", "last_seen_at")
    search_fields = ("external_id",)  # the search itself is customer_search
    search_help_text = (
        "Exact external id, anonymous id, email or phone (among known customers unless "
        "Profile says otherwise)."
    )
    list_filter = (ProfileFilter, PlanFilter, StatusFilter, AccountMemberFilter)
    show_full_result_count = False
    paginator = PlannedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    readonly_fields = (
        *_IDENTITY_FIELDS,
        "created_at",
        "updated_at",
        "last_seen_at",
        "traits_pretty",
        "recent_events",
    )
    fieldsets = (
        (None, {"fields": ("external_id", *_IDENTITY_FIELDS, "email", "phone", "timezone",
                           "locale")}),
        ("Traits", {"fields": ("traits_pretty", "traits")}),
        ("Activity", {"fields": ("created_at", "updated_at", "last_seen_at", "recent_events")}),
    )  # fmt: skip
    inlines = (EventStatInline,)

    def get_readonly_fields(self, request, obj=None):
        # Ids come from the business's product (identify, alias): changing one
        # by hand would split a customer from its history, and clearing it
        # would leave a profile with no id at all.
        if obj is not None:
            return ("external_id", *self.readonly_fields)
        return self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None and "external_id" in form.base_fields:
            form.base_fields["external_id"].required = True  # a customer added by hand
        return form

    def get_search_results(self, request, queryset, search_term):
        return selectors.customer_search(queryset, search_term), False

    def save_model(self, request, obj, form, change):
        services.customer_save(obj, changed=form.changed_data)

    @admin.display(description="customer", ordering="external_id")
    def who(self, obj):
        if obj.merged_into_id is not None:
            return f"{obj} (merged)"
        return str(obj)

    @admin.display(description="profile")
    def profile(self, obj):
        if obj.pk is None:
            return "-"
        if obj.merged_into_id is not None:
            return format_html(
                'Merged into <a href="{}">{}</a> on {}. Its ids resolve to that customer.',
                reverse("admin:customers_customer_change", args=[obj.merged_into_id]),
                obj.merged_into,
                timezone.localtime(obj.merged_at).strftime("%Y-%m-%d %H:%M")
                if obj.merged_at
                else "?",
            )
        if obj.external_id is None:
            return (
                "Anonymous visitor: receives no messages, belongs to no segment, and is "
                "deleted if not identified in time."
            )
        return "Known customer."

    @admin.display(description="plan")
    def plan(self, obj):
        return _trait(obj, "plan")

    @admin.display(description="status")
    def status(self, obj):
        return _trait(obj, "status")

    def get_fieldsets(self, request, obj=None):
        # Traits too deep or too big to show in full are not offered for editing:
        # the form would write out every byte of them (and raise RecursionError
        # past some hundreds of levels). They are shown cut short instead.
        if obj is not None and _traits_preview(obj)[1]:
            return tuple(
                (name, {**options, "fields": tuple(f for f in options["fields"] if f != "traits")})
                for name, options in self.fieldsets
            )
        return super().get_fieldsets(request, obj)

    @admin.display(description="Traits (read)")
    def traits_pretty(self, obj):
        text, cut = _traits_preview(obj)
        if cut:
            return format_html(
                "<pre>{}</pre><p>Shown cut short ({}); too big or too deep to edit here.</p>",
                text,
                jsonsafe.ELLIPSIS,
            )
        return format_html("<pre>{}</pre>", text)

    @admin.display(description="Recent events")
    def recent_events(self, obj):
        events = selectors.customer_recent_events(obj)
        if not events:
            return "No events yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    timezone.localtime(e.occurred_at).strftime("%Y-%m-%d %H:%M"),
                    e.name,
                    jsonsafe.preview(e.properties, indent=None, max_chars=500)[0],
                )
                for e in events
            ),
        )
        return format_html(
            "<table><thead><tr><th>When (UTC)</th><th>Event</th><th>Properties</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read only: events are history, and EventStat must stay exact."""

    list_display = ("name", "customer", "occurred_at", "received_at", "message_id")
    fields = ("customer", "name", "properties_pretty", "occurred_at", "received_at", "message_id")
    readonly_fields = ("properties_pretty",)
    list_select_related = ("customer",)
    search_fields = ("name",)  # the search itself is event_search
    search_help_text = "Exact customer external id, event name or message id."
    raw_id_fields = ("customer",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-id",)

    def get_search_results(self, request, queryset, search_term):
        return selectors.event_search(queryset, search_term), False

    @admin.display(description="Properties")
    def properties_pretty(self, obj):
        # Bounded: properties stored by older versions may be huge or deep.
        return format_html("<pre>{}</pre>", jsonsafe.preview(obj.properties)[0])


class AccountMembersFormSet(ShownOnlyFormSet):
    """The account's members, the most recently grouped first."""

    shown = 100

    def rows(self):
        return self.instance.memberships.select_related("customer").order_by("-grouped_at", "-id")


class AccountMembersInline(ShownOnlyInline):
    model = AccountMembership
    formset = AccountMembersFormSet
    template = "admin/customers/account_members_inline.html"
    fields = readonly_fields = ("customer", "created_at", "grouped_at")
    verbose_name_plural = "Members"


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """Accounts come from `group` calls: shown, searched and deletable (its
    members are then stamped, so their segments see it), never edited here."""

    list_display = ("external_id", "name", "plan", "members", "updated_at")
    search_fields = ("external_id", "name")  # the search itself is below
    search_help_text = "Exact group id, part of the name, or a member's exact external id."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    fields = ("external_id", "name", "traits_pretty", "created_at", "updated_at")
    readonly_fields = fields
    inlines = (AccountMembersInline,)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_search_results(self, request, queryset, search_term):
        return selectors.account_search(queryset, search_term), False

    def delete_model(self, request, obj):
        account_members_touch([obj.pk])
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        account_members_touch(queryset.values_list("pk", flat=True))
        super().delete_queryset(request, queryset)

    @admin.display(description="plan")
    def plan(self, obj):
        return _trait(obj, "plan")

    @admin.display(description="members")
    def members(self, obj):
        return format_html(
            '<a href="{}?account={}&amp;profile=all">{}</a>',
            reverse("admin:customers_customer_changelist"),
            obj.pk,
            obj.memberships.count(),
        )

    @admin.display(description="Traits")
    def traits_pretty(self, obj):
        return format_html("<pre>{}</pre>", jsonsafe.preview(obj.traits)[0])


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        api_key, key = services.api_key_create(name=obj.name)
        obj.pk = api_key.pk
        obj.refresh_from_db()
        messages.warning(request, f"New API key (shown once, store it now): {key}")

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for api_key in queryset:
            services.api_key_revoke(api_key, now=timezone.now())
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
