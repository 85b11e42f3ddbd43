"""`{% customer_360 original %}`: the Customer 360 sections on the customer's
admin page (templates/admin/customers/customer/change_form.html)."""

from django import template

from apps.core.customer360 import customer_360

register = template.Library()


@register.inclusion_tag("admin/customers/customer/customer_360.html", takes_context=True)
def customer_360_sections(context, customer):
    return {"customer": customer, "view": customer_360(customer, user=context["request"].user)}
