"""How many SMS segments a body takes, and in which encoding (GSM-7 or
UCS-2): the template editor's counter and the preview's."""

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters of the extension table: sent as ESC + char, two septets each.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def sms_segments(text: str) -> tuple[str, int]:
    """(encoding, segments) of an SMS body. GSM-7 when every character is in
    the GSM 03.38 alphabet (extension characters take two septets): 160 in one
    segment, 153 per segment when split. Otherwise UCS-2, counted in UTF-16
    code units (an emoji takes two): 70 in one, 67 per segment when split. A
    split never cuts an escape sequence or a surrogate pair in two."""
    if not text:
        return "GSM-7", 0
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        units = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return "GSM-7", _segments(units, single=160, multi=153)
    units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return "UCS-2", _segments(units, single=70, multi=67)


def _segments(units: list[int], *, single: int, multi: int) -> int:
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for size in units:
        if used + size > multi:
            segments += 1
            used = 0
        used += size
    return segments
