from django.core.management.base import BaseCommand

from apps.customers.services import api_key_create


class Command(BaseCommand):
    help = "Create an ingestion API key. The key is printed once, as the last line."

    def add_arguments(self, parser):
        parser.add_argument("name", help="who or what uses the key, e.g. 'backend-prod'")

    def handle(self, *args, name: str, **options):
        api_key, key = api_key_create(name=name)
        self.stderr.write(
            f"Created API key {api_key.name!r} ({api_key.prefix}…). Store it now: it is not "
            "kept and cannot be shown again. Revoke it in the admin."
        )
        self.stdout.write(key)
