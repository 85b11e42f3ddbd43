"""NPS surveys: the survey, each customer's invitation to answer it, and the
one response an invitation can have.

`journeys → surveys → messaging`: an invitation knows the journey, node and
enrollment that sent it only as plain values (slug, node id, enrollment id),
like a Message does, so surveys never depends on the app above it.
"""

from django.db import models
from django.db.models import Q

from apps.customers.models import Customer
from apps.messaging.models import Channel, Message, Template


class Category(models.TextChoices):
    """What a 0-10 answer says: 9-10 promoter, 7-8 passive, 0-6 detractor."""

    PROMOTER = "promoter", "Promoter (9-10)"
    PASSIVE = "passive", "Passive (7-8)"
    DETRACTOR = "detractor", "Detractor (0-6)"


def category_of(score: int) -> str:
    if score >= 9:
        return Category.PROMOTER
    if score >= 7:
        return Category.PASSIVE
    return Category.DETRACTOR


class Survey(models.Model):
    """An NPS question and its copy. The message a customer receives is a
    messaging Template, one per channel: the survey's channel defaults, which
    an `nps_survey` journey node picks by its `channel`."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    question = models.CharField(
        max_length=300,
        default="How likely are you to recommend us to a friend or colleague?",
        help_text="Shown above the 0-10 scale on the survey page.",
    )
    follow_up_question = models.CharField(
        max_length=300,
        default="What is the main reason for your score?",
        help_text="Asks for the comment (the page's comment box; by SMS, the reply to a score).",
    )
    thank_you_text = models.TextField(
        default="Thank you! Your answer helps us get better.",
        help_text="Shown (or texted back) once the answer is recorded.",
    )
    email_template = models.ForeignKey(
        Template,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"channel": Channel.EMAIL},
        help_text="What an email survey sends: its HTML shows the eleven links.nps buttons.",
    )
    sms_template = models.ForeignKey(
        Template,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"channel": Channel.SMS},
        help_text="What an SMS survey sends: it asks for a reply with a number from 0 to 10.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    def template_for(self, channel: str) -> Template | None:
        return self.email_template if channel == Channel.EMAIL else self.sms_template


class SurveyInvitation(models.Model):
    """One customer asked to answer one survey, through one message.

    Written before the message (the message carries the invitation's links),
    in the same transaction. `sent_at` is set when the message goes out or is
    deferred to go later; an invitation whose message a policy refused (no
    consent, a frequency cap) keeps `sent_at` empty: the customer was not
    surveyed, and re-survey throttling ignores it."""

    survey = models.ForeignKey(Survey, on_delete=models.PROTECT, related_name="invitations")
    # Indexed by invitation_customer_sent, which leads with the customer.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="survey_invitations", db_index=False
    )
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    channel = models.CharField(max_length=5, choices=Channel.choices)
    # The link's secret: 128 random bits, looked up by its unique index.
    token = models.CharField(max_length=64, unique=True, editable=False)
    # A retried journey step finds its invitation (the engine's step key).
    idempotency_key = models.CharField(max_length=200, unique=True)
    journey = models.CharField(max_length=100, blank=True)
    node_id = models.CharField(max_length=100, blank=True)
    enrollment_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(help_text="Answers (and changes) are taken until then.")
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Re-survey throttling and SMS reply matching: a customer's latest.
            models.Index(fields=["customer", "sent_at"], name="invitation_customer_sent"),
            # Response rates by period.
            models.Index(fields=["survey", "sent_at"], name="invitation_survey_sent"),
            models.Index(fields=["journey", "sent_at"], name="invitation_journey_sent"),
        ]

    def __str__(self) -> str:
        return f"{self.survey} to {self.customer} ({self.channel})"


class SurveyResponse(models.Model):
    """The answer to an invitation: one per invitation (a second answer
    updates it). `responded_at` is the first answer, `updated_at` the latest
    change; `revision` counts the changes (each is recorded as an
    `nps_responded` event)."""

    invitation = models.OneToOneField(
        SurveyInvitation, on_delete=models.CASCADE, related_name="response"
    )
    # Indexed by response_customer_at, which leads with the customer.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="survey_responses", db_index=False
    )
    survey = models.ForeignKey(Survey, on_delete=models.PROTECT, related_name="responses")
    score = models.PositiveSmallIntegerField()
    category = models.CharField(max_length=9, choices=Category.choices)
    comment = models.TextField(blank=True)
    channel = models.CharField(max_length=5, choices=Channel.choices)
    responded_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    revision = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(score__lte=10), name="response_score_0_10"),
            models.CheckConstraint(
                condition=(
                    Q(category="promoter", score__gte=9)
                    | Q(category="passive", score__in=[7, 8])
                    | Q(category="detractor", score__lte=6)
                ),
                name="response_category_of_score",
            ),
        ]
        indexes = [
            models.Index(fields=["survey", "responded_at"], name="response_survey_at"),
            models.Index(fields=["customer", "responded_at"], name="response_customer_at"),
            models.Index(fields=["category", "responded_at"], name="response_category_at"),
        ]

    def __str__(self) -> str:
        return f"{self.score} from {self.customer} ({self.category})"
