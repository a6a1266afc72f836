"""A generated demo municipality: two schools with their SFOs, 200 students, their
guardians on SMS, Telegram and e-mail, and staff, as a roster CSV (SPEC section 4).

The same seed always makes the same municipality. Its first family is fixed, so that
the README and the tests can name it: Kjersti Nordmann (SMS first) and Per Nordmann
(Telegram first), guardians of Ola (2A, with SFO) and Kari (5B) at Fjellsiden skole.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.roster.csv_rows import COLUMNS

STUDENTS = 200
SEED = 2026
MAIL_DOMAIN = "example.no"  # guardians' own addresses
WORK_DOMAIN = "example.kommune.no"  # units and staff

FIRST_NAMES = [
    "Emma", "Nora", "Sofie", "Ella", "Olivia", "Ada", "Frida", "Ingrid", "Sara", "Maja",
    "Leah", "Hedda", "Tiril", "Selma", "Astrid", "Aurora", "Amalie", "Live", "Mathea",
    "Jakob", "Emil", "Noah", "Oliver", "Filip", "William", "Lucas", "Liam", "Henrik",
    "Aksel", "Theodor", "Magnus", "Isak", "Johannes", "Sander", "Elias", "Tobias", "Jonas",
    "Mohammed", "Ali", "Amir", "Yusuf", "Aisha", "Fatima", "Zainab", "Mariam", "Ibrahim",
]  # fmt: skip
ADULT_NAMES = [
    "Anne", "Hilde", "Marianne", "Silje", "Camilla", "Ingvild", "Kristin", "Linn", "Ragnhild",
    "Tone", "Heidi", "Lene", "Anders", "Thomas", "Lars", "Morten", "Espen", "Geir", "Kjetil",
    "Håkon", "Øystein", "Eirik", "Stian", "Trond", "Hassan", "Omar", "Layla", "Samira",
]  # fmt: skip
LAST_NAMES = [
    "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Kristiansen",
    "Jensen", "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg", "Haugen", "Hagen",
    "Johannessen", "Andreassen", "Jacobsen", "Dahl", "Jørgensen", "Halvorsen", "Henriksen",
    "Lund", "Sørensen", "Jakobsen", "Moen", "Gundersen", "Iversen", "Strand", "Solberg",
    "Svendsen", "Eide", "Knutsen", "Martinsen", "Paulsen", "Bakken", "Kristoffersen",
    "Mathisen", "Lie", "Amundsen", "Nguyen", "Rasmussen", "Ali", "Lunde", "Solheim",
    "Berge", "Moe", "Nygård", "Bakke", "Kristensen", "Fredriksen", "Holm", "Lien", "Hassan",
]  # fmt: skip
# Guardians' channel orders, in turn: every channel comes first for a third of them.
CHANNELS = ["sms;email", "telegram;sms", "email;sms"]
NOTIFY = ["both", "each", "digest"]


@dataclass
class Unit:
    id: str
    name: str
    type: str  # "school" or "sfo"
    email: str
    phone: str


@dataclass
class Group:
    id: str
    unit_id: str
    name: str
    grade: int


@dataclass
class Student:
    id: str
    first_name: str
    last_name: str
    unit_id: str
    sfo_unit_id: str | None
    group_id: str


@dataclass
class Guardian:
    id: str
    first_name: str
    last_name: str
    mobile: str
    email: str
    language: str
    channels: str
    students: list[str]
    digest: bool = False
    telegram_chat: int = 0  # the chat id this parent has with the bot in the demo

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass
class Staff:
    id: str
    first_name: str
    last_name: str
    email: str
    unit_id: str
    groups: list[str]
    notify: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass
class Municipality:
    units: list[Unit] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    students: list[Student] = field(default_factory=list)
    guardians: list[Guardian] = field(default_factory=list)
    staff: list[Staff] = field(default_factory=list)

    def write_csv(self, path: Path) -> Path:
        """The roster as SPEC section 4's CSV, for `import-roster`."""
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for row in self.rows():
                writer.writerow(row)
        return path

    def rows(self) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for u in self.units:
            rows.append(
                {"kind": "unit", "unit_id": u.id, "name": u.name, "unit_type": u.type,
                 "email": u.email, "phone": u.phone}
            )  # fmt: skip
        for g in self.groups:
            rows.append({"kind": "group", "unit_id": g.unit_id, "group_id": g.id, "name": g.name})
        for s in self.students:
            rows.append(
                {"kind": "student", "student_id": s.id, "first_name": s.first_name,
                 "last_name": s.last_name, "unit_id": s.unit_id,
                 "sfo_unit_id": s.sfo_unit_id or "", "groups": s.group_id}
            )  # fmt: skip
        for p in self.guardians:
            rows.append(
                {"kind": "guardian", "guardian_id": p.id, "first_name": p.first_name,
                 "last_name": p.last_name, "mobile": p.mobile, "email": p.email,
                 "language": p.language, "channels": p.channels,
                 "students": ";".join(p.students), "digest": "yes" if p.digest else ""}
            )  # fmt: skip
        for st in self.staff:
            rows.append(
                {"kind": "staff", "staff_id": st.id, "first_name": st.first_name,
                 "last_name": st.last_name, "email": st.email, "unit_id": st.unit_id,
                 "groups": ";".join(st.groups), "notify": st.notify}
            )  # fmt: skip
        return rows

    def directory(self) -> dict[str, Any]:
        """Who the page lets you play: parents (with their children) and mailboxes."""
        students = {s.id: s for s in self.students}
        groups = {g.id: g for g in self.groups}
        units = {u.id: u for u in self.units}

        def child(student_id: str) -> dict[str, Any]:
            s = students[student_id]
            where = f"{units[s.unit_id].name} {groups[s.group_id].name}"
            if s.sfo_unit_id:
                where += " + SFO"
            units_of = [s.unit_id] + ([s.sfo_unit_id] if s.sfo_unit_id else [])
            name = f"{s.first_name} {s.last_name}"
            return {"id": s.id, "name": name, "where": where, "units": units_of}

        parents = [
            {
                "id": p.id,
                "name": p.name,
                "language": p.language,
                "channels": p.channels.split(";"),
                "digest": p.digest,
                "children": [child(s) for s in p.students],
            }
            for p in self.guardians
        ]
        mailboxes = [
            {
                "id": st.id,
                "name": st.name,
                "unit": units[st.unit_id].name,
                "notify": st.notify,
                "groups": [groups[g].name for g in st.groups],
            }
            for st in self.staff
        ]
        offices = [
            {"id": u.id, "name": f"{u.name} (postmottak)", "unit": u.name, "notify": "office"}
            for u in self.units
        ]
        return {
            "units": [{"id": u.id, "name": u.name, "type": u.type} for u in self.units],
            "groups": [{"id": g.id, "unit_id": g.unit_id, "name": g.name} for g in self.groups],
            "parents": parents,
            "mailboxes": mailboxes + [{**o, "groups": []} for o in offices],
        }

    def mailbox_address(self, mailbox_id: str) -> str | None:
        for st in self.staff:
            if st.id == mailbox_id:
                return st.email
        for u in self.units:
            if u.id == mailbox_id:
                return u.email
        return None

    def guardian(self, guardian_id: str) -> Guardian | None:
        return next((p for p in self.guardians if p.id == guardian_id), None)


def ascii_name(name: str) -> str:
    """An address-safe form of a name: `Jørgensen` -> `jorgensen`, `Håkon` -> `hakon`."""
    folded = name.lower().replace("ø", "o").replace("æ", "ae")
    return "".join(c for c in unicodedata.normalize("NFKD", folded) if c.isascii() and c.isalnum())


def generate(students: int = STUDENTS, seed: int = SEED) -> Municipality:
    """Two schools with SFOs, `students` students in eight classes, guardians and staff."""
    rng = random.Random(seed)
    m = Municipality()
    schools = [("fjell", "Fjellsiden"), ("sjo", "Sjøsiden")]
    classes = {"fjell": ["2A", "5B", "1A", "3B"], "sjo": ["1B", "2B", "4A", "6A"]}
    for n, (key, name) in enumerate(schools):
        m.units.append(
            Unit(f"u-{key}", f"{name} skole", "school", f"{key}.skole@{WORK_DOMAIN}", f"5556{n}000")
        )
        m.units.append(
            Unit(f"u-{key}-sfo", f"{name} SFO", "sfo", f"{key}.sfo@{WORK_DOMAIN}", f"5556{n}001")
        )
        for cls in classes[key]:
            m.groups.append(Group(f"g-{key}-{cls.lower()}", f"u-{key}", cls, int(cls[0])))
    by_id = {g.id: g for g in m.groups}
    mobiles = iter(range(1_000_001, 9_999_999, 7919))
    counter = {"student": 0, "guardian": 0}

    def add_student(first: str, last: str, group_id: str, sfo: bool) -> str:
        counter["student"] += 1
        group = by_id[group_id]
        sid = f"s-{counter['student']:03d}"
        sfo_unit = f"{group.unit_id}-sfo" if sfo and group.grade <= 4 else None
        m.students.append(Student(sid, first, last, group.unit_id, sfo_unit, group_id))
        return sid

    def add_guardian(first: str, last: str, kids: list[str], *, channels: str, lang: str) -> None:
        counter["guardian"] += 1
        n = counter["guardian"]
        m.guardians.append(
            Guardian(
                id=f"gd-{n:03d}",
                first_name=first,
                last_name=last,
                mobile=f"+479{next(mobiles):07d}",
                email=f"{ascii_name(first)}.{ascii_name(last)}{n}@{MAIL_DOMAIN}",
                language=lang,
                channels=channels,
                students=kids,
                digest=n % 20 == 7,
                telegram_chat=6_100_000 + n,
            )
        )

    # The fixed first family.
    ola = add_student("Ola", "Nordmann", "g-fjell-2a", True)
    kari = add_student("Kari", "Nordmann", "g-fjell-5b", False)
    add_guardian("Kjersti", "Nordmann", [ola, kari], channels="sms;email", lang="nb")
    add_guardian("Per", "Nordmann", [ola, kari], channels="telegram;sms", lang="nn")

    group_ids = [g.id for g in m.groups]
    while counter["student"] < students:
        last = rng.choice(LAST_NAMES)
        school = rng.choice(["fjell", "sjo"])
        in_school = [g for g in group_ids if g.startswith(f"g-{school}-")]
        n_kids = min(rng.choice([1, 1, 1, 2, 2, 3]), students - counter["student"])
        names = rng.sample([f for f in FIRST_NAMES if f not in ("Ola", "Kari")], n_kids)
        kids = [add_student(f, last, rng.choice(in_school), rng.random() < 0.75) for f in names]
        n_adults = rng.choice([1, 2, 2, 2])
        for first in rng.sample(ADULT_NAMES, n_adults):
            turn = counter["guardian"]
            lang = "en" if turn % 11 == 5 else "nn" if turn % 7 == 3 else "nb"
            add_guardian(first, last, kids, channels=CHANNELS[turn % 3], lang=lang)

    # Staff: a teacher for each class (notify both, each, digest in turn), a head for
    # each school (digests, the whole unit), two at each SFO.
    teachers = iter(rng.sample(ADULT_NAMES, len(ADULT_NAMES)))
    surnames = iter(rng.sample(LAST_NAMES, len(LAST_NAMES)))
    n_staff = 0

    def add_staff(unit_id: str, groups: list[str], notify: str) -> None:
        nonlocal n_staff
        n_staff += 1
        first, last = next(teachers, "Lærer"), next(surnames, "Skole")
        email = f"{ascii_name(first)}.{ascii_name(last)}@{WORK_DOMAIN}"
        m.staff.append(Staff(f"st-{n_staff:02d}", first, last, email, unit_id, groups, notify))

    for i, g in enumerate(m.groups):
        add_staff(g.unit_id, [g.id], NOTIFY[i % 3])
    for key, _ in schools:
        add_staff(f"u-{key}", [], "digest")
        add_staff(f"u-{key}-sfo", [], "both")
        add_staff(f"u-{key}-sfo", [], "digest")
    return m
