"""The demo's people and places: first and last names by culture, company
names, and the regions customers live in, each with its time zones, locale
and the phone ranges its regulator reserves for fiction (so the demo can
never text a real person). Data and lookups only; apps/customers/demo.py
tells each customer's story from them."""

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import accumulate
from zoneinfo import ZoneInfo

NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "anglo": (
        ("James", "Mary", "Olivia", "Liam", "Emma", "Noah", "Ava", "Ethan", "Sophia", "Mason",
         "Chloe", "Lucas", "Grace", "Henry", "Zoe", "Jack", "Harper", "Owen", "Ella", "Caleb"),
        ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
         "Clark", "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams",
         "O'Brien"),
    ),
    "french": (
        ("Camille", "Léa", "Manon", "Chloé", "Inès", "Louis", "Hugo", "Jules", "Gabriel",
         "Arthur", "Théo", "Zoé", "Élodie", "Mathis", "Amélie"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
         "Moreau", "Lefèvre", "Girard", "Fournier", "Mercier", "Faure"),
    ),
    "german": (
        ("Lukas", "Leon", "Finn", "Paul", "Jonas", "Felix", "Mia", "Hannah", "Lena", "Anna",
         "Marie", "Sophie", "Jannik", "Katharina", "Jürgen"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Koch", "Bauer", "Richter", "Klein", "Wolf"),
    ),
    "hispanic": (
        ("Sofía", "Lucía", "María", "Valentina", "Camila", "Mateo", "Santiago", "Diego", "Javier",
         "Alejandro", "Carmen", "Pablo", "Elena", "Daniel", "Isabella"),
        ("García", "Rodríguez", "Martínez", "López", "González", "Hernández", "Pérez", "Sánchez",
         "Ramírez", "Torres", "Flores", "Rivera", "Gómez", "Díaz", "Morales"),
    ),
    "brazilian": (
        ("João", "Pedro", "Gabriel", "Lucas", "Matheus", "Ana", "Beatriz", "Mariana", "Larissa",
         "Juliana", "Rafael", "Thiago", "Fernanda", "Camila", "Bruno"),
        ("Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Costa", "Ferreira",
         "Almeida", "Carvalho", "Ribeiro", "Rocha", "Barbosa", "Araújo", "Gomes"),
    ),
    "japanese": (
        ("Haruto", "Yuto", "Sota", "Ren", "Daiki", "Yui", "Hina", "Sakura", "Aoi", "Yuna",
         "Kenji", "Akiko", "Takumi", "Mei", "Riku"),
        ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura",
         "Kobayashi", "Kato", "Yoshida", "Yamada", "Sasaki", "Matsumoto", "Inoue"),
    ),
    "indian": (
        ("Aarav", "Vivaan", "Aditya", "Arjun", "Rohan", "Ananya", "Diya", "Priya", "Saanvi",
         "Isha", "Kavya", "Rahul", "Neha", "Vikram", "Meera"),
        ("Sharma", "Patel", "Gupta", "Singh", "Kumar", "Reddy", "Iyer", "Nair", "Mehta", "Joshi",
         "Rao", "Desai", "Chopra", "Banerjee", "Menon"),
    ),
    "west_african": (
        ("Chinedu", "Oluwaseun", "Adaeze", "Ngozi", "Emeka", "Tunde", "Folake", "Ifeoma",
         "Babajide", "Chiamaka", "Kelechi", "Yetunde", "Obinna", "Amara", "Segun"),
        ("Okafor", "Adeyemi", "Okonkwo", "Balogun", "Eze", "Ogunleye", "Nwosu", "Adebayo",
         "Chukwu", "Olawale", "Obi", "Afolabi", "Uche", "Bello", "Nnamdi"),
    ),
    "east_southern_african": (
        ("Wanjiru", "Kamau", "Achieng", "Otieno", "Njeri", "Amani", "Zawadi", "Baraka", "Imani",
         "Thabo", "Lerato", "Sipho", "Naledi", "Kagiso", "Ayanda"),
        ("Mwangi", "Otieno", "Kariuki", "Wanjiku", "Odhiambo", "Kiprop", "Njoroge", "Ochieng",
         "Nkosi", "Dlamini", "Mokoena", "Ndlovu", "Khumalo", "van der Merwe", "Botha"),
    ),
    "dutch_nordic": (
        ("Daan", "Sem", "Lotte", "Sanne", "Eva", "Bram", "Jesper", "Sanna", "Freja", "Lars",
         "Ingrid", "Nils", "Astrid", "Emil", "Maja"),
        ("de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Smit", "Meijer",
         "Andersson", "Johansson", "Lindqvist", "Nilsson", "Eriksson", "Berg", "Hansen"),
    ),
    "east_asian": (
        ("Wei", "Jia Hui", "Xin Yi", "Jun Jie", "Mei Ling", "Zhi Hao", "Hui Min", "Kai",
         "Min-jun", "Seo-yeon", "Ji-ho", "Ha-eun", "Do-yun", "Su-bin", "Li Na"),
        ("Tan", "Lim", "Lee", "Ng", "Wong", "Chen", "Goh", "Chua", "Ong", "Teo", "Kim", "Park",
         "Choi", "Jung", "Kang"),
    ),
    "arabic": (
        ("Omar", "Layla", "Youssef", "Fatima", "Ahmed", "Nour", "Karim", "Mariam", "Hassan",
         "Salma", "Khalid", "Aisha", "Tariq", "Hana", "Ziad"),
        ("Hassan", "Ali", "Mahmoud", "Ibrahim", "Haddad", "Nasser", "Farouk", "Khalil", "Saleh",
         "Mansour", "Aziz", "Rahman", "Saeed", "Hamdan", "Karam"),
    ),
}  # fmt: skip
CULTURES = tuple(NAMES)

COMPANY_WORDS = (
    ("Blue", "Bright", "North", "Swift", "Silver", "Green", "Open", "Clear", "True", "Quiet",
     "Bold", "Summit", "Harbor", "Pine", "Cedar", "Lumen", "Atlas", "Nimbus", "Orbit", "Copper"),
    ("Labs", "Works", "Analytics", "Logistics", "Studio", "Systems", "Health", "Foods", "Media",
     "Robotics", "Finance", "Dental", "Fitness", "Legal", "Design", "Bakery", "Apparel",
     "Travel", "Learning", "Energy"),
)  # fmt: skip


@dataclass(frozen=True)
class Region:
    country: str
    weight: float
    zones: tuple[str, ...]
    locale: str
    culture: str
    company_suffixes: tuple[str, ...]
    # E.164 prefixes of ranges reserved for fiction, each followed by
    # `phone_digits` free digits. Empty: no such range, so no phone.
    phone_prefixes: tuple[str, ...] = ()
    phone_digits: int = 0


_US_AREA_CODES = (
    "212", "213", "206", "303", "305", "312", "314", "404", "415", "503", "512", "602", "612",
    "617", "619", "646", "702", "713", "718", "720", "801", "808", "919", "971", "978",
)  # fmt: skip

REGIONS = (
    Region(
        "US", 50,
        ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
         "America/Phoenix", "America/New_York", "America/Los_Angeles"),
        "en-US", "anglo", ("Inc.", "LLC", "Co.", ""),
        tuple(f"+1{area}55501" for area in _US_AREA_CODES), 2,
    ),
    Region(
        "CA", 5, ("America/Toronto", "America/Vancouver"), "en-CA", "anglo", ("Inc.", "Ltd."),
        tuple(f"+1{area}55501" for area in ("416", "604", "613", "403", "514")), 2,
    ),
    Region(
        "GB", 12, ("Europe/London",), "en-GB", "anglo", ("Ltd", "plc", ""),
        # Ofcom's drama numbers: 07700 900xxx and <city code> 496 0xxx (or 498 0xxx).
        ("+447700900", "+442079460", "+441134960", "+441214960", "+441314960", "+441414960",
         "+441514960", "+441614960", "+441174960", "+441914980"), 3,
    ),
    Region(
        "FR", 7, ("Europe/Paris",), "fr-FR", "french", ("SAS", "SARL", ""),
        # ARCEP's numbers for audiovisual works.
        ("+3319900", "+3326191", "+3335301", "+3346571", "+3353649", "+3363998"), 4,
    ),
    Region(
        "DE", 7, ("Europe/Berlin",), "de-DE", "german", ("GmbH", "AG", "UG"),
        # Bundesnetzagentur's drama numbers (Berlin, Frankfurt, Hamburg, Köln, München).
        ("+493023125", "+496990009", "+494066969", "+492214710", "+498999998"), 3,
    ),
    Region(
        "AU", 6, ("Australia/Sydney", "Australia/Melbourne", "Australia/Perth",
                  "Australia/Brisbane"),
        "en-AU", "anglo", ("Pty Ltd",),
        # ACMA's numbers for fiction: (0x) 5550 xxxx.
        ("+6125550", "+6135550", "+6175550", "+6185550"), 4,
    ),
    Region("ES", 1.5, ("Europe/Madrid",), "es-ES", "hispanic", ("S.L.", "S.A.")),
    Region("NL", 1, ("Europe/Amsterdam", "Europe/Stockholm"), "nl-NL", "dutch_nordic",
           ("B.V.", "AB")),
    Region("BR", 2, ("America/Sao_Paulo",), "pt-BR", "brazilian", ("Ltda.", "S.A.")),
    Region("MX", 1, ("America/Mexico_City", "America/Bogota"), "es-MX", "hispanic",
           ("S.A. de C.V.",)),
    Region("JP", 1.5, ("Asia/Tokyo",), "ja-JP", "japanese", ("K.K.", "G.K.")),
    Region("IN", 2, ("Asia/Kolkata",), "en-IN", "indian", ("Pvt Ltd", "LLP")),
    Region("SG", 0.5, ("Asia/Singapore", "Asia/Seoul"), "en-SG", "east_asian", ("Pte Ltd",)),
    Region("NG", 1, ("Africa/Lagos",), "en-NG", "west_african", ("Ltd",)),
    Region("KE", 0.5, ("Africa/Nairobi",), "en-KE", "east_southern_african", ("Ltd",)),
    Region("ZA", 1, ("Africa/Johannesburg",), "en-ZA", "east_southern_african", ("(Pty) Ltd",)),
    Region("AE", 0.5, ("Asia/Dubai", "Africa/Cairo"), "ar-AE", "arabic", ("LLC", "FZE")),
    Region("NZ", 0.5, ("Pacific/Auckland",), "en-NZ", "anglo", ("Ltd",)),
)  # fmt: skip
REGION_CUM_WEIGHTS = tuple(accumulate(r.weight for r in REGIONS))


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_text.lower() if ch.isalnum())


SLUGS = {name: slug(name) for first, last in NAMES.values() for name in (*first, *last)}


@lru_cache(maxsize=512)
def utc_offset_s(zone: str, now: datetime) -> float:
    """The zone's UTC offset at `now`, for placing activity in local hours.
    One offset per customer: a DST change shifts their day by an hour, which is
    within the spread of the hours anyway."""
    offset = ZoneInfo(zone).utcoffset(now)
    return offset.total_seconds() if offset else 0.0
