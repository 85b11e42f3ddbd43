"""The marketer's forms (a template with its checks, its live preview and a
test send, a manual suppression) and the customer's preference centre."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.customers.models import Customer
from apps.customers.selectors import customer_search

from .consent import consent_record, suppression_lift
from .models import Category, Channel, ConsentRecord, Suppression, Template
from .selectors import active_suppression, consent_state, normalize_address

# What a template's content is made of: the fields the preview renders from.
CONTENT_FIELDS = (
    "channel",
    "category",
    "topic",
    "subject",
    "preheader",
    "html",
    "text",
    "from_email",
    "reply_to",
    "body",
)


class TemplateForm(forms.ModelForm):
    """A template with code-friendly editors. The whole-template check
    (`rendering.template_check`: syntax, unknown variables, sandbox escapes,
    and for marketing email the postal address and unsubscribe link) runs in
    `Template.clean`, which this form's validation calls; each problem is
    shown on the field it is about."""

    class Meta:
        model = Template
        fields = ("name", "slug", *CONTENT_FIELDS)
        widgets = {
            "html": forms.Textarea(attrs={"rows": 18, "class": "template-code"}),
            "text": forms.Textarea(attrs={"rows": 8, "class": "template-code"}),
            "body": forms.Textarea(attrs={"rows": 5, "class": "template-code"}),
            "subject": forms.TextInput(attrs={"class": "vLargeTextField"}),
            "preheader": forms.TextInput(attrs={"class": "vLargeTextField"}),
        }


class CustomerField(forms.CharField):
    """A customer named by external id, email or phone (exact; an index
    lookup at millions of customers), or by `#<id>`."""

    default_error_messages = {
        "unknown": "No customer has the external id, email or phone %(term)r.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 254)
        super().__init__(**kwargs)

    def clean(self, value) -> Customer | None:
        term = super().clean(value).strip()
        if not term:
            return None
        customers = Customer.objects.all()
        if term.startswith("#") and term[1:].isdigit():
            found = customers.filter(pk=int(term[1:])).first()
        else:
            found = customer_search(customers, term).order_by("pk").first()
        if found is None:
            raise ValidationError(
                self.error_messages["unknown"], code="unknown", params={"term": term}
            )
        return found


def sample_customer(channel: str) -> Customer | None:
    """Whom to preview as when the marketer has not chosen: the newest known
    customer who can receive the channel (so the preview shows real data;
    never an anonymous visitor, who is sent nothing)."""
    customers = Customer.objects.known().order_by("-pk")
    reachable = (
        customers.exclude(phone="") if channel == Channel.SMS else customers.exclude(email="")
    )
    return reachable.first() or customers.first()


class PreviewForm(forms.Form):
    """What the template editor posts as the marketer types: the unsaved
    content and the customer to render it for."""

    channel = forms.ChoiceField(choices=Channel.choices)
    category = forms.ChoiceField(choices=Category.choices)
    topic = forms.CharField(required=False, max_length=50)
    subject = forms.CharField(required=False, strip=False, max_length=500)
    preheader = forms.CharField(required=False, strip=False, max_length=300)
    html = forms.CharField(required=False, strip=False)
    text = forms.CharField(required=False, strip=False)
    from_email = forms.CharField(required=False, max_length=254)
    reply_to = forms.CharField(required=False, max_length=254)
    body = forms.CharField(required=False, strip=False)
    customer = CustomerField(label="Preview as")
    slug = forms.CharField(required=False, max_length=100)
    name = forms.CharField(required=False, max_length=200)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "channel" in cleaned and "customer" not in self.errors and not cleaned.get("customer"):
            cleaned["customer"] = sample_customer(cleaned["channel"])
            if cleaned["customer"] is None:
                raise ValidationError("There are no customers yet to preview with.", code="empty")
        return cleaned

    def template(self) -> Template:
        """The unsaved template as it stands in the editor (never saved)."""
        data = self.cleaned_data
        return Template(
            slug=data.get("slug") or "preview",
            name=data.get("name") or "Preview",
            **{field: data.get(field) or "" for field in CONTENT_FIELDS},
        )


def clean_address(channel: str, address: str) -> str:
    """An address in the form the suppression list and providers use (email
    lower-cased, phone E.164), or a ValidationError naming the problem."""
    try:
        return normalize_address(channel, address)
    except ValueError as exc:
        raise ValidationError(str(exc), code="address") from None


class SendTestForm(forms.Form):
    """A test send of the saved template: rendered for a customer (their data
    fills the template) and sent to an address or number of the marketer's
    choosing, or to the customer's own."""

    customer = CustomerField(label="Render for")
    to = forms.CharField(
        required=False,
        max_length=254,
        label="Send to",
        help_text="An email address or an E.164 number; blank: the customer's own.",
    )

    def __init__(self, *args, template: Template, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = template

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        channel = self.template.channel
        customer = cleaned.get("customer") or sample_customer(channel)
        if customer is None:
            raise ValidationError("There are no customers yet to render the test for.")
        cleaned["customer"] = customer
        to = cleaned.get("to", "").strip()
        if to:
            try:
                cleaned["to"] = clean_address(channel, to)
            except ValidationError as exc:
                self.add_error("to", exc)
        else:
            own = customer.phone if channel == Channel.SMS else customer.email
            if not own:
                kind = "phone number" if channel == Channel.SMS else "email address"
                self.add_error(
                    "to", f"Customer {customer.external_id} has no {kind}: give one to send to."
                )
            cleaned["to"] = own
        return cleaned


class SuppressionAddForm(forms.ModelForm):
    """An address suppressed by hand (reason "manual")."""

    class Meta:
        model = Suppression
        fields = ("channel", "address", "detail")
        labels = {"detail": "Why"}
        help_texts = {"address": "Email address, or phone number in E.164 (like +14155550123)."}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "channel" in cleaned and "address" in cleaned:
            try:
                cleaned["address"] = clean_address(cleaned["channel"], cleaned["address"])
            except ValidationError as exc:
                self.add_error("address", exc)
        return cleaned

    def validate_unique(self) -> None:
        # The service makes a second add of an active suppression a no-op.
        pass


def email_topics() -> list[str]:
    """The topics a customer can opt out of: those of the email templates."""
    return sorted(
        Template.objects.filter(channel=Channel.EMAIL)
        .exclude(topic="")
        .values_list("topic", flat=True)
        .distinct()
    )


def topic_label(topic: str) -> str:
    return topic.replace("-", " ").replace("_", " ").capitalize()


def masked(address: str) -> str:
    """Enough of an address for its owner to recognise it, not enough to
    harvest from a forwarded link: a***@example.com, +14•••••••23."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    return address[:3] + "•" * max(len(address) - 5, 0) + address[-2:]


@dataclass(frozen=True)
class Choice:
    name: str
    channel: str
    topic: str
    label: str
    help: str
    stored: bool | None  # the ledger's state; None: the customer never said

    @property
    def wording(self) -> str:
        return f"{self.label}. {self.help}" if self.help else self.label


# Suppressions the customer lifts by opting in again here; the others (bounce,
# complaint, invalid, manual, STOP) need more than a web form.
LIFTED_BY_OPT_IN = frozenset({Suppression.Reason.UNSUBSCRIBE})


class PreferencesForm(forms.Form):
    """The preference centre: a box per channel the customer can be reached
    on and per email topic, each showing the ledger's current state. Saving
    appends to the ledger what the customer decided, with the exact wording
    of the box, so the record says what they agreed to."""

    def __init__(self, *args, customer: Customer, **kwargs):
        super().__init__(*args, **kwargs)
        self.customer = customer
        self.email_default = not settings.EMAIL_MARKETING_REQUIRES_OPT_IN
        self.choices = self._choices()
        for choice in self.choices:
            self.fields[choice.name] = forms.BooleanField(
                required=False,
                label=choice.label,
                help_text=choice.help,
                initial=self._effective(choice.channel, choice.stored),
            )

    def _choices(self) -> list[Choice]:
        customer, company = self.customer, settings.COMPANY_NAME
        choices = []
        if customer.email:
            choices.append(
                Choice(
                    "channel_email",
                    Channel.EMAIL,
                    "",
                    f"Marketing email from {company}",
                    f"News, tips and offers, sent to {masked(customer.email)}.",
                    consent_state(customer, Channel.EMAIL),
                )
            )
        if customer.phone:
            choices.append(
                Choice(
                    "channel_sms",
                    Channel.SMS,
                    "",
                    f"Text messages from {company}",
                    f"Sent to {masked(customer.phone)}. Message and data rates may apply; "
                    "reply STOP to any text to stop.",
                    consent_state(customer, Channel.SMS),
                )
            )
        if customer.email:
            for topic in email_topics():
                choices.append(
                    Choice(
                        f"topic_{topic}",
                        Channel.EMAIL,
                        topic,
                        f"{topic_label(topic)} emails",
                        "",
                        consent_state(customer, Channel.EMAIL, topic),
                    )
                )
        return choices

    def _effective(self, channel: str, state: bool | None) -> bool:
        """What a box shows: the ledger's state, or the default when the
        customer never said (email marketing on unless opt-in is required;
        SMS always off: it needs an explicit opt-in)."""
        if state is not None:
            return state
        return self.email_default if channel == Channel.EMAIL else False

    def groups(self) -> list[dict]:
        groups = []
        for title, is_topic in (("Channels", False), ("Email topics", True)):
            fields = [self[c.name] for c in self.choices if bool(c.topic) == is_topic]
            if fields:
                groups.append({"title": title, "fields": fields})
        return groups

    def blocked_notes(self) -> list[str]:
        """Addresses a box cannot reopen, said plainly (a bounce, a STOP)."""
        notes = []
        for channel, address in (
            (Channel.EMAIL, self.customer.email),
            (Channel.SMS, self.customer.phone),
        ):
            suppression = active_suppression(channel, address) if address else None
            if suppression is None or suppression.reason in LIFTED_BY_OPT_IN:
                continue
            if suppression.reason == Suppression.Reason.SMS_OPT_OUT:
                notes.append(
                    f"You replied STOP to our texts, so {masked(address)} gets none: reply "
                    "START to any of our texts to receive them again."
                )
            else:
                why = suppression.get_reason_display().lower()
                notes.append(
                    f"We cannot send to {masked(address)} ({why}). "
                    f"Contact {settings.COMPANY_NAME} to have it checked."
                )
        return notes

    def save(self, *, now: datetime, ip_address: str | None, user_agent: str) -> list:
        """Append the customer's choices to the ledger and return the records.

        A channel is recorded whenever the customer had never said, or changed
        it (saving is an explicit choice, worth keeping as proof). A topic is
        recorded when the box differs from what the ledger will say once the
        channel is recorded (a topic follows its channel until it has records
        of its own); with the channel off, topics are moot and not written.
        Turning a channel back on lifts the customer's own unsubscribe from
        the suppression list (never a bounce, complaint or STOP)."""
        customer, wanted = self.customer, self.cleaned_data
        records = []
        with transaction.atomic():
            for choice in self.choices:
                if choice.topic:
                    if not wanted.get("channel_email", True):
                        continue
                    current = self._effective(
                        Channel.EMAIL, consent_state(customer, Channel.EMAIL, choice.topic)
                    )
                    if current == wanted[choice.name]:
                        continue
                elif choice.stored is not None and choice.stored == wanted[choice.name]:
                    continue
                records.append(
                    consent_record(
                        customer=customer,
                        channel=choice.channel,
                        topic=choice.topic,
                        status=(
                            ConsentRecord.Status.GRANTED
                            if wanted[choice.name]
                            else ConsentRecord.Status.REVOKED
                        ),
                        source=ConsentRecord.Source.PREFERENCES,
                        recorded_at=now,
                        wording=choice.wording,
                        ip_address=ip_address,
                        user_agent=user_agent,
                    )
                )
                if not choice.topic and wanted[choice.name]:
                    address = customer.email if choice.channel == Channel.EMAIL else customer.phone
                    suppression = active_suppression(choice.channel, address)
                    if suppression is not None and suppression.reason in LIFTED_BY_OPT_IN:
                        suppression_lift(
                            channel=choice.channel, address=address, now=now, by="preference centre"
                        )
        return records
