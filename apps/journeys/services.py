"""Writes to journey definitions: import, draft edits, publishing (with an
optional move of in-flight customers), pause, resume and archive.

The engine's own writes (enrollments and their steps) live in `engine/`,
`enrollment.py` and `triggers.py`.

Every definition that is stored has passed `graph.parse_journey` and is kept
in its canonical form, so exporting it reads the same however the file was
written and re-importing an export changes nothing. Refusals raise `JourneyError` with
`(path, message)` pairs, like an invalid file, and write nothing.
"""

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Case, CharField, Count, Q, Value, When

from .graph import JourneyDefinition, JourneyError, canonical_journey, parse_journey
from .models import Enrollment, Journey, JourneyVersion

logger = logging.getLogger(__name__)

ARCHIVED_REASON = "journey archived"


# --- the draft ----------------------------------------------------------------------


def journey_import(
    data: Any, *, now: datetime, publish: bool = False, user=None, migrate: dict | None = None
) -> Journey:
    """Create the journey of this file, or replace its draft (found by slug),
    and with `publish` publish it. A file that fails validation, or a publish
    that is refused, writes nothing."""
    definition = parse_journey(data)
    with transaction.atomic():
        journey = Journey.objects.select_for_update().filter(slug=definition.slug).first()
        if journey is None:
            journey = Journey(slug=definition.slug, status=Journey.Status.DRAFT)
        _set_draft(journey, definition)
        journey.save()
        if publish:
            journey_publish(journey, now=now, user=user, migrate=migrate)
    return journey


def journey_draft_save(journey: Journey, data: Any) -> Journey:
    """Save the draft of a journey (the admin's editor, the builder): a new
    journey takes its slug from the file; an existing one keeps its slug,
    which other journeys, messages and files name."""
    definition = parse_journey(data)
    if journey.pk is None:
        if Journey.objects.filter(slug=definition.slug).exists():
            raise JourneyError(
                [("slug", f"a journey {definition.slug!r} exists already; edit that one")]
            )
        journey.slug, journey.status = definition.slug, Journey.Status.DRAFT
    elif definition.slug != journey.slug:
        raise JourneyError(
            [("slug", f"must stay {journey.slug!r}: a journey's slug never changes")]
        )
    _set_draft(journey, definition)
    journey.save()
    return journey


def _set_draft(journey: Journey, definition: JourneyDefinition) -> None:
    journey.draft = canonical_journey(definition)
    journey.name = definition.name
    journey.description = definition.description


def journey_export(journey: Journey, *, version: int | None = None) -> dict[str, Any]:
    """The journey file of the draft, or of published version `version`, in
    canonical form (see graph/checks.py): `journey_import` of it stores the same."""
    if version is None:
        definition = journey.draft or (
            journey.live_version.definition if journey.live_version_id else None
        )
        if not definition:
            raise JourneyError([("draft", f"journey {journey.slug!r} has no definition yet")])
    else:
        found = journey.versions.filter(number=version).values_list("definition", flat=True)
        definition = found.first()
        if definition is None:
            numbers = list(journey.versions.order_by("number").values_list("number", flat=True))
            have = ", ".join(map(str, numbers)) or "none"
            raise JourneyError(
                [("version", f"journey {journey.slug!r} has no version {version} (it has {have})")]
            )
    return canonical_journey(parse_journey(definition, check_refs=False))


# --- publishing ---------------------------------------------------------------------


def journey_publish(
    journey: Journey, *, now: datetime, user=None, migrate: dict | None = None
) -> JourneyVersion:
    """Publish the draft as the next version and make it the live one.

    Customers in flight stay on the version they entered, unless `migrate` is
    `{"mapping": {old_node_id: new_node_id}}`: then every active enrollment
    moves to the new version, at the mapped node (a node the mapping does not
    name keeps its id, if the new version has it), keeping its `next_run_at`,
    so it takes its next step in the new graph. Each node where enrollments
    are must end up at a node of the new version, or nothing is published.

    Publishing a draft identical to the live version (and moving no one) is a
    no-op that returns the live version: `import_journey --publish` of an
    unchanged file creates nothing. A paused journey stays paused (resume it
    to run the new version); an archived one cannot be published.

    Returns the version; its `migrated` attribute is how many enrollments moved.
    """
    with transaction.atomic():
        locked = Journey.objects.select_for_update().get(pk=journey.pk)
        version = _publish(locked, now=now, user=user, migrate=migrate)
    for field in ("live_version", "status", "name", "description", "draft"):
        setattr(journey, field, getattr(locked, field))
    return version


def _publish(journey: Journey, *, now: datetime, user, migrate: dict | None) -> JourneyVersion:
    if journey.status == Journey.Status.ARCHIVED:
        raise JourneyError([("status", "an archived journey cannot be published")])
    if not journey.draft:
        raise JourneyError([("draft", "there is no draft to publish")])
    definition = parse_journey(journey.draft)  # templates may have gone since the import
    canonical = canonical_journey(definition)
    mapping = _mapping(migrate)

    live = journey.live_version
    if live is not None and migrate is None and live.definition == canonical:
        live.migrated = 0
        return live

    last = journey.versions.order_by("-number").values_list("number", flat=True).first()
    version = JourneyVersion.objects.create(
        journey=journey,
        number=(last or 0) + 1,
        definition=canonical,
        published_at=now,
        published_by=user if getattr(user, "pk", None) else None,
    )
    version.migrated = 0
    if mapping is not None:
        version.migrated = _migrate(journey, version, definition, mapping, now=now)
    journey.live_version = version
    journey.name, journey.description = definition.name, definition.description
    if journey.status in (Journey.Status.DRAFT, Journey.Status.LIVE):
        journey.status = Journey.Status.LIVE
    journey.save(update_fields=["live_version", "status", "name", "description", "updated_at"])
    logger.info(
        "journey %s: published v%s (%s enrollments moved)",
        journey.slug,
        version.number,
        version.migrated,
    )
    return version


def _mapping(migrate: Any) -> dict[str, str] | None:
    if migrate is None:
        return None
    if not isinstance(migrate, dict) or set(migrate) - {"mapping"}:
        raise JourneyError([("migrate", 'must be {"mapping": {old node id: new node id}}')])
    mapping = migrate.get("mapping") or {}
    if not isinstance(mapping, dict):
        raise JourneyError([("migrate.mapping", "must be an object of old id → new id")])
    bad = [
        (f"migrate.mapping[{k}]", "old and new node ids must be strings")
        for k, v in mapping.items()
        if not isinstance(k, str) or not isinstance(v, str)
    ]
    if bad:
        raise JourneyError(bad)
    return mapping


def _migrate(
    journey: Journey,
    version: JourneyVersion,
    definition: JourneyDefinition,
    mapping: dict[str, str],
    *,
    now: datetime,
) -> int:
    """Move every active enrollment of the journey to `version` (see
    `journey_publish`). Refuses, naming the nodes, when a node with enrollments
    has nowhere to go, and when the engine is advancing some of them right now
    (their step would land on the old graph): pause first, or retry."""
    active = Enrollment.objects.filter(journey=journey, state=Enrollment.State.ACTIVE).exclude(
        journey_version=version
    )
    occupied = dict(
        active.order_by()
        .values_list("current_node")
        .annotate(n=Count("id"))
        .values_list("current_node", "n")
    )
    errors = [
        (f"migrate.mapping[{old}]", f"unknown node {new!r} in the new version")
        for old, new in mapping.items()
        if not definition.has_node(new)
    ]
    targets: dict[str, str] = {}
    for node_id, count in sorted(occupied.items()):
        if not node_id:
            continue  # not started yet: it starts at the new version's start
        new = mapping.get(node_id, node_id)
        if not definition.has_node(new):
            if node_id not in mapping:
                errors.append(
                    (
                        f"migrate.mapping[{node_id}]",
                        f"{count} enrollment(s) are at {node_id!r}, which the new version does "
                        "not have: map it to one of its nodes",
                    )
                )
            continue
        targets[node_id] = new
    if errors:
        raise JourneyError(errors)

    # One pass over the journey's active enrollments, whatever the number of nodes.
    free = Q(lease_until__isnull=True) | Q(lease_until__lte=now)
    movable = [*targets, *([""] if "" in occupied else [])]
    whens = [When(current_node=old, then=Value(new)) for old, new in targets.items()]
    moved = (
        active.filter(free, current_node__in=movable)
        .order_by()
        .update(
            journey_version=version,
            current_node=Case(*whens, default=Value(""), output_field=CharField()),
        )
    )
    # Rows the engine claimed (or moved on) meanwhile kept their version: the
    # UPDATE skipped them (after waiting for a claim to commit),
    # so this sees them.
    busy = active.count()
    if busy:
        raise JourneyError(
            [
                (
                    "migrate",
                    f"{busy} enrollment(s) are being advanced right now; pause the journey, "
                    "then publish with the mapping (or try again in a few seconds)",
                )
            ]
        )
    return moved


# --- pause, resume, archive ---------------------------------------------------------------


def journey_pause(journey: Journey, *, now: datetime) -> Journey:
    """Stop advancing: the engine skips a paused journey's enrollments and
    triggers enroll no one. Waits keep their due time; on resume the overdue
    steps run, sends older than `JOURNEY_RESUME_STALENESS` skipped (see
    `selectors.is_stale`)."""
    return _set_status(
        journey,
        now=now,
        allowed=(Journey.Status.LIVE,),
        status=Journey.Status.PAUSED,
        paused_at=now,
        refusal="only a live journey can be paused",
    )


def journey_resume(journey: Journey, *, now: datetime) -> Journey:
    """Run a paused journey again; overdue steps catch up (see journey_pause)."""
    return _set_status(
        journey,
        now=now,
        allowed=(Journey.Status.PAUSED,),
        status=Journey.Status.LIVE,
        paused_at=None,
        refusal="only a paused journey can be resumed",
    )


def journey_archive(journey: Journey, *, now: datetime) -> int:
    """Retire the journey: its active enrollments end as exited ("journey
    archived") and no one enters again. Returns how many enrollments ended."""
    with transaction.atomic():
        _set_status(
            journey,
            now=now,
            allowed=(Journey.Status.DRAFT, Journey.Status.LIVE, Journey.Status.PAUSED),
            status=Journey.Status.ARCHIVED,
            paused_at=None,
            refusal="the journey is already archived",
        )
        ended = (
            Enrollment.objects.filter(journey=journey, state=Enrollment.State.ACTIVE)
            .order_by()
            .update(
                state=Enrollment.State.EXITED,
                exit_reason=ARCHIVED_REASON,
                finished_at=now,
                next_run_at=None,
                lease_until=None,
                lease_token="",
            )
        )
    logger.info("journey %s: archived, %s active enrollments exited", journey.slug, ended)
    return ended


def _set_status(
    journey: Journey,
    *,
    now: datetime,
    allowed: tuple[str, ...],
    status: str,
    paused_at: datetime | None,
    refusal: str,
) -> Journey:
    with transaction.atomic():
        locked = Journey.objects.select_for_update().values_list("status", flat=True)
        current = locked.get(pk=journey.pk)
        if current not in allowed:
            label = Journey.Status(current).label.lower()
            raise JourneyError([("status", f"{refusal} (it is {label})")])
        Journey.objects.filter(pk=journey.pk).update(
            status=status, paused_at=paused_at, updated_at=now
        )
    journey.status, journey.paused_at = status, paused_at
    return journey
