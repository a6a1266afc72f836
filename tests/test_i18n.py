"""Every text a person reads exists in nb, nn and en, with the same placeholders."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from bridge.i18n import LANGUAGES, catalog_ids, translate

REPO = Path(__file__).resolve().parent.parent
FIELDS = re.compile(r"\{(\w+)\}")


def test_catalogs_cover_every_message_in_the_code(tmp_path: Path) -> None:
    pot = tmp_path / "skolebro.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "--no-default-keywords",
         "-k", "_", "-k", "translate:2", "-o", str(pot), "bridge"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    with pot.open("rb") as f:
        used = {str(m.id) for m in read_po(f) if m.id}
    assert used, "no messages extracted"
    for lang in LANGUAGES:
        missing = used - catalog_ids(lang)
        assert not missing, f"{lang} lacks {sorted(missing)}"


def test_placeholders_survive_translation() -> None:
    for message in catalog_ids("en"):
        fields = set(FIELDS.findall(message))
        for lang in ("nb", "nn"):
            assert set(FIELDS.findall(translate(lang, message))) == fields, (lang, message)


def test_the_sensitive_note_says_so_in_each_language() -> None:
    note = (
        "Please do not send sensitive information here, such as health details. "
        "Call the school or use the school's contact form instead."
    )
    assert "sensitive opplysninger" in translate("nb", note)
    assert "sensitive opplysningar" in translate("nn", note)
    assert "sensitive information" in translate("en", note)
