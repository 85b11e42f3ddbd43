"""What analytics adds to other apps' admin pages: the Customer 360 sections
on the customer's page (apps/analytics/customer360.py), through customers'
`customer_page` registry."""

from apps.customers.admin import customer_page

from .customer360 import customer_360_section

customer_page.add_section(customer_360_section)
