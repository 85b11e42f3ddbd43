"""NPS on the dashboards: the distribution of scores and the comments worth
reading first (the summaries themselves are apps.surveys.selectors')."""

from datetime import datetime

from django.db.models import Case, Count, IntegerField, Value, When


def nps_distribution(*, start: datetime, end: datetime, **filters) -> list[tuple[int, int]]:
    """(score, responses) for every score 0..10, zeros included."""
    from apps.surveys import selectors as surveys

    counts = dict(
        surveys.responses(start=start, end=end, **filters)
        .values("score")
        .annotate(n=Count("id"))
        .values_list("score", "n")
    )
    return [(score, counts.get(score, 0)) for score in range(11)]


def nps_comments(*, start: datetime, end: datetime, limit: int = 50, **filters) -> list:
    """Responses with a comment: detractors first, then passives, then
    promoters, the latest first within each."""
    from apps.surveys import selectors as surveys
    from apps.surveys.models import Category

    rank = Case(
        When(category=Category.DETRACTOR, then=Value(0)),
        When(category=Category.PASSIVE, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    qs = surveys.responses(start=start, end=end, **filters).exclude(comment="")
    return list(
        qs.annotate(rank=rank)
        .select_related("customer", "survey", "invitation")
        .order_by("rank", "-responded_at", "-pk")[:limit]
    )
