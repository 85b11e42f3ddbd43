import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the local admin user on first run (random password kept in the data "
        "folder) and print its credentials. For local use by `make run`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        secret_file = settings.DATA_DIR / "admin_password"
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None or not secret_file.exists():
            password = secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser(username, "admin@example.com", password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            secret_file.write_text(password)
            secret_file.chmod(0o600)
        password = secret_file.read_text().strip()
        self.stdout.write(
            self.style.SUCCESS(
                f"Admin: http://127.0.0.1:8000/admin/  user: {username}  password: {password}"
            )
        )
