"""`strip_reply`: the peer's reply-trimming corpus, Norwegian and other mail clients, edge cases."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge.email_reply import strip_reply

REPO = Path(__file__).resolve().parent.parent
# Discourse's email_reply_trimmer test cases (MIT), as the peer shares them beside the repo.
CORPUS = Path(
    os.environ.get("SKOLEBRO_TRIM_CORPUS", REPO.parent / "shared" / "peer" / "email_reply_trimmer")
)
CORPUS_NAMES = sorted(p.name for p in (CORPUS / "emails").glob("*.txt"))

# Corpus mails known to fail, with the reason: none at the moment.
KNOWN_FAILURES: dict[str, str] = {}


def normalise(text: str) -> str:
    """Compare as the peer's score_trim.py does: line endings, trailing spaces, blank ends."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _corpus_params() -> list[object]:
    return [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name])]
            if name in KNOWN_FAILURES
            else [],
        )
        for name in CORPUS_NAMES
    ]


@pytest.mark.skipif(not CORPUS_NAMES, reason=f"peer corpus not found at {CORPUS}")
@pytest.mark.parametrize("name", _corpus_params())
def test_peer_corpus(name: str) -> None:
    email = (CORPUS / "emails" / name).read_bytes().decode("utf-8", "replace")
    expected = (CORPUS / "trimmed" / name).read_bytes().decode("utf-8", "replace")
    assert normalise(strip_reply(email)) == normalise(expected)


# --- Norwegian mail clients ---------------------------------------------------------------

QUOTED = "> Hei alle foreldre,\n> husk turdag fredag.\n"

NORWEGIAN = {
    "den_skrev": (
        "Hei!\n\nOla blir hentet kl. 14.\n\nMvh\nKari\n\n"
        "Den 26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@skole.no>:\n" + QUOTED,
        "Hei!\n\nOla blir hentet kl. 14.\n\nMvh\nKari",
    ),
    "gmail": (
        "Takk for beskjed!\n\ntor. 26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@skole.no>:\n\n"
        + QUOTED,
        "Takk for beskjed!",
    ),
    "gmail_header_wrapped": (
        "Takk!\n\ntor. 26. nov. 2026 kl. 08:12 skrev Lise Berg <\nlise@skole.no>:\n\n" + QUOTED,
        "Takk!",
    ),
    "gmail_no_address": (
        "Takk!\n\ntor. 26. nov. 2026 kl. 08:12 skrev Lise Berg:\n\n" + QUOTED,
        "Takk!",
    ),
    "gmail_elided_address": (
        "Greit.\n\nDen 26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@…>:\n" + QUOTED,
        "Greit.",
    ),
    "nynorsk": (
        "Hei, eg kjem.\n\nHelsing Kari\n\n"
        "tor. 26. nov. 2026 kl. 08:12 skreiv Lise Berg <lise@skule.no>:\n" + QUOTED,
        "Hei, eg kjem.\n\nHelsing Kari",
    ),
    "thunderbird": ("Greit.\n\nDen 26.11.2026 08:12, skrev Lise Berg:\n" + QUOTED, "Greit."),
    "apple_mail_iphone": (
        "Ok\n\nSendt fra min iPhone\n\n> 26. nov. 2026 kl. 08:12 skrev Lise Berg "
        "<lise@skole.no>:\n>\n" + QUOTED,
        "Ok",
    ),
    "apple_mail_unquoted": (
        "Ok, det passer.\n\nSendt fra min iPhone\n\n"
        "26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@skole.no>:\n\nHei, kan Ola være med?\n",
        "Ok, det passer.",
    ),
    "outlook": (
        "Hei Lise,\n\nJa, det går fint.\n\nMed vennlig hilsen\nPer Hansen\n\n"
        "Fra: Lise Berg <lise@skole.no>\nSendt: torsdag 26. november 2026 08:12\n"
        "Til: Per Hansen <per@example.no>\nEmne: Foreldremøte\n\nHei Per,\nKommer du?\n",
        "Hei Lise,\n\nJa, det går fint.\n\nMed vennlig hilsen\nPer Hansen",
    ),
    "outlook_with_rule": (
        "Ja.\n\n________________________________\nFra: Lise Berg <lise@skole.no>\n"
        "Sendt: torsdag 26. november 2026 08:12\nTil: Per Hansen\nEmne: Tur\n\nHei\n",
        "Ja.",
    ),
    "outlook_mac": (
        "Ja.\n\nFra: Lise Berg <lise@skole.no>\nDato: torsdag 26. november 2026 kl. 08:12\n"
        "Til: Per Hansen <per@example.no>\nKopi: Rektor <rektor@skole.no>\nEmne: Tur\n\nHei\n",
        "Ja.",
    ),
    "outlook_for_android": (
        "Det går bra\n\nHentet fra Outlook for Android<https://aka.ms/AAb9ysg>\n"
        "________________________________\nFrom: Lise\n"
        "Sent: Thursday, November 26, 2026 8:12:00 AM\nTo: Per\nSubject: Tur\n\nHei\n",
        "Det går bra",
    ),
    "get_outlook": ("Det går bra\n\nHent Outlook for iOS<https://aka.ms/o0ukef>\n", "Det går bra"),
    "sendt_fra_min_iphone": ("Ola er syk i dag.\n\nSendt fra min iPhone\n", "Ola er syk i dag."),
    "sendt_fra_e_post": (
        "Ola er syk i dag.\n\nSendt fra E-post for Windows\n",
        "Ola er syk i dag.",
    ),
    "signature_delimiter": (
        "Hei, Ola er syk i dag.\n\nHilsen\nKari\n-- \nKari Nordmann\nTlf. 999 99 999\n",
        "Hei, Ola er syk i dag.\n\nHilsen\nKari",
    ),
    "gmail_forward": (
        "Se under.\n\n---------- Videresendt melding ---------\nFra: Lise Berg <lise@skole.no>\n"
        "Date: tor. 26. nov. 2026 kl. 08:12\nSubject: Tur\nTo: Per <per@example.no>\n\nHei\n",
        "Se under.",
    ),
    "outlook_original_message": (
        "Se under.\n\n-----Opprinnelig melding-----\nFra: Lise Berg\n"
        "Sendt: 26. november 2026 08:12\nTil: Per\nEmne: Tur\n\nHei\n",
        "Se under.",
    ),
    "apple_forward": (
        "Se under.\n\nBegynnelse på videresendt melding:\n\n> Fra: Lise Berg <lise@skole.no>\n"
        "> Emne: Tur\n>\n> Hei\n",
        "Se under.",
    ),
    "reply_below_quote": (
        "Den 26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@skole.no>:\n> Hei\n> Går det bra?\n\n"
        "Bare bra, takk!\n",
        "Bare bra, takk!",
    ),
    "interleaved": (
        "> Kan Ola komme på fredag?\n\nJa, han kommer.\n\n> Tar han med matpakke?\n\nJa.\n",
        "> Kan Ola komme på fredag?\n\nJa, han kommer.\n\n> Tar han med matpakke?\n\nJa.",
    ),
}


@pytest.mark.parametrize("body,expected", NORWEGIAN.values(), ids=NORWEGIAN.keys())
def test_norwegian(body: str, expected: str) -> None:
    assert strip_reply(body) == expected


# Text that only looks a little like a header or a signature stays.
KEPT = {
    "mvh_sign_off": "Hei,\nOla er syk.\nmvh\nKari",
    "lone_til_line": "Hei!\nTil: alle i 3B\nVi har tur.",
    "den_skrev_sentence": "Den 3. mai skrev læreren at vi skulle ta med matpakke.\nTakk",
    "on_monday_said": "On Monday the teacher said:\nbring lunch",
    "from_my_side": "From my side it is fine.\nSee you.",
    "sendt_fra_skolen": "Lappen ble sendt fra skolen i går.\nTakk",
    "dashes_in_text": "Dette er ikke en --- skillelinje.",
    "code_block": "Se her:\n\n```\n--\n# ikke slett\n```\n\nTakk",
}


@pytest.mark.parametrize("body", KEPT.values(), ids=KEPT.keys())
def test_text_that_only_looks_like_a_marker_is_kept(body: str) -> None:
    assert strip_reply(body) == body


# --- other languages a parent may write in ----------------------------------------------------

OTHER_LANGUAGES = {
    "swedish_gmail": ("Tack!", "tors 26 nov. 2026 kl 08:12 skrev Lise Berg <lise@skola.se>:"),
    "swedish_outlook": (
        "Tack!",
        "Från: Lise Berg <lise@skola.se>\nSkickat: den 26 november 2026 08:12\nTill: Per\n"
        "Ämne: Utflykt",
    ),
    "danish": ("Tak!", "Den 26. nov. 2026 kl. 08.12 skrev Lise Berg <lise@skole.dk>:"),
    "german_gmail": (
        "Danke!",
        "Am Do., 26. Nov. 2026 um 08:12 Uhr schrieb Lise Berg <lise@schule.de>:",
    ),
    "german_outlook": (
        "Danke!",
        "-----Ursprüngliche Nachricht-----\nVon: Lise Berg <lise@schule.de>\n"
        "Gesendet: Donnerstag, 26. November 2026 08:12\nAn: Per\nBetreff: Ausflug",
    ),
    "german_inbox": (
        "Danke!",
        "Lise Berg <lise@schule.de> schrieb am Do., 26. Nov. 2026, 08:12:",
    ),
    "french_gmail": (
        "Merci !",
        "Le jeu. 26 nov. 2026 à 08:12, Lise Berg <lise@ecole.fr> a écrit :",
    ),
    "french_narrow_nbsp": (
        "Merci !",
        "Le jeu. 26 nov. 2026 à 08:12, Lise Berg <lise@ecole.fr> a\u00a0écrit\u202f:",
    ),
    "french_outlook": (
        "Merci !",
        "De : Lise Berg <lise@ecole.fr>\nEnvoyé : jeudi 26 novembre 2026 08:12\nÀ : Per\n"
        "Objet : Sortie",
    ),
    "spanish_gmail": (
        "¡Gracias!",
        "El jue, 26 nov 2026 a las 8:12, Lise Berg (<lise@escuela.es>) escribió:",
    ),
    "spanish_outlook": (
        "¡Gracias!",
        "-----Mensaje original-----\nDe: Lise Berg\nEnviado: jueves, 26 de noviembre de 2026 8:12\n"
        "Para: Per\nAsunto: Excursión",
    ),
    "polish_gmail": (
        "Dziękuję!",
        "czw., 26 lis 2026 o 08:12 Lise Berg <lise@szkola.pl> napisał(a):",
    ),
    "polish_thunderbird": ("Dziękuję!", "W dniu 26.11.2026 o 08:12, Lise Berg pisze:"),
    "polish_outlook": (
        "Dziękuję!",
        "Od: Lise Berg <lise@szkola.pl>\nWysłano: czwartek, 26 listopada 2026 08:12\nDo: Per\n"
        "Temat: Wycieczka",
    ),
    "ukrainian_gmail": ("Дякую!", "чт, 26 лист. 2026 р. о 08:12 Lise Berg <lise@school.ua> пише:"),
    "ukrainian_outlook": (
        "Дякую!",
        "Від: Lise Berg <lise@school.ua>\nНадіслано: 26 листопада 2026 р. 8:12\nКому: Per\n"
        "Тема: Екскурсія",
    ),
    "russian_gmail": ("Спасибо!", "чт, 26 нояб. 2026 г. в 08:12, Lise Berg <lise@school.ru>:"),
    "arabic_gmail": (
        "شكرا لك",
        "في الخميس، 26 نوفمبر 2026 في 8:12 ص، كتب Lise Berg <lise@school.no>:",
    ),
    "arabic_outlook": (
        "شكرا لك",
        "من: Lise Berg <lise@school.no>\nتاريخ الإرسال: الخميس، 26 نوفمبر 2026 08:12\n"
        "إلى: Per\nالموضوع: رحلة",
    ),
    "somali": ("Mahadsanid", "Khamiis, 26 Nof 2026, 08:12 Lise Berg <lise@school.no> wuxuu qoray:"),
    "turkish_gmail": (
        "Teşekkürler",
        "Lise Berg <lise@okul.tr>, 26 Kas 2026 Per, 08:12 tarihinde şunu yazdı:",
    ),
    "finnish_gmail": ("Kiitos", "to 26.11.2026 klo 8.12 Lise Berg (lise@koulu.fi) kirjoitti:"),
    "lithuanian_gmail": ("Ačiū", "2026-11-26, kt, 08:12 Lise Berg <lise@mokykla.lt> rašė:"),
    "english_gmail": (
        "Thanks",
        "On Thu, Nov 26, 2026 at 8:12 AM Lise Berg <lise@school.no> wrote:",
    ),
    "english_outlook": (
        "Thanks",
        "-----Original Message-----\nFrom: Lise Berg\nSent: Thursday, November 26, 2026 8:12 AM\n"
        "To: Per\nSubject: Trip",
    ),
}


@pytest.mark.parametrize("reply,header", OTHER_LANGUAGES.values(), ids=OTHER_LANGUAGES.keys())
def test_other_languages(reply: str, header: str) -> None:
    body = f"{reply}\n\n{header}\n\n> Hei\n> hei\n\nLise\n"
    assert strip_reply(body) == reply


@pytest.mark.parametrize(
    "signature",
    [
        "Sent from my iPhone",
        "Sendt fra min iPad",
        "Sendt frå min iPhone",
        "Hentet fra Outlook for Android",
        "Skickat från min iPhone",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "Enviado desde mi iPhone",
        "Wysłane z iPhone'a",
        "Надіслано з iPhone",
        "أُرسلت من الـ iPhone الخاص بي",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
    ],
)
def test_mobile_signatures(signature: str) -> None:
    assert strip_reply(f"Ola kommer i morgen.\n\n{signature}\n") == "Ola kommer i morgen."


# --- odd input --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["", "\n", "  \r\n\t\n", "\u200b\u200f\n\u00a0", "\ufeff"])
def test_empty_body(body: str) -> None:
    assert strip_reply(body) == ""


def test_crlf_and_lone_cr() -> None:
    body = "Hei\r\n\r\nDen 26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@skole.no>:\r\n> Hei\r\n"
    assert strip_reply(body) == "Hei"
    assert strip_reply("Linje 1\rLinje 2\r\r-- \rKari\r") == "Linje 1\nLinje 2"


def test_invisible_characters_do_not_hide_a_header_but_stay_in_the_text() -> None:
    rtl = "\u200f"
    body = (
        f"{rtl}شكرا لك\n\n{rtl}في الخميس، 26 نوفمبر 2026 في 8:12 ص، كتب Lise <lise@school.no>:\n"
        f"\n{rtl}> مرحبا\n"
    )
    assert strip_reply(body) == f"{rtl}شكرا لك"
    body = "Hei\u00a0der\n\n\u200bSendt\u00a0fra\u00a0min\u00a0iPhone\n\u2060\n"
    assert strip_reply(body) == "Hei\u00a0der"
    assert strip_reply("\ufeffHei\n") == "Hei"


def test_body_that_is_only_a_quote() -> None:
    assert strip_reply("> Hei\n> på deg\n") == "> Hei\n> på deg"  # nothing else to keep
    # A quoted reply with its header and no new text: nothing is new.
    assert strip_reply("Den 26. nov. 2026 kl. 08:12 skrev Lise <lise@skole.no>:\n> Hei\n") == ""


def test_indentation_of_first_line_is_kept() -> None:
    assert strip_reply("    kode()\nTakk\n") == "    kode()\nTakk"


# --- time on pathological input ---------------------------------------------------------------

PATHOLOGICAL: dict[str, Callable[[int], str]] = {
    "one_long_line": lambda n: "a.b@c " * (n // 6),
    "many_short_lines": lambda n: "x\n" * (n // 2),
    "quote_marks": lambda n: ">" * n,
    "openers_without_closer": lambda n: "On 2016 x y z\n" * (n // 14),
    "wrapped_header_starts": lambda n: "2016 x <\n<a@b.c>:\n" * (n // 18),
    "dates_and_verbs": lambda n: "Den 1. mai 2026 skrev skrev skrev napisał(a)\n" * (n // 46),
    "header_blocks": lambda n: "Fra: a\ntekst\n\n" * (n // 14),
    "text_then_marker": lambda n: "tekst\nOn 1 Jan 2016, X wrote:\n> q\n" * (n // 35),
    "markdown_links": lambda n: "[x](" * (n // 4),
    "token_soup": lambda n: (
        "On 2016 <a@b.c> wrote: schrieb am > | ``` -- Fra: Sendt: 12:30 \u200f\u00a0\n" * n
    )[:n],
}


def _cpu_seconds(text: str) -> float:
    start = time.process_time()
    strip_reply(text)
    return time.process_time() - start


@pytest.mark.parametrize("make", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_input_takes_linear_time(make: Callable[[int], str]) -> None:
    small, large = make(250_000), make(1_000_000)
    t_small = min(_cpu_seconds(small) for _ in range(2))
    t_large = _cpu_seconds(large)
    # A megabyte in a few seconds even on a slow, busy machine (about 1 s here) ...
    assert t_large < 8.0
    # ... and 4 times the input costs about 4 times the time, not 16 (quadratic).
    assert t_large < 8 * t_small + 0.25


def test_long_thread_keeps_only_the_reply() -> None:
    block = (
        "Den 26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@skole.no>:\n> Hei alle foreldre,\n"
        "> husk turdag fredag.\n>\n> Fra: Rektor <rektor@skole.no>\n"
        "> Sendt: onsdag 25. november 2026 14:00\n> Til: Lise Berg\n> Emne: Turdag\n>\n"
        ">> Hei Lise, kan du minne foreldrene på turen?\n>>\n>> Mvh\n>> Rektor\n>\n"
    )
    reply = "Hei Lise,\n\nOla kommer, han tar med matpakke.\n\nMvh\nKari"
    body = reply + "\n\nSendt fra min iPhone\n\n" + block * (1_000_000 // len(block))
    start = time.process_time()
    assert strip_reply(body) == reply
    assert time.process_time() - start < 5.0


# --- properties -------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "On 26 Nov 2026, Lise <l@s.no> wrote:",
        "Den 26. nov. 2026 kl. 08:12 skrev Lise <l@s.no>:",
        "Fra: Lise",
        "Sendt: 26.11.2026",
        "Til: Per",
        "Emne: Tur",
        "> sitat",
        "Sendt fra min iPhone",
        "-- ",
        "____",
        "```",
        "",
        "Hei",
        "Ola er syk i dag.",
        "Mvh Kari",
        "C> gammelt sitat",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PIECES, st.text(max_size=30)), max_size=30))
def test_answer_is_lines_of_the_input_in_order(pieces: list[str]) -> None:
    text = "\n".join(pieces)
    flat = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in flat.split("\n")]
    # Upstream rewrites ">>>> … <<<<" blocks into "> " quotes; that is the one exception.
    assume(not any(line.startswith(">>>") for line in lines))
    out = strip_reply(text)
    if not out:
        return
    rest = iter(lines)
    for line in out.split("\n"):
        assert any(line.rstrip() == candidate for candidate in rest), line
