"""The survey page (public, reached from a score link in a message).

- GET (or HEAD) `/nps/<token>?score=N` shows the question with N chosen and
  a comment box, and records nothing: mail scanners and link previews follow every
  link in an email, and a click is not yet an answer. The customer's own
  POST (the page's button) is.
- POST records the answer, or updates it (one response per invitation), and
  redirects to the thank-you page. The form carries a CSRF token like any
  form of the site: the GET sets the cookie, so a real browser answers in
  one more click and a forged cross-site POST is refused.
- A link that is not valid, or whose survey has closed, gets a friendly page
  (4xx), never a server error. Bodies are capped by BodySizeLimitMiddleware.
"""

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from apps.messaging.models import Template

from . import links, services
from .forms import AnswerForm, score_param
from .models import Survey, SurveyInvitation, SurveyResponse


def _context(**extra) -> dict:
    return {
        "company_name": settings.COMPANY_NAME,
        "company_postal_address": settings.COMPANY_POSTAL_ADDRESS,
        **extra,
    }


def _problem(request: HttpRequest, title: str, problem: str, *, status: int) -> TemplateResponse:
    return TemplateResponse(
        request,
        "surveys/link_problem.html",
        _context(title=title, problem=problem[:1].upper() + problem[1:] + "."),
        status=status,
    )


def _invalid(request: HttpRequest) -> TemplateResponse:
    return _problem(
        request,
        "This survey link does not work",
        "the link is not valid: it may have been cut short by your mail app",
        status=404,
    )


def _closed(request: HttpRequest, invitation: SurveyInvitation) -> TemplateResponse:
    return _problem(
        request,
        "This survey has closed",
        f"it took answers until {invitation.expires_at:%B %d, %Y}; thank you for wanting to "
        "tell us",
        status=410,
    )


def _response_of(invitation: SurveyInvitation) -> SurveyResponse | None:
    try:
        return invitation.response
    except SurveyResponse.DoesNotExist:
        return None


def _page(request, survey: Survey, form: AnswerForm, *, status: int = 200, **extra):
    scale = [(score, str(score)) for score in range(11)]
    return TemplateResponse(
        request,
        "surveys/answer.html",
        _context(survey=survey, form=form, scale=scale, chosen=_chosen(form), **extra),
        status=status,
    )


def _chosen(form: AnswerForm) -> str:
    value = form["score"].value()
    return "" if value is None else str(value)


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def survey_page(request: HttpRequest, token: str) -> HttpResponse:
    if token == links.PREVIEW_TOKEN:
        return _preview(request)
    invitation = services.invitation_open(token)
    if invitation is None:
        return _invalid(request)
    now = timezone.now()
    if now >= invitation.expires_at:
        return _closed(request, invitation)
    response = _response_of(invitation)
    if request.method != "POST":
        score = score_param(request.GET.get("score"))
        if score is None and response is not None:
            score = response.score
        form = AnswerForm(initial={"score": score, "comment": response.comment if response else ""})
        return _page(request, invitation.survey, form, response=response, invitation=invitation)
    form = AnswerForm(request.POST)
    if not form.is_valid():
        return _page(
            request,
            invitation.survey,
            form,
            status=400,
            response=response,
            invitation=invitation,
        )
    try:
        services.survey_respond(
            invitation=invitation,
            score=form.cleaned_data["score"],
            comment=form.cleaned_data["comment"],
            now=now,
        )
    except services.SurveyClosed:
        return _closed(request, invitation)
    return redirect(reverse("surveys:thanks", args=[token]), permanent=False)


@never_cache
@require_safe
def thanks_page(request: HttpRequest, token: str) -> HttpResponse:
    invitation = services.invitation_open(token)
    if invitation is None:
        return _invalid(request)
    response = _response_of(invitation)
    if response is None:
        return redirect(reverse("surveys:answer", args=[token]))
    can_change = timezone.now() < invitation.expires_at
    return TemplateResponse(
        request,
        "surveys/thanks.html",
        _context(
            survey=invitation.survey,
            response=response,
            invitation=invitation,
            change_url=reverse("surveys:answer", args=[token]) if can_change else "",
        ),
    )


def _preview(request: HttpRequest) -> HttpResponse:
    """The page as a preview link shows it (the template editor's preview, a
    test send): the survey of that template, and nothing is recorded."""
    if request.method == "POST":
        return _problem(
            request,
            "This was a preview",
            "preview links show the survey page but record nothing; real surveys have links "
            "of their own",
            status=400,
        )
    slug = request.GET.get("template", "")
    template = Template.objects.filter(slug=slug).first() if links.SLUG_RE.match(slug) else None
    survey = None
    if template is not None:
        either = Q(email_template=template) | Q(sms_template=template)
        survey = Survey.objects.filter(either).order_by("pk").first()
    survey = survey or Survey.objects.order_by("pk").first() or Survey(name="NPS")
    form = AnswerForm(initial={"score": score_param(request.GET.get("score"))})
    return _page(request, survey, form, preview=True)
