#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    if not settings.DATABASE_URL:
        # The embedded PostgreSQL (config/embedded_postgres.py): started if it
        # is not running, and left running for the next command; run_local
        # (make run) stops it on Ctrl-C.
        from config import embedded_postgres

        embedded_postgres.ensure_running(settings.DATA_DIR)
    execute_from_command_line(sys.argv)
