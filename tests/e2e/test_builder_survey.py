"""A Marketer adds an NPS survey step on the canvas: the survey picker lists
the surveys with the channels each can go by, previews the message the
customer would get, keeps the node on a channel its survey has, and the
journey saves and validates with the pick."""

from playwright.sync_api import expect

from apps.customers.models import Customer
from apps.journeys.models import Journey
from apps.surveys.models import Survey
from tests.e2e.conftest import login
from tests.surveys.conftest import SURVEYS, TEMPLATES, quietly

SLUG = "ask-nps"


def test_a_survey_step_is_picked_previewed_and_saved_from_the_canvas(page, marketer):
    quietly("load_templates", str(TEMPLATES), "--only-new")
    quietly("load_surveys", str(SURVEYS), "--only-new")
    demo = Survey.objects.get(slug="nps")
    Survey.objects.create(slug="email-only", name="Account managers' NPS",
                          email_template=demo.email_template)  # fmt: skip
    Customer.objects.create(external_id="grace", email="grace@example.com",
                            phone="+14155550199", traits={"first_name": "Grace"})  # fmt: skip
    login(page, marketer)

    page.goto("/builder/")
    form = page.get_by_test_id("new-journey-form")
    form.locator("#id_name").fill("Ask NPS")
    form.locator("#id_slug").fill(SLUG)
    form.locator("#id_event").fill("renewed")
    page.get_by_test_id("create-journey").click()
    expect(page.get_by_test_id("node-done")).to_be_visible()
    page.get_by_test_id("btn-settings").click()
    expect(page.get_by_test_id("palette-nps_survey")).to_be_enabled()
    page.get_by_test_id("palette-nps_survey").click()
    expect(page.get_by_test_id("field-id")).to_have_value("nps-survey-1")

    # The picker names each survey with the channels it has a template for.
    survey = page.get_by_test_id("field-survey")
    expect(survey.locator("option")).to_have_text([
        "— choose a survey —",
        "Account managers' NPS (email-only; email)",
        "Net Promoter Score (nps; email, SMS)",
    ])  # fmt: skip
    survey.select_option("nps")
    expect(page.get_by_test_id("preview-subject")).to_contain_text("Grace, how are we doing?")
    expect(page.get_by_test_id("survey-admin-link")).to_have_attribute(
        "href", f"/admin/surveys/survey/{demo.pk}/change/"
    )
    page.get_by_test_id("field-channel").select_option("sms")
    expect(page.get_by_test_id("preview-sms")).to_contain_text("Reply with a number from 0")

    # A survey without an SMS template moves the step to email and offers no SMS.
    survey.select_option("email-only")
    channel = page.get_by_test_id("field-channel")
    expect(channel).to_have_value("email")
    expect(channel.locator("option[value=sms]")).to_be_disabled()
    expect(page.get_by_test_id("preview-subject")).to_be_visible()

    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("toast")).to_have_text("Draft saved.")
    page.get_by_test_id("btn-validate").click()
    expect(page.get_by_test_id("toast")).to_have_text("The journey is valid.")
    nodes = {n["id"]: n for n in Journey.objects.get(slug=SLUG).draft["nodes"]}
    assert {k: nodes["nps-survey-1"][k] for k in ("type", "survey", "channel")} == {
        "type": "nps_survey",
        "survey": "email-only",
        "channel": "email",
    }


def test_a_survey_the_journey_names_that_no_longer_exists_is_shown_as_not_found(page, marketer):
    quietly("load_templates", str(TEMPLATES), "--only-new")
    quietly("load_surveys", str(SURVEYS), "--only-new")
    login(page, marketer)
    page.goto("/builder/")
    form = page.get_by_test_id("new-journey-form")
    form.locator("#id_name").fill("Ask NPS")
    form.locator("#id_slug").fill(SLUG)
    form.locator("#id_event").fill("renewed")
    page.get_by_test_id("create-journey").click()
    page.get_by_test_id("btn-settings").click()
    page.get_by_test_id("palette-nps_survey").click()
    page.get_by_test_id("field-survey").select_option("nps")
    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("toast")).to_have_text("Draft saved.")
    Survey.objects.filter(slug="nps").update(slug="nps-2024")

    page.reload()
    page.get_by_test_id("node-head-nps-survey-1").click()

    survey = page.get_by_test_id("field-survey")
    expect(survey).to_have_value("nps")
    expect(survey.locator("option:checked")).to_have_text("nps (not found)")
    page.get_by_test_id("btn-validate").click()
    expect(page.get_by_test_id("node-errors")).to_contain_text("unknown survey 'nps'")
