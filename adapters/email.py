"""E-mail transport: the public face of the mail adapter (DESIGN's `adapters/email.py`).

The work lives in four modules beside this one, each named for what it holds; this file
only gathers what the core wires up. (The modules are `mail_*`, not an `adapters/email/`
package: absolute imports keep `import email` meaning the stdlib anyway, but one name for
two things is a trap for readers and for scripts run from inside `adapters/`.)

- `adapters.mail_parse`   raw bytes -> parsed message (bounded), best text, attachments
- `adapters.mail_filters` the filter chain: DMARC, loop, bounce, auto-reply, sender trust
- `adapters.mail_in`      `MailListener`: SMTP/LMTP in, `analyse()`, InboundEvents out
- `adapters.mail_out`     `MailContent`, `render_message()`, `MailSender`, `classify()`

What the core provides:

- `recipient_ok(address) -> bool` for the listener: True for `r-<token>@reply_domain`
  whose token is known, unexpired and unrevoked, and for `<unit_id>@reply_domain` of an
  active unit. The domain arrives lower-cased, the local part as the sender wrote it.
- `accept(event)` and `record_status(update)`, as for every channel. E-mail events have
  `external_id = "<Message-ID>|<sender>|<recipient>"` and a payload with `to`, `subject`,
  `message_id`, `in_reply_to`, `references` and `attachments`; quotes are still in
  `text` (the core trims them with `bridge.email_reply.strip_reply`).
- For rich mail, the delivery's body as `MailContent(...).to_json()` (it starts with
  `{"mail":`); a plain body is sent as text/plain. A bounce comes back as
  `StatusUpdate(provider_id=<the Message-ID send() returned>, status="failed")`.
"""

from __future__ import annotations

from adapters.mail_filters import Bounce, Envelope, Kind, Verdict, run_filters
from adapters.mail_in import Analysis, MailListener, MailSummary, RecipientCheck, analyse
from adapters.mail_out import (
    MAIL_JSON_PREFIX,
    MailContent,
    MailSender,
    classify,
    content_for,
    render_message,
)
from adapters.mail_parse import MimeTooComplex, best_text, html_to_text, parse_mail

__all__ = [
    "MAIL_JSON_PREFIX",
    "Analysis",
    "Bounce",
    "Envelope",
    "Kind",
    "MailContent",
    "MailListener",
    "MailSender",
    "MailSummary",
    "MimeTooComplex",
    "RecipientCheck",
    "Verdict",
    "analyse",
    "best_text",
    "classify",
    "content_for",
    "html_to_text",
    "parse_mail",
    "render_message",
    "run_filters",
]
