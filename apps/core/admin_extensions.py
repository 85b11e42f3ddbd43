"""How the apps above add to a lower app's admin page without importing
upward or replacing its `ModelAdmin`: the lower app offers an
`AdminExtensions` registry beside its admin, and the apps above fill it from
their own admin modules.

    # customers/admin.py (the lower app)
    customer_page = AdminExtensions()

    @admin.register(Customer)
    class CustomerAdmin(ExtendedAdminMixin, admin.ModelAdmin):
        extensions = customer_page

    # segments/admin.py (an app above)
    customer_page.add_inline(SegmentHistoryInline)

Django imports the admin modules in INSTALLED_APPS order, so additions are
shown in that order, after the page's own inlines. A section is HTML shown
below the inlines (a page template renders `extension_sections`)."""

from collections.abc import Callable

from django.contrib.admin.options import InlineModelAdmin
from django.http import HttpRequest

# (request, the object shown) -> its HTML, "" for nothing.
Section = Callable[[HttpRequest, object], str]


class AdminExtensions:
    """Inlines and sections that apps above add to one model's admin page."""

    def __init__(self) -> None:
        self.inlines: list[type[InlineModelAdmin]] = []
        self.sections: list[Section] = []

    def add_inline(self, inline: type[InlineModelAdmin]) -> type[InlineModelAdmin]:
        """Show `inline` after the page's own (usable as a class decorator);
        adding it twice is a no-op."""
        if inline not in self.inlines:
            self.inlines.append(inline)
        return inline

    def add_section(self, section: Section) -> Section:
        """Show what `section` returns below the inlines of an existing
        object's page (usable as a decorator); adding it twice is a no-op."""
        if section not in self.sections:
            self.sections.append(section)
        return section


class ExtendedAdminMixin:
    """A `ModelAdmin` that shows its `extensions` too."""

    extensions: AdminExtensions

    def get_inlines(self, request, obj):
        return (*super().get_inlines(request, obj), *self.extensions.inlines)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["extension_sections"] = [
                section(request, obj) for section in self.extensions.sections
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)
