"""Preview survey links: what every render without an invitation gets."""

from urllib.parse import parse_qs, urlsplit

from apps.surveys.links import preview_urls


def test_preview_links_carry_each_score_and_the_template():
    urls = preview_urls("nps-survey")

    assert [parse_qs(urlsplit(url).query) for url in urls] == [
        {"score": [str(score)], "template": ["nps-survey"]} for score in range(11)
    ]


def test_preview_links_follow_a_change_of_public_base_url(settings):
    settings.PUBLIC_BASE_URL = "https://one.example.com"
    first = preview_urls("nps-survey")
    settings.PUBLIC_BASE_URL = "https://two.example.com"
    second = preview_urls("nps-survey")

    assert all(url.startswith("https://one.example.com/nps/preview?") for url in first)
    assert all(url.startswith("https://two.example.com/nps/preview?") for url in second)


def test_a_caller_changing_its_preview_links_does_not_change_the_next_callers():
    urls = preview_urls("nps-survey")
    urls[9] = "https://elsewhere.example.com"

    assert preview_urls("nps-survey")[9].endswith("score=9&template=nps-survey")
