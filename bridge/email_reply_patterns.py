"""Line patterns for `bridge.email_reply`: reply headers, forwards, signatures, header blocks.

The English, Dutch, French, German, Italian, Polish, Portuguese, Russian, Spanish, Swedish,
Ukrainian, Chinese and Norwegian forms come from Discourse's email_reply_trimmer (MIT,
https://github.com/discourse/email_reply_trimmer); the other languages and client forms were
added here. Every pattern runs on one normalised line (no newline; NBSP and the like are plain
spaces; invisible format characters are gone) and is written so that a failed match costs
time about linear in the line: quantifiers are bounded, and no two adjacent ones can trade
the same characters back and forth (leading runs of blanks and quote marks are possessive).
"""

from __future__ import annotations

import re

# Lines longer than these are never taken for a reply header or a mobile signature: real
# ones are short, and the caps bound the regex work per line.
MAX_MARKER_LINE = 600
MAX_SIGNATURE_LINE = 160

_I = re.IGNORECASE


def _table(text: str) -> list[str]:
    """Read a table of literal phrases: `|` between them, `#` starts a comment."""
    return [
        " ".join(phrase.split())
        for row in text.splitlines()
        for phrase in row.split("#", 1)[0].split("|")
        if phrase.strip()
    ]


def _alt(phrases: list[str]) -> str:
    """Return a regex alternation of literal phrases, longest first ("napisał(a)", "napisał")."""
    ordered = sorted(phrases, key=len, reverse=True)
    return "(?:" + "|".join(r"\s+".join(map(re.escape, p.split())) for p in ordered) + ")"


def _endings(phrases: list[str]) -> dict[str, frozenset[str]]:
    """Index phrases by their last word (lower case), for `ending`."""
    index: dict[str, set[str]] = {}
    for phrase in phrases:
        phrase = phrase.lower()
        index.setdefault(phrase.rsplit(None, 1)[-1], set()).add(phrase)
    return {last: frozenset(group) for last, group in index.items()}


# A date before the marker word: a 4-digit year or a numeric date like 26.11.26.
_DATE = r"(?<!\d)(?:\d{4}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4})(?!\d)"

# --- "On <date>, <someone> wrote:" --------------------------------------------------------
# On Wed, Sep 25, 2013, at 03:57 PM, jorge_castro wrote:
# Le 4 janv. 2016 19:03, "Neil Lalonde" <info@discourse.org> a écrit :
# W dniu 26.11.2026 o 08:12, Lise Berg pisze:
# Opening word at the start of the line, closing word at its end. The body stops at the first
# opening or closing word, so "On this day I wrote something" is no header; it must hold a
# digit (every client writes a date), so "On Monday the teacher said:" is none either.
# Rows: (opening words, words that stop the body, closing words).
_ON_DATE_SOMEONE_WROTE: list[tuple[str, str, str]] = [
    ("在", "在|写道", "写道"),  # Chinese
    ("Op", r"Op|het\svolgende|schreef", r"het\svolgende\sgeschreven|schreef[^:]{1,200}:"),  # Dutch
    ("In message", "In message|writes", "writes"),  # English
    ("On|At", "On|wrote|writes|says|said", "wrote|writes|says|said"),  # English
    ("Le", r"Le|nous\sa\sdit|a\s+écrit", r"nous\sa\sdit|a\s+écrit"),  # French
    ("Am", r"Am|schrieben\sSie", r"schrieben\sSie"),  # German
    ("Am", "Am|geschrieben", r"geschrieben|schrieb[^:]{1,200}:"),  # German
    ("Il", r"Il|ha\sscritto", r"ha\sscritto"),  # Italian
    ("Dnia|Dňa|W dniu", "Dnia|Dňa|dniu|napisał|pisze", r"napisał(?:\(a\)|a)?|pisze"),  # Polish
    ("Em", "Em|escreveu", "escreveu"),  # Portuguese
    ("El", "El|escribió", "escribió"),  # Spanish
]

# One regex for all rows: a single call per line.
ON_DATE_SOMEONE_WROTE = re.compile(
    "|".join(
        rf"(?:^[ \t<>-]*+(?:{on})\s(?=.*\d)(?:(?!\b(?:{stop})\b).){{1,400}}?(?:{wrote})[ \t.:>-]*$)"
        for on, stop, wrote in _ON_DATE_SOMEONE_WROTE
    ),
    _I,
)
# Cheap test for a line that may begin such a header spread over several lines.
ON_DATE_OPENER = re.compile(
    r"^[ \t<>-]*+(?:" + "|".join(on for on, _, _ in _ON_DATE_SOMEONE_WROTE) + r")\s", _I
)

# --- "<date> skrev <someone>:" -- the verb comes before the name ---------------------------
# Am 18.09.2013 um 16:24 schrieb codinghorror <info@discourse.org>:
# Den 15. jun. 2016 kl. 20.42 skrev Jeff Atwood <info@discourse.org>:
# tor. 26. nov. 2026 kl. 08:12 skrev Lise Berg <lise@example.no>:        (Gmail, Norwegian)
# في الخميس، 26 نوفمبر 2026 في 8:12 ص، كتب Lise Berg <lise@example.no>:   (Gmail, Arabic)
_VERBS_BEFORE_NAME = _table("""
    skrev | skreiv      # Norwegian, Danish, Swedish
    schrieb             # German
    schreef             # Dutch
    كتب                 # Arabic
""")
_VERB_BEFORE_NAME = _alt(_VERBS_BEFORE_NAME)
ON_DATE_WROTE_SOMEONE = [
    re.compile(rf"^[ \t>]*+(?:Op|Am|Den|På)\s.{{1,300}}?\s{_VERB_BEFORE_NAME}\s[^:]{{1,300}}:"),
    re.compile(
        rf"^[ \t>]*+(?=.{{0,150}}?{_DATE}).{{0,200}}?\s{_VERB_BEFORE_NAME}\s.{{1,300}}:[ \t]*$", _I
    ),
]

# --- "<date> <someone> napisał(a):" -- the verb ends the line ------------------------------
# суббота, 14 марта 2015 г. пользователь etewiah написал:
# 23 mar 2017 21:25 "Neil Lalonde" <meta@discoursemail.com> napisał(a):
# 30 серп. 2016 р. 20:45 "Arpit" no-reply@example.com пише:
_VERBS_LAST = _table("""
    napisał(a) | napisała | napisał | pisze             # Polish
    пише | написав(ла) | написала | написав             # Ukrainian
    написал(а) | написала | написал | пишет             # Russian
    написа | написао | написала                         # Bulgarian, Serbian
    napsal(a) | napsala | napsal                        # Czech
    je napisao/la | je napisao | je napisala            # Croatian, Bosnian
    kirjoitti                                           # Finnish
    kirjutas                                            # Estonian
    rašė                                                # Lithuanian
    rakstīja                                            # Latvian
    yazdı                                               # Turkish
    qoray                                               # Somali
    a scris                                             # Romanian
    shkroi                                              # Albanian
    έγραψε                                              # Greek
    đã viết                                             # Vietnamese
    نے لکھا | لکھا                                      # Urdu
    نوشت                                                # Persian
    ने लिखा                                             # Hindi
    写道 | 寫道                                          # Chinese
""")
_VERB_LAST_ENDINGS = _endings(_VERBS_LAST)

# --- "<date> <someone> <email>:" ------------------------------------------------------------
# 2015-10-18 0:17 GMT+03:00 Matt Palmer <info@discourse.org>:
# вт, 5 янв. 2016 г. в 23:39, Erlend Sogge Heggen <info@discourse.org>:
DATE_SOMEONE_EMAIL = re.compile(
    r"(?<!\d)\d{4}.{1,80}?\s?<[^@<>]{1,200}@[^@<>.]{1,200}\.[^@<>]{1,200}>:?$"
)

# --- "<someone> wrote on <date>:" -----------------------------------------------------------
# Max Mustermann <try_discourse@discoursemail.com> schrieb am Fr., 28. Apr. 2017 um 11:53 Uhr:
_WROTE_ON = _alt(
    _table("""
    wrote on                                # English
    skrev den | skrev på | skreiv den       # Norwegian, Danish, Swedish
    schrieb am                              # German
    schreef op                              # Dutch
    a écrit le                              # French
    escribió el                             # Spanish
    escreveu em                             # Portuguese
    ha scritto il                           # Italian
""")
)
SOMEONE_WROTE_ON_DATE = re.compile(rf"^.{{1,300}}?\b{_WROTE_ON}\b(?=.*\d).{{1,300}}:[ \t]*$", _I)
# Cheap test for a line that may begin such a header spread over several lines.
WROTE_ON_OPENER = re.compile(rf"\b{_WROTE_ON}\b", _I)

# --- other reply headers --------------------------------------------------------------------
# 2016-03-03 17:21 GMT+01:00 Some One
ISO_DATE_SOMEONE = re.compile(r"^[ \t>]*+20\d\d-\d\d-\d\d \d\d:\d\d GMT\+\d\d:\d\d [\w \t]+$")

# codinghorror via Discourse Meta wrote:
SOMEONE_VIA_SOMETHING_WROTE = re.compile(r"^.{1,300}? via .{1,300}? (?:wrote|schrieb):?[ \t]*$")

# Some One <info@discourse.org> wrote:   Lise Berg <lise@example.no> skrev:
_WROTE_ENDINGS = _endings(
    _VERBS_LAST
    + _table("""
    wrote                                   # English
    skrev | skreiv                          # Norwegian, Danish, Swedish
    schrieb                                 # German
    schreef                                 # Dutch
    a écrit                                 # French
    escribió                                # Spanish
    escreveu                                # Portuguese
    ha scritto                              # Italian
""")
)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,100}@[\w-]{1,100}(?:\.[\w-]{1,100}){0,10}\.\w{2,}\b")

# Posted by mpalmer on 01/21/2016
POSTED_BY_SOMEONE_ON_DATE = re.compile(r"^[ \t>]*+Posted by .{1,200} on \d{2}/\d{2}/\d{4}$", _I)

# --- forwarded and original messages --------------------------------------------------------
# Apple Mail and others: a line of its own that ends with a colon.
_BEGIN_FORWARDED = _alt(
    _table("""
    Begin forwarded message                                             # English
    Begynnelse på videresendt melding | Videresendt melding             # Norwegian
    Begynnelse på videresendt e-post | Videresendt e-post               # Norwegian
    Start på videresendt besked | Videresendt besked                    # Danish
    Vidarebefordrat brev | Vidarebefordrat meddelande                   # Swedish
    Anfang der weitergeleiteten Nachricht | Weitergeleitete Nachricht   # German
    Début du message transféré | Début du message réexpédié             # French
    Inicio del mensaje reenviado | Comienzo del mensaje reenviado       # Spanish
    Początek przekazywanej wiadomości                                   # Polish
    Początek wiadomości przekazanej dalej                               # Polish
    Початок пересланого повідомлення                                    # Ukrainian
    Начало переадресованного сообщения                                  # Russian
    Begin doorgestuurd bericht                                          # Dutch
    Inizio messaggio inoltrato                                          # Italian
    Início da mensagem reencaminhada | Início da mensagem encaminhada   # Portuguese
    Välitetty viesti alkaa                                              # Finnish
    بداية الرسالة المعاد توجيهها                                          # Arabic
""")
)
# Between runs of dashes: "---------- Forwarded message ---------", "-----Original Message-----".
_DASHED_TITLES = _alt(
    _table("""
    Forwarded Message | Original Message | Reply Message                        # English
    Videresendt melding | Opprinnelig melding | Original melding                # Norwegian
    Videresendt e-post | Opprinnelig e-post                                     # Norwegian
    Vidaresendt melding | Opphavleg melding                                     # Nynorsk
    Videresendt besked | Videresendt meddelelse                                 # Danish
    Oprindelig besked | Oprindelig meddelelse                                   # Danish
    Vidarebefordrat meddelande | Vidarebefordrat brev                           # Swedish
    Ursprungligt meddelande                                                     # Swedish
    Weitergeleitete Nachricht | Ursprüngliche Nachricht                         # German
    Message transféré | Message d'origine | Message original                    # French
    Mensaje reenviado | Mensaje original                                        # Spanish
    Przekazana wiadomość | Wiadomość przekazana                                 # Polish
    Oryginalna wiadomość | Wiadomość oryginalna                                 # Polish
    Пересланий лист | Переслане повідомлення | Початкове повідомлення           # Ukrainian
    Оригінальне повідомлення | Вихідне повідомлення                             # Ukrainian
    Пересылаемое сообщение | Пересланное сообщение | Исходное сообщение         # Russian
    Оригинальное сообщение                                                      # Russian
    Doorgestuurd bericht | Oorspronkelijk bericht                               # Dutch
    Messaggio inoltrato | Messaggio originale                                   # Italian
    Mensagem encaminhada | Mensagem original                                    # Portuguese
    Välitetty viesti | Alkuperäinen viesti                                      # Finnish
    Yönlendirilen ileti | Özgün İleti | Orijinal ileti                          # Turkish
    Persiųstas laiškas | Originalus laiškas                                     # Lithuanian
    الرسالة المعاد توجيهها | رسالة محولة | الرسالة الأصلية                      # Arabic
    原始邮件 | 转发邮件 | 原始郵件                                              # Chinese
""")
)
FORWARDED = [
    re.compile(rf"^[ \t>]*+{_BEGIN_FORWARDED}[ \t]*:", _I),
    re.compile(rf"^[ \t>*]*+-{{2,}}[ \t]*{_DASHED_TITLES}[ \t]*-{{2,}}", _I),
]

# --- the tests on one line ------------------------------------------------------------------
# Each test first looks for something cheap (a digit, a colon at the end, a closing word)
# before it runs its costlier regex.
_DIGIT = re.compile(r"\d")
_DATE_RE = re.compile(_DATE)
_WROTE_ON_WORDS = ("wrote", "schrieb", "skrev", "skreiv", "schreef", "écrit", "escri", "scritto")
_CLOSER_ENDINGS = _endings(
    _table("""
        wrote | writes | says | said                    # English
        geschreven | schreef                            # Dutch
        a écrit | nous a dit                            # French
        schrieben Sie | geschrieben | schrieb           # German
        ha scritto                                      # Italian
        napisał(a) | napisała | napisał | pisze         # Polish
        escreveu                                        # Portuguese
        escribió                                        # Spanish
        skrev | skreiv                                  # Norwegian, Danish, Swedish
        写道                                            # Chinese
    """)
)

# Where a header spread over lines may begin, found in the whole text at once: a line with a
# digit or an address (every such header has one or the other on its first line), or one that
# starts with an opening word. Each match runs to the end of its line: one match a line.
MAY_OPEN_MARKER = [
    re.compile(r"[\d@][^\n]*"),
    re.compile(rf"{ON_DATE_OPENER.pattern}[^\n]*", _I | re.MULTILINE),
]


def may_end_marker(part: str) -> bool:
    """Whether a stripped line can be the last line of a reply header spread over lines."""
    if part.endswith((":", ">")):
        return True
    end = part.rstrip(" \t.:>-")
    # Every closing word ends with a letter or with "(a)".
    return (end[-1:].isalpha() or end.endswith(")")) and ending(end, _CLOSER_ENDINGS) >= 0


def ending(text: str, phrases: dict[str, frozenset[str]]) -> int:
    """Return where a phrase of `phrases` (up to 3 words, any case) ends `text`, or -1."""
    words = text.rsplit(None, 3)
    group = phrases.get(words[-1].lower()) if words else None
    if group is None:
        return -1
    if len(words) == 4:
        del words[0]  # the text before the last three words
    for k in range(len(words), 0, -1):
        if " ".join(words[-k:]).lower() in group:
            start = len(text)
            for word in reversed(words[-k:]):
                start = text.rfind(word, 0, start)
            return start
    return -1


def on_date_someone_wrote(line: str) -> bool:
    """Whether a line is an "On <date>, <someone> wrote:" header."""
    return ON_DATE_OPENER.match(line) is not None and ON_DATE_SOMEONE_WROTE.match(line) is not None


def on_date_wrote_someone(line: str) -> bool:
    """Whether a line is a "<date> skrev <someone>:" header."""
    if ":" not in line:
        return False
    if ON_DATE_WROTE_SOMEONE[0].match(line):
        return True
    end = line.rstrip()
    if not end.endswith(":"):
        return False
    low = end.lower()
    return any(v in low for v in _VERBS_BEFORE_NAME) and bool(ON_DATE_WROTE_SOMEONE[1].match(end))


def date_someone_wrote(line: str) -> bool:
    """Whether a line is a "<date> <someone> napisał(a):" header."""
    end = line.rstrip()
    if not end.endswith(":"):
        return False
    head = end[:-1].rstrip()
    verb = ending(head, _VERB_LAST_ENDINGS)
    # A date, then at least one character, then the verb; upstream allows 160 between.
    return verb > 0 and _DATE_RE.search(head, max(0, verb - 200), verb - 1) is not None


def date_someone_email(line: str) -> bool:
    """Whether a line is a "<date> <someone> <email>:" header."""
    end = line.rstrip()
    return end.endswith((">", ">:")) and DATE_SOMEONE_EMAIL.search(end) is not None


def someone_wrote_on_date(line: str) -> bool:
    """Whether a line is a "<someone> wrote on <date>:" header."""
    end = line.rstrip()
    if not end.endswith(":"):
        return False
    low = end.lower()
    return any(w in low for w in _WROTE_ON_WORDS) and bool(SOMEONE_WROTE_ON_DATE.match(end))


def someone_email_wrote(line: str) -> bool:
    """Whether a line is a "<someone> <email> wrote:" header."""
    head = line.rstrip().removesuffix(":").rstrip()
    verb = ending(head, _WROTE_ENDINGS)
    # Something, the address, something, the verb.
    return verb > 2 and _EMAIL.search(head, 1, verb - 1) is not None


def is_embedded(line: str) -> bool:
    """Whether a normalised line starts a quoted or forwarded mail (a reply header and such)."""
    if len(line) > MAX_MARKER_LINE:
        return False
    if _DIGIT.search(line) and (
        on_date_someone_wrote(line)
        or on_date_wrote_someone(line)
        or date_someone_wrote(line)
        or date_someone_email(line)
        or someone_wrote_on_date(line)
        or ISO_DATE_SOMEONE.match(line)
        or POSTED_BY_SOMEONE_ON_DATE.match(line)
    ):
        return True
    if " via " in line and SOMEONE_VIA_SOMETHING_WROTE.match(line):
        return True
    if "@" in line and someone_email_wrote(line):
        return True
    # "Begin forwarded message:" has a colon, "--- Original Message ---" dashes.
    return (":" in line and FORWARDED[0].match(line) is not None) or (
        "--" in line and FORWARDED[1].match(line) is not None
    )


# --- header blocks of Outlook and others: "Fra: … Sendt: … Til: … Emne: …" ------------------
# Header names whose value is a date, so holds a digit. Case matters here, as upstream.
_HEADERS_WITH_DATE = _alt(
    _table("""
    Sendt | Dato                                        # Norwegian, Danish
    Sent | Date                                         # English
    Le | Envoyé                                         # French
    Gesendet | Datum                                    # German, Dutch, Swedish
    Enviada em | Enviado                                # Portuguese, Spanish
    Fecha                                               # Spanish
    Data | Inviato                                      # Italian, Polish
    Verzonden                                           # Dutch
    Skickat                                             # Swedish
    Wysłano | Wysłane                                   # Polish
    Надіслано | Дата                                    # Ukrainian
    Отправлено                                          # Russian
    Lähetetty | Päivämäärä                              # Finnish
    Gönderildi | Tarih | Gönderilme Tarihi              # Turkish
    Išsiųsta                                            # Lithuanian
    تاريخ الإرسال | التاريخ | أرسل | أرسلت | تم الإرسال    # Arabic
    发送时间 | 日期                                      # Chinese
""")
)
# Header names with any value; case does not matter.
_HEADERS_WITH_TEXT = _alt(
    _table("""
    Fra | Frå | Til | Kopi | Blindkopi | Emne | Svar til            # Norwegian, Danish
    From | To | Cc | Bcc | Reply-To | Subject                       # English
    De | Expéditeur | À | Destinataire | Répondre à | Objet         # French
    Von | An | Betreff | Antwort an                                 # German
    Para | Assunto                                                  # Portuguese
    Asunto | Responder a                                            # Spanish
    Da | Risposta | A | Oggetto                                     # Italian
    Van | Beantwoorden - Aan | Aan | Onderwerp                      # Dutch
    Från | Till | Kopia | Ämne                                      # Swedish
    Od | Do | DW | Temat                                            # Polish
    Від | Кому | Копія | Тема                                       # Ukrainian
    От | Копия                                                      # Russian
    Lähettäjä | Vastaanottaja | Kopio | Aihe                        # Finnish
    Kimden | Kime | Bilgi | Konu                                    # Turkish
    Nuo | Kam                                                       # Lithuanian
    من | إلى | نسخة | الموضوع                                       # Arabic
    发件人 | 收件人 | 抄送 | 主题                                     # Chinese
""")
)
EMAIL_HEADER = [
    re.compile(rf"^[ \t*]*+{_HEADERS_WITH_DATE}[ \t*]*:.*\d"),
    re.compile(rf"^[ \t*]*+{_HEADERS_WITH_TEXT}[ \t*]*:.*\w", _I),
]


def is_email_header(line: str) -> bool:
    """Whether a normalised line is a header of a quoted mail ("Fra: …", "Sendt: …")."""
    # The colon follows a short header name (and maybe blanks or "*"): cheap to rule out.
    colon = line.find(":")
    return 0 < colon <= 60 and any(r.match(line) for r in EMAIL_HEADER)


# --- mobile and client signatures -----------------------------------------------------------
# Envoyé depuis mon iPhone · Sendt fra min iPhone · Hentet fra Outlook for Android · …
_SIGNATURES = [
    # English
    r"\w+ from mobile",
    r"[(<]*Sent (?:from|via|with|by) \S",
    r"From my(?:\s+\S+){1,3}\s*$",
    r"Get Outlook for ",
    # Norwegian, Danish
    r"Sendt fr[aå] (?:min|mi|mitt|E-post|Outlook|Mail|Yahoo|Samsung|Huawei|iPhone"
    r"|iPad|Android|Gmail|BlueMail|mobil(?:en|telefon(?:en)?)?)\b",
    r"(?:Hentet fra|Hent|Skaff deg|Få) Outlook (?:for|til) ",
    # Swedish
    r"(?:Skickat |Skickades )?från (?:min|E-post|Outlook|Mail)\b",
    r"Hämta Outlook för ",
    # German
    r"Von meinem .+ gesendet",
    r"Diese Nachricht wurde von .+ gesendet",
    r"Gesendet (?:von|mit|vom) (?:meinem|meiner|der|dem|\w+ für)\b",
    r"Outlook für \w+ beziehen",
    # French
    r"Envoyé (?:depuis|de) (?:mon|ma|Yahoo Mail|Outlook|Courrier)",
    r"Obtenir Outlook pour ",
    # Spanish, Portuguese
    r"Enviado desde mi ",
    r"Enviado (?:do|desde o) meu ",
    r"(?:Obtener|Obtenha|Obter) (?:o )?Outlook (?:para|for) ",
    # Italian
    r"Inviato da ",
    # Dutch
    r"Verzonden (?:met|vanaf) ",
    r"Verstuurd (?:vanaf|met) ",
    # Polish
    r"Wysłan[eo] z ",
    r"Pobierz (?:aplikację )?Outlook",
    # Ukrainian, Russian
    r"(?:Надіслано|Відправлено|Отправлено) (?:з|с|із|из) ",
    # Finnish, Turkish, Lithuanian
    r"Lähetetty \w+sta\b",
    r"\S+ gönderildi\s*$",
    r"Išsiųsta iš ",
    # Somali
    r"Laga soo diray ",
    # Arabic
    r"(?:أُرسلت|أرسلت|مرسل|مُرسل|تم الإرسال|أُرسل|أرسل) من ",
    # Chinese
    r"從我的 iPhone 傳送",
    r"发自我的",
]
SIGNATURE = re.compile(r"^\s*+(?:" + "|".join(_SIGNATURES) + ")", _I)
# Markdown links "[text](url)" in a signature line count as their text.
MARKDOWN_LINK = re.compile(r"\[([^\[\]]{1,200})\]\([^()]{1,500}\)")

# --- other line kinds -----------------------------------------------------------------------
DELIMITER = re.compile(r"^[ \t]*[-_,=+~#*ᐧ—–]+[ \t]*$")
QUOTE = re.compile(r"^[ \t]*>")
CODE_CLOSE = re.compile(r"^ {0,3}```\s*$")
