from apps.core.fixture_command import LoadFixtureCommand
from apps.segments.services import segments_load


class Command(LoadFixtureCommand):
    help = (
        "Create or update segments by slug from a JSON file: a list of {slug, name, "
        "description, definition, kind}. Every definition is validated; one invalid "
        "segment and nothing is written."
    )
    noun = "segment"

    def load(self, items, *, only_new: bool):
        return segments_load(items, only_new=only_new)
