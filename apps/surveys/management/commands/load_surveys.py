from apps.core.fixture_command import LoadFixtureCommand
from apps.surveys.fixtures import surveys_load


class Command(LoadFixtureCommand):
    help = (
        "Create or update NPS surveys by slug from a JSON file: a list of {slug, name, question, "
        "follow_up_question, thank_you_text, email_template, sms_template} (templates by slug; "
        "load them first). One invalid survey and nothing is written."
    )
    noun = "survey"

    def load(self, items, *, only_new: bool):
        return surveys_load(items, only_new=only_new)
