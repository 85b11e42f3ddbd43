from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.core import jsonsafe
from apps.core.admin_extensions import AdminExtensions, ExtendedAdminMixin
from apps.core.bigtables import EstimatedCountPaginator, ReadOnlyAdminMixin

from . import selectors, services
from .models import ApiKey, Customer, Event, EventStat

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
    list_display = ("external_id", "email", "phone", "plan", "status", "timezone", "last_seen_at")
    search_fields = ("external_id",)  # the search itself is customer_search
    search_help_text = "Exact external id, email or phone."
    list_filter = (PlanFilter, StatusFilter)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    readonly_fields = ("created_at", "updated_at", "last_seen_at", "traits_pretty", "recent_events")
    fieldsets = (
        (None, {"fields": ("external_id", "email", "phone", "timezone", "locale")}),
        ("Traits", {"fields": ("traits_pretty", "traits")}),
        ("Activity", {"fields": ("created_at", "updated_at", "last_seen_at", "recent_events")}),
    )
    inlines = (EventStatInline,)

    def get_search_results(self, request, queryset, search_term):
        return selectors.customer_search(queryset, search_term), False

    def save_model(self, request, obj, form, change):
        services.customer_save(obj, changed=form.changed_data)

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
