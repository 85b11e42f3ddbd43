import csv
import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from apps.surveys.models import Survey, SurveyInvitation, SurveyResponse, category_of

PAGES = [
    ("/analytics/deliverability/", ["messaging.view_message"]),
    ("/analytics/retention/", ["customers.view_event"]),
    ("/analytics/nps/", ["surveys.view_surveyresponse"]),
    ("/analytics/journeys/welcome/", ["journeys.view_journey", "messaging.view_message"]),
]


def staff(*perms: str) -> User:
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    return user


@pytest.fixture
def data(customer, journey, enroll, message, event):
    now = timezone.now()
    j = journey()
    c = customer()
    enroll(j, c, at=now - timedelta(days=2), nodes=["welcome"], state="converted",
           finished_at=now - timedelta(days=1))  # fmt: skip
    message(c, at=now - timedelta(days=2), journey=j.slug, status="delivered")
    event(c, "signed_up", at=now - timedelta(days=40))
    event(c, "subscription_started", at=now - timedelta(days=26), mrr=79)
    survey = Survey.objects.create(slug="nps", name="NPS")
    for n, (score, comment) in enumerate([(3, "Too slow <b>"), (10, "Love it"), (8, "")]):
        who = customer()
        inv = SurveyInvitation.objects.create(
            survey=survey, customer=who, channel="email", token=f"t{n}",
            idempotency_key=f"i{n}", created_at=now - timedelta(days=3),
            sent_at=now - timedelta(days=3), expires_at=now + timedelta(days=20),
            responded_at=now - timedelta(days=2),
        )  # fmt: skip
        SurveyResponse.objects.create(
            invitation=inv, customer=who, survey=survey, score=score,
            category=category_of(score), comment=comment, channel="email",
            responded_at=now - timedelta(days=2), updated_at=now - timedelta(days=2),
        )  # fmt: skip
    return j


@pytest.mark.parametrize(("url", "perms"), PAGES)
def test_each_dashboard_renders_for_staff_with_its_view_permissions(client, data, url, perms):
    client.force_login(staff(*perms))
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert "<svg" in body and "Download CSV" in body


@pytest.mark.parametrize(("url", "perms"), PAGES)
def test_staff_without_the_permission_get_403(client, data, url, perms):
    client.force_login(staff())
    assert client.get(url).status_code == 403


@pytest.mark.parametrize(("url", "perms"), PAGES)
def test_anonymous_and_non_staff_users_are_sent_to_the_login(client, data, url, perms):
    assert client.get(url).status_code == 302
    client.force_login(User.objects.create_user("customer", password="x"))
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def _html_table(body: str, name: str) -> list[list[str]]:
    section = body.split(f'data-table="{name}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section, re.S)
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        ]
        for row in rows
    ]


@pytest.mark.parametrize(
    ("url", "perms", "table"),
    [
        ("/analytics/journeys/welcome/", PAGES[3][1], "funnel"),
        ("/analytics/journeys/welcome/", PAGES[3][1], "daily"),
        ("/analytics/deliverability/", PAGES[0][1], "by_template"),
        ("/analytics/retention/", PAGES[1][1], "monthly"),
        ("/analytics/nps/", PAGES[2][1], "distribution"),
        ("/analytics/nps/", PAGES[2][1], "comments"),
    ],
)
def test_the_csv_matches_the_table(client, data, url, perms, table):
    import html

    client.force_login(staff(*perms))
    page = client.get(url).content.decode()
    shown = [[html.unescape(c) for c in row] for row in _html_table(page, table)]
    download = client.get(url, {"csv": table})
    assert download["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.content.decode())))
    assert rows == shown
    assert len(rows) > 1


def test_the_nps_comments_put_detractors_first(client, data):
    client.force_login(staff("surveys.view_surveyresponse"))
    rows = list(
        csv.reader(io.StringIO(client.get("/analytics/nps/", {"csv": "comments"}).content.decode()))
    )
    assert [r[2] for r in rows[1:]] == ["3", "10"]
    assert rows[1][6] == "Too slow <b>"


def test_a_bad_window_is_refused_with_the_reason(client, data):
    client.force_login(staff("messaging.view_message"))
    response = client.get(
        "/analytics/deliverability/", {"start": "2026-03-10", "end": "2026-03-01"}
    )
    assert response.status_code == 400
    assert "end: must be on or after start" in response.content.decode()
    client.force_login(staff_again := User.objects.create_user("r", is_staff=True))
    staff_again.user_permissions.add(Permission.objects.get(codename="view_event"))
    response = client.get("/analytics/retention/", {"months": "0"})
    assert response.status_code == 400
    assert "months: must be between 1 and 36" in response.content.decode()


def test_an_unknown_csv_table_is_404(client, data):
    client.force_login(staff("messaging.view_message"))
    assert client.get("/analytics/deliverability/", {"csv": "nope"}).status_code == 404


def test_the_admin_home_shows_the_marketer_summary(client, data):
    client.force_login(staff("journeys.view_journey"))
    body = client.get("/admin/").content.decode()
    assert 'id="analytics-home"' in body
    assert "Live journeys" in body and "Welcome" in body
    # One promoter, one passive, one detractor: NPS 0, all three invitations answered.
    assert "0.0 (3 responses, 100.0% answered)" in body
