import io
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.segments import admin as segments_admin
from apps.segments import views
from apps.segments.models import Segment, SegmentMembership, SegmentSnapshot

pytestmark = pytest.mark.django_db

PRO = {"trait": "plan", "op": "eq", "value": "pro"}


@pytest.fixture
def customers():
    """Five customers: u-1..u-3 on pro (u-3 churned), u-4 and u-5 on starter;
    u-1 logged in yesterday."""
    now = timezone.now()
    people = [
        ("u-1", "pro", "active"),
        ("u-2", "pro", "active"),
        ("u-3", "pro", "churned"),
        ("u-4", "starter", "trialing"),
        ("u-5", "starter", "active"),
    ]
    ingest(
        [
            *(
                IdentifyIn(
                    userId=uid, traits={"email": f"{uid}@example.com", "plan": plan, "status": st}
                )
                for uid, plan, st in people
            ),
            TrackIn(userId="u-1", event="login", timestamp=now - timedelta(days=1)),
        ],
        received_at=now,
    )
    return {c.external_id: c for c in Customer.objects.all()}


def segment_form(**overrides) -> dict:
    data = {
        "name": "Pro customers",
        "slug": "pro",
        "description": "",
        "kind": "dynamic",
        "is_active": "on",
        "definition": '{"trait": "plan", "op": "eq", "value": "pro"}',
    }
    return {**data, **overrides}


def make_segment(slug: str, definition=None, **fields) -> Segment:
    return Segment.objects.create(
        slug=slug, name=fields.pop("name", slug.title()), definition=definition, **fields
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- create and edit ------------------------------------------------------------------


def test_a_segment_with_a_valid_definition_is_saved_from_the_admin_form(admin_client):
    response = admin_client.post(reverse("admin:segments_segment_add"), segment_form())

    assert response.status_code == 302, response.content.decode()
    segment = Segment.objects.get(slug="pro")
    assert segment.definition == PRO
    assert segment.kind == Segment.Kind.DYNAMIC


def test_an_invalid_definition_is_shown_at_the_field_with_its_path_and_nothing_is_saved(
    admin_client,
):
    definition = (
        '{"all": [{"trait": "plan", "op": "eq", "value": "pro"},'
        ' {"any": [{"trait": "status", "op": "eqq", "value": "active"}]}]}'
    )

    response = admin_client.post(
        reverse("admin:segments_segment_add"), segment_form(definition=definition)
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["definition"]
    assert errors["definition"][0].startswith("all[1].any[0]: unknown op 'eqq'")
    assert "all[1].any[0]: unknown op &#x27;eqq&#x27;" in response.content.decode()
    assert not Segment.objects.exists()


def test_a_json_syntax_error_says_where_it_is(admin_client):
    response = admin_client.post(
        reverse("admin:segments_segment_add"),
        segment_form(definition='{"trait": "plan",\n "op": "eq" "value": "pro"}'),
    )

    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["definition"]
    assert error == "Not valid JSON: Expecting ',' delimiter (line 2, column 13)."
    # The marketer's text comes back as typed, to be fixed.
    assert "&quot;op&quot;: &quot;eq&quot; &quot;value&quot;" in response.content.decode()
    assert not Segment.objects.exists()


def test_a_dynamic_segment_needs_a_definition_and_a_static_one_has_none(admin_client):
    url = reverse("admin:segments_segment_add")

    dynamic = admin_client.post(url, segment_form(definition=""))
    static_with_one = admin_client.post(url, segment_form(kind="static"))
    static = admin_client.post(url, segment_form(kind="static", slug="vip", definition="  "))

    assert dynamic.context["adminform"].form.errors["definition"] == [
        "A dynamic segment needs a condition."
    ]
    assert "static segment has no condition" in str(
        static_with_one.context["adminform"].form.errors["definition"]
    )
    assert static.status_code == 302
    assert Segment.objects.get().definition is None


def test_a_condition_referring_back_to_its_own_segment_is_refused(admin_client):
    trialing = make_segment("trialing", {"trait": "status", "op": "eq", "value": "trialing"})
    make_segment("not-trialing", {"not": {"segment": "trialing"}})

    response = admin_client.post(
        reverse("admin:segments_segment_change", args=[trialing.pk]),
        segment_form(name="Trialing", definition='{"any": [{"segment": "not-trialing"}]}'),
    )

    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["definition"]
    assert "segment 'trialing' refers back to itself (trialing → not-trialing → trialing)" in error
    trialing.refresh_from_db()
    assert trialing.definition == {"trait": "status", "op": "eq", "value": "trialing"}


def test_the_slug_cannot_change_once_the_segment_exists(admin_client):
    segment = make_segment("pro", PRO, name="Pro")

    response = admin_client.post(
        reverse("admin:segments_segment_change", args=[segment.pk]),
        segment_form(name="Pro plan", slug="renamed"),
    )

    assert response.status_code == 302
    segment.refresh_from_db()
    assert (segment.slug, segment.name) == ("pro", "Pro plan")


def test_the_change_page_has_the_editor_the_examples_and_the_operator_reference(admin_client):
    segment = make_segment("pro", PRO, name="Pro")

    response = admin_client.get(reverse("admin:segments_segment_change", args=[segment.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    # Pretty-printed in a monospace editor, with the examples beside it.
    assert "{\n  &quot;trait&quot;: &quot;plan&quot;,\n  &quot;op&quot;: &quot;eq&quot;" in html
    assert 'class="condition-editor' in html
    assert "No login for 14 days" in html
    assert 'id="condition-examples-data"' in html
    assert f'data-preview-url="{reverse("admin:segments_segment_preview")}"' in html
    assert 'data-slug="pro"' in html
    reference = html[html.index('class="condition-reference"') :]
    reference = reference[: reference.index("</details>")]
    for op in (
        *("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists"),
        *("not_exists", "within_next", "within_last", "before_days_ago", "after_days_ago"),
        *("count_gte", "count_lt", "since", "not_since", "dropped_by"),
    ):
        assert f"<code>{op}</code>" in reference, op


# --- preview ---------------------------------------------------------------------------


def test_the_preview_counts_and_samples_an_unsaved_definition_without_saving(
    admin_client, customers
):
    definition = (
        '{"all": [{"trait": "plan", "op": "eq", "value": "pro"},'
        ' {"trait": "status", "op": "ne", "value": "churned"}]}'
    )

    response = admin_client.post(
        reverse("admin:segments_segment_preview"), {"definition": definition, "slug": "new"}
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 2
    assert body["sample"] == [
        {
            "external_id": uid,
            "email": f"{uid}@example.com",
            "plan": "pro",
            "status": "active",
            "url": reverse("admin:customers_customer_change", args=[customers[uid].pk]),
        }
        for uid in ("u-2", "u-1")  # newest customers first
    ]
    assert not Segment.objects.exists()
    assert not SegmentMembership.objects.exists()


def test_the_preview_evaluates_event_conditions_as_of_now(admin_client, customers):
    response = admin_client.post(
        reverse("admin:segments_segment_preview"),
        {"definition": '{"event": "login", "op": "since", "days": 7}'},
    )

    assert response.json()["count"] == 1
    assert [c["external_id"] for c in response.json()["sample"]] == ["u-1"]


def test_the_preview_shows_at_most_twenty_customers(admin_client):
    ingest(
        [IdentifyIn(userId=f"c-{i:02}", traits={"plan": "pro"}) for i in range(25)],
        received_at=timezone.now(),
    )

    body = admin_client.post(
        reverse("admin:segments_segment_preview"), {"definition": '{"trait": "plan", "op": '
        '"eq", "value": "pro"}'}
    ).json()  # fmt: skip

    assert body["count"] == 25
    assert len(body["sample"]) == views.PREVIEW_SAMPLE == 20


def test_the_preview_of_an_invalid_definition_is_its_error(admin_client, customers):
    url = reverse("admin:segments_segment_preview")

    bad_op = admin_client.post(url, {"definition": '{"not": {"trait": "plan", "op": "eqq"}}'})
    unknown = admin_client.post(url, {"definition": '{"segment": "nope"}'})
    empty = admin_client.post(url, {"definition": ""})

    assert bad_op.status_code == 400
    assert bad_op.json()["error"].startswith("not: unknown op 'eqq'")
    assert unknown.json()["error"] == "condition: unknown segment 'nope'"
    assert empty.json()["error"] == "Write a condition to preview."


def test_the_preview_is_for_staff_only_and_csrf_protected(client, admin_user, django_user_model):
    url = reverse("admin:segments_segment_preview")
    data = {"definition": '{"trait": "plan", "op": "exists"}'}
    client.force_login(django_user_model.objects.create_user("visitor", password="x" * 12))
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(admin_user)

    not_staff = client.post(url, data)
    no_token = csrf_client.post(url, data)
    a_get = csrf_client.get(url)
    client.force_login(
        django_user_model.objects.create_user("intern", password="x" * 12, is_staff=True)
    )
    no_permission = client.post(url, data)

    assert no_permission.status_code == 403
    assert not_staff.status_code == 302
    assert not_staff["Location"].startswith(reverse("admin:login"))
    assert no_token.status_code == 403
    assert a_get.status_code == 405


# --- refresh, members, chart -------------------------------------------------------------


def test_refresh_now_refreshes_the_selected_segments(admin_client, customers):
    pro = make_segment("pro", PRO, name="Pro")
    starter = make_segment("starter", {"trait": "plan", "op": "eq", "value": "starter"})
    untouched = make_segment("churned", {"trait": "status", "op": "eq", "value": "churned"})

    response = admin_client.post(
        reverse("admin:segments_segment_changelist"),
        {"action": "refresh_now", "_selected_action": [pro.pk, starter.pk]},
        follow=True,
    )

    assert response.status_code == 200
    pro.refresh_from_db()
    starter.refresh_from_db()
    untouched.refresh_from_db()
    assert (pro.member_count, starter.member_count) == (3, 2)
    assert pro.refreshed_at is not None
    assert untouched.refreshed_at is None
    assert set(
        SegmentMembership.objects.filter(segment=pro).values_list(
            "customer__external_id", flat=True
        )
    ) == {"u-1", "u-2", "u-3"}
    assert "Pro: 3 members, 3 entered, 0 exited" in " ".join(messages_of(response))


def test_a_failing_refresh_is_reported_and_does_not_stop_the_others(admin_client, customers):
    broken = make_segment("broken", {"segment": "gone"}, name="Broken")
    pro = make_segment("pro", PRO, name="Pro")
    static = make_segment("vip", kind=Segment.Kind.STATIC, name="VIP")

    response = admin_client.post(
        reverse("admin:segments_segment_changelist"),
        {"action": "refresh_now", "_selected_action": [broken.pk, pro.pk, static.pk]},
        follow=True,
    )

    text = " ".join(messages_of(response))
    assert "Broken: refresh failed: ConditionError: condition: unknown segment 'gone'" in text
    assert "VIP is static" in text
    pro.refresh_from_db()
    assert pro.member_count == 3
    changelist = admin_client.get(reverse("admin:segments_segment_changelist")).content.decode()
    assert 'title="ConditionError: condition: unknown segment &#x27;gone&#x27;"' in changelist


def test_the_refresh_button_on_the_change_page_refreshes_that_segment(admin_client, customers):
    pro = make_segment("pro", PRO, name="Pro")

    response = admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:segments_segment_change", args=[pro.pk])
    pro.refresh_from_db()
    assert pro.member_count == 3


def test_the_member_list_shows_current_members_linked_to_their_pages(
    admin_client, customers, monkeypatch
):
    monkeypatch.setattr(views, "MEMBERS_PER_PAGE", 2)
    pro = make_segment("pro", PRO, name="Pro")
    admin_client.post(
        reverse("admin:segments_segment_changelist"),
        {"action": "refresh_now", "_selected_action": [pro.pk]},
    )
    # u-3 leaves the segment: the list shows only open memberships.
    ingest([IdentifyIn(userId="u-3", traits={"plan": "starter"})], received_at=timezone.now())
    admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))
    url = reverse("admin:segments_segment_members", args=[pro.pk])

    first = admin_client.get(url)
    second = admin_client.get(url, {"p": "2"})

    assert [r["external_id"] for r in first.context["rows"]] == ["u-2", "u-1"]
    assert first.context["has_next"] is False
    assert second.context["rows"] == []
    html = first.content.decode()
    customer_url = reverse("admin:customers_customer_change", args=[customers["u-2"].pk])
    assert f'<a href="{customer_url}">u-2</a>' in html
    assert "u-3" not in html
    assert "2 members" in html


def test_the_member_list_pages_through_without_counting(admin_client, customers, monkeypatch):
    monkeypatch.setattr(views, "MEMBERS_PER_PAGE", 2)
    pro = make_segment("pro", PRO, name="Pro")
    admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))
    url = reverse("admin:segments_segment_members", args=[pro.pk])

    first = admin_client.get(url)
    second = admin_client.get(url, {"p": "2"})

    assert [r["external_id"] for r in first.context["rows"]] == ["u-3", "u-2"]
    assert first.context["has_next"] is True
    assert [r["external_id"] for r in second.context["rows"]] == ["u-1"]
    assert second.context["has_next"] is False
    assert "Members 3\N{EN DASH}3" in second.content.decode()


def test_the_change_page_shows_the_size_chart_with_its_numbers(admin_client):
    segment = make_segment("pro", PRO, name="Pro")
    today = timezone.now().date()
    for days_ago, count in ((2, 120), (1, 135), (0, 150)):
        SegmentSnapshot.objects.create(
            segment=segment, day=today - timedelta(days=days_ago), member_count=count
        )

    html = admin_client.get(
        reverse("admin:segments_segment_change", args=[segment.pk])
    ).content.decode()

    assert "Size over the last 90 days" in html
    assert "<svg" in html
    for count in (120, 135, 150):
        assert f'data-count="{count}"' in html
        assert f'<td class="number">{count}</td>' in html
    assert f"<td>{today:%Y-%m-%d}</td>" in html
    assert f">{today:%b} {today.day}</text>" in html


def test_the_changelist_shows_kind_size_and_refresh_figures(admin_client):
    make_segment(
        "pro", PRO, name="Pro", member_count=12345, refresh_ms=87, refreshed_at=timezone.now()
    )

    response = admin_client.get(reverse("admin:segments_segment_changelist"))

    html = response.content.decode()
    assert response.context["cl"].show_full_result_count is False
    assert ">12,345</a>" in html
    assert "87 ms" in html
    assert 'alt="ok"' in html


# --- static uploads ---------------------------------------------------------------------


def upload(admin_client, segment, text: str, mode: str | None):
    data = {"file": io.BytesIO(text.encode())}
    data["file"].name = "list.csv"
    if mode:
        data["mode"] = mode
    return admin_client.post(reverse("admin:segments_segment_upload", args=[segment.pk]), data)


def members_of(segment) -> set[str]:
    return set(
        SegmentMembership.objects.filter(segment=segment, exited_at__isnull=True).values_list(
            "customer__external_id", flat=True
        )
    )


def test_a_static_list_is_appended_to_or_replaced_with_unknown_ids_reported(
    admin_client, customers
):
    vip = make_segment("vip", kind=Segment.Kind.STATIC, name="VIP")

    first = upload(admin_client, vip, "external_id,name\nu-1,Ada\nu-2,Bob\nghost-1,?\n", "append")
    appended = upload(admin_client, vip, "u-2\nu-4\n", "append")
    after_append = members_of(vip)
    replaced = upload(admin_client, vip, "u-4\nu-5\nghost-2\n", "replace")

    assert first.status_code == 200
    assert first.context["report"].unknown_ids == ["ghost-1"]
    assert (appended.context["report"].added, appended.context["report"].already_members) == (
        1,
        1,
    )
    assert after_append == {"u-1", "u-2", "u-4"}
    report = replaced.context["report"]
    assert (report.added, report.removed, report.already_members) == (1, 2, 1)
    assert report.unknown_ids == ["ghost-2"]
    assert members_of(vip) == {"u-4", "u-5"}
    html = replaced.content.decode()
    assert "ghost-2" in html
    assert "1 added, 2 removed, 1 already in, 1 unknown (replace)" in " ".join(
        messages_of(replaced)
    )
    vip.refresh_from_db()
    assert vip.member_count == 2


def test_an_upload_needs_an_explicit_mode_and_a_valid_file(admin_client, customers):
    vip = make_segment("vip", kind=Segment.Kind.STATIC, name="VIP")

    no_mode = upload(admin_client, vip, "u-1\n", None)
    bad_file = upload(admin_client, vip, "u-1,extra\n", "append")

    assert no_mode.context["form"].errors["mode"] == ["This field is required."]
    (file_error,) = bad_file.context["form"].errors["file"]
    assert file_error.startswith("line 1: the header has no 'external_id' column")
    assert members_of(vip) == set()


def test_the_upload_form_is_on_a_static_segments_page_and_only_there(admin_client):
    vip = make_segment("vip", kind=Segment.Kind.STATIC, name="VIP")
    pro = make_segment("pro", PRO, name="Pro")

    static_page = admin_client.get(reverse("admin:segments_segment_change", args=[vip.pk]))
    dynamic_page = admin_client.get(reverse("admin:segments_segment_change", args=[pro.pk]))
    refused = upload(admin_client, pro, "u-1\n", "append")

    upload_url = reverse("admin:segments_segment_upload", args=[vip.pk])
    assert f'action="{upload_url}"' in static_page.content.decode()
    assert 'name="mode"' in static_page.content.decode()
    assert "checked" not in str(static_page.context["upload_form"]["mode"])
    assert 'name="mode"' not in dynamic_page.content.decode()
    assert refused.status_code == 302


# --- a customer's history ------------------------------------------------------------------


def test_the_customer_page_shows_the_segment_history_newest_first(admin_client, customers):
    pro = make_segment("pro", PRO, name="Pro")
    active = make_segment("active", {"trait": "status", "op": "eq", "value": "active"})
    admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))
    ingest([IdentifyIn(userId="u-1", traits={"plan": "starter"})], received_at=timezone.now())
    admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))
    admin_client.post(reverse("admin:segments_segment_refresh", args=[active.pk]))

    response = admin_client.get(
        reverse("admin:customers_customer_change", args=[customers["u-1"].pk])
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "Segment history" in html
    history = html[html.index("Segment history") :]
    assert history.index(">Active</a>") < history.index(">Pro</a>")
    assert history.count("still a member") == 1  # in Active; Pro was left
    pro_membership = SegmentMembership.objects.get(customer=customers["u-1"], segment=pro)
    assert pro_membership.exited_at is not None
    assert f"{pro_membership.exited_at:%Y-%m-%d %H:%M}" in history


def test_a_long_history_shows_the_newest_and_links_to_the_rest(
    admin_client, customers, monkeypatch
):
    monkeypatch.setattr(segments_admin, "HISTORY_SHOWN", 1)
    pro = make_segment("pro", PRO, name="Pro")
    active = make_segment("active", {"trait": "status", "op": "eq", "value": "active"})
    for segment in (pro, active):
        admin_client.post(reverse("admin:segments_segment_refresh", args=[segment.pk]))

    html = admin_client.get(
        reverse("admin:customers_customer_change", args=[customers["u-1"].pk])
    ).content.decode()

    history = html[html.index("Segment history") :]
    assert ">Active</a>" in history
    assert ">Pro</a>" not in history
    assert f"{reverse('admin:segments_segmentmembership_changelist')}?q=u-1" in history


def test_a_customer_is_still_saved_from_the_admin_with_the_history_shown(admin_client, customers):
    pro = make_segment("pro", PRO, name="Pro")
    admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))
    customer = customers["u-2"]

    response = admin_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {
            "external_id": "u-2",
            "email": "bob@example.com",
            "phone": "",
            "timezone": "",
            "locale": "",
            "traits": '{"plan": "pro"}',
            "event_stats-TOTAL_FORMS": "0",
            "event_stats-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content.decode()
    customer.refresh_from_db()
    assert customer.email == "bob@example.com"
    assert SegmentMembership.objects.filter(customer=customer).count() == 1


def test_memberships_are_found_by_exact_customer_external_id(admin_client, customers):
    pro = make_segment("pro", PRO, name="Pro")
    admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))
    url = reverse("admin:segments_segmentmembership_changelist")

    exact = admin_client.get(url, {"q": "u-2"})
    partial = admin_client.get(url, {"q": "u-"})

    assert [m.customer.external_id for m in exact.context["cl"].result_list] == ["u-2"]
    assert list(partial.context["cl"].result_list) == []
    assert exact.context["cl"].show_full_result_count is False


def test_memberships_are_read_only_in_the_admin(admin_client, customers):
    pro = make_segment("pro", PRO, name="Pro")
    admin_client.post(reverse("admin:segments_segment_refresh", args=[pro.pk]))
    membership = SegmentMembership.objects.first()

    add = admin_client.get(reverse("admin:segments_segmentmembership_add"))
    delete = admin_client.post(
        reverse("admin:segments_segmentmembership_delete", args=[membership.pk]), {"post": "yes"}
    )

    assert add.status_code == 403
    assert delete.status_code == 403
    assert SegmentMembership.objects.filter(pk=membership.pk).exists()
