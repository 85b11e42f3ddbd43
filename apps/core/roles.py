"""The two roles of issue 7, as auth groups.

`Marketer` edits (add/change/view) segments, templates, journeys (with their
versions) and suppressions, and views everything else of ours; `Viewer` views
everything and changes nothing. No delete for either: segments, templates and
journeys are archived or paused, not removed. Staff users get their powers by
joining a group; the admin, the builder API and the dashboards all check these
same model permissions.

`roles_ensure(apps)` is written against an app registry so the data migration
(`core.0002_roles`, historical models) and tests that flush the database
(the browser tests, the global registry) create exactly the same groups.
"""

from django.contrib.auth.management import create_permissions

MARKETER = "Marketer"
VIEWER = "Viewer"

# The apps whose models the roles cover (auth, sessions and beat stay with superusers).
APPS = ("customers", "segments", "messaging", "journeys", "tracking", "surveys")

MARKETER_EDITS = (
    ("segments", "segment"),
    ("messaging", "template"),
    ("journeys", "journey"),
    ("journeys", "journeyversion"),
    ("messaging", "suppression"),
)


def _ensure_permissions(apps) -> None:
    """Permissions are normally created by post_migrate, after every migration
    has run: on a fresh database they do not exist yet when the migration runs."""
    for label in ("contenttypes", "auth", *APPS):
        app_config = apps.get_app_config(label)
        loaded = getattr(app_config, "models_module", None) is not None
        if not loaded:  # historical app configs have no models module
            app_config.models_module = True
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            if not loaded:
                app_config.models_module = None


def _permission(apps, app_label: str, codename: str):
    Permission = apps.get_model("auth", "Permission")
    try:
        return Permission.objects.get(content_type__app_label=app_label, codename=codename)
    except Permission.DoesNotExist:
        raise RuntimeError(f"roles: permission {app_label}.{codename} is missing") from None


def roles_ensure(apps) -> None:
    """Create the groups if missing and give them their permissions (adding only:
    permissions an administrator added by hand are kept)."""
    _ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    view = [
        _permission(apps, label, f"view_{model._meta.model_name}")
        for label in APPS
        for model in apps.get_app_config(label).get_models()
    ]
    edit = [
        _permission(apps, label, f"{action}_{model}")
        for label, model in MARKETER_EDITS
        for action in ("add", "change")
    ]
    viewer, _ = Group.objects.get_or_create(name=VIEWER)
    viewer.permissions.add(*view)
    marketer, _ = Group.objects.get_or_create(name=MARKETER)
    marketer.permissions.add(*view, *edit)
