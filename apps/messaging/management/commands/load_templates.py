from apps.core.fixture_command import LoadFixtureCommand
from apps.messaging.fixtures import templates_load


class Command(LoadFixtureCommand):
    help = (
        "Create or update message templates by slug from a JSON file: a list of {slug, name, "
        "channel, category, topic, subject, preheader, html, text, body}. Every template is "
        "checked as the admin checks it; one invalid template and nothing is written."
    )
    noun = "template"

    def load(self, items, *, only_new: bool):
        return templates_load(items, only_new=only_new)
