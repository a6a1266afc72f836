"""A loopback SMTP sink: a real aiosmtpd server on 127.0.0.1 that records what it gets.

For the tests, the benchmarks and `skolebro demo`: `MailSender` talks to it over a real
socket, with real EHLO, STARTTLS, AUTH, SIZE and reply codes. Knobs are plain attributes
and methods:

- `refuse_recipient(addr, reply=...)`: 550 5.1.1 at RCPT for that address (the reply
  quotes the address, as real servers do, so tests can check it never reaches our errors).
- `fail_next(n, reply="451 4.3.0 ...", stage="data")`: the next n transactions get that
  reply at MAIL, RCPT or end of DATA; a 421 also closes the connection, as servers do.
- `drop_next(n)`: the next n transactions lose the connection in the middle of DATA.
- `latency`: seconds to wait before answering end of DATA.
- `tls="starttls"` or `"tls"` (implicit): a self-signed certificate for 127.0.0.1 and
  localhost, made at start with the `openssl` command (the `cryptography` package is not
  a dependency); `client_tls_context()` trusts it. Without `openssl` those modes raise
  `TlsUnavailable` at start and the tests that need them skip.
- `auth=("user", "password")`: AUTH PLAIN/LOGIN required (over TLS unless `tls="none"`).

Records: `messages` (envelope, raw bytes, parsed EmailMessage, connection number, TLS,
AUTH user), `connections` (how many were opened), `wait_for(n)`.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import weakref
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from adapters.fakes.base import LoopbackFake
from adapters.mail_in import quiet_aiosmtpd_log

TlsMode = Literal["none", "starttls", "tls"]
Stage = Literal["mail", "rcpt", "data"]


class TlsUnavailable(RuntimeError):
    """No `openssl` command to make a certificate with."""


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    connection: int  # 1 for the first connection the sink accepted, and so on
    tls: bool
    auth_user: str | None


@dataclass
class _Failure:
    reply: str
    stage: Stage


class _SinkSmtp(SMTP):
    """aiosmtpd's SMTP with a connection number and a way to drop in the middle of DATA."""

    def __init__(self, sink: FakeSmtp, number: int, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self.sink = sink
        self.number = number

    async def smtp_DATA(self, arg: str) -> None:
        if self.sink._drops > 0 and self.envelope is not None and self.envelope.rcpt_tos:
            self.sink._drops -= 1
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            try:  # take a little of the message, then hang up
                await asyncio.wait_for(self._reader.readline(), 2)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                pass
            if self.transport is not None:
                self.transport.close()
            # End the session as a lost connection does; returning would read the rest of
            # the message, already buffered, as commands.
            raise asyncio.CancelledError
        await super().smtp_DATA(arg)


class FakeSmtp(LoopbackFake):
    """The sink; `async with FakeSmtp() as smtp:` then send to `127.0.0.1:smtp.port`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsMode = "none",
        auth: tuple[str, str] | None = None,
        data_size_limit: int | None = 33_554_432,
        hostname: str = "sink.test",
    ) -> None:
        self.host = host
        self._requested_port = port
        self.tls = tls
        self.auth = auth
        self.data_size_limit = data_size_limit
        self.hostname = hostname
        self.latency = 0.0
        self.messages: list[ReceivedMail] = []
        self.connections = 0
        self.cert_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._server: asyncio.AbstractServer | None = None
        self._port: int | None = None
        self._refused: dict[str, str] = {}
        self._failures: list[_Failure] = []
        self._drops = 0
        self._arrived = asyncio.Condition()
        self._live: weakref.WeakSet[_SinkSmtp] = weakref.WeakSet()

    # -- knobs ---------------------------------------------------------------------------

    def refuse_recipient(self, address: str, reply: str | None = None) -> None:
        self._refused[address.lower()] = (
            reply or f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        )

    def fail_next(
        self, n: int = 1, reply: str = "451 4.3.0 Temporary failure", stage: Stage = "data"
    ) -> None:
        self._failures.extend(_Failure(reply, stage) for _ in range(n))

    def drop_next(self, n: int = 1) -> None:
        self._drops += n

    # -- life ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the SMTP sink is not started")
        return self._port

    async def start(self) -> None:
        quiet_aiosmtpd_log()  # aiosmtpd logs every address at INFO; ours never do
        if self.tls != "none":
            self._ssl = await self._make_tls()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection,
            host=self.host,
            port=self._requested_port,
            ssl=self._ssl if self.tls == "tls" else None,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for connection in list(self._live):
                if connection.transport is not None:
                    connection.transport.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except TimeoutError:
                pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def wait_for(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - the sink's documented signature
    ) -> list[ReceivedMail]:
        """Wait until at least `n` messages arrived; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.messages) >= n)
        return self.messages[:n]

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this sink's certificate (and checks the host name)."""
        if self.cert_path is None:
            raise RuntimeError("the sink has no certificate (tls='none')")
        return ssl.create_default_context(cafile=str(self.cert_path))

    # -- wiring ----------------------------------------------------------------------------

    async def _make_tls(self) -> ssl.SSLContext:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise TlsUnavailable("the fake SMTP server's TLS modes need the openssl command")
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-smtp-")
        cert = Path(self._tmp.name) / "cert.pem"
        key = Path(self._tmp.name) / "key.pem"
        process = await asyncio.create_subprocess_exec(
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        if process.returncode != 0:
            raise TlsUnavailable(f"openssl failed: {err.decode(errors='replace')[:200]}")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.cert_path = cert
        return context

    def _new_connection(self) -> _SinkSmtp:
        self.connections += 1
        connection = _SinkSmtp(
            self,
            self.connections,
            hostname=self.hostname,
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=True,
            tls_context=self._ssl if self.tls == "starttls" else None,
            require_starttls=self.tls == "starttls",
            authenticator=self._authenticate if self.auth else None,
            auth_required=self.auth is not None,
            auth_require_tls=self.tls != "none",
        )
        self._live.add(connection)
        return connection

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.auth is None:
            return AuthResult(success=False, handled=False)
        user, password = self.auth
        ok = data.login.decode() == user and data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=data.login.decode())

    def _take_failure(self, stage: Stage) -> _Failure | None:
        if self._failures and self._failures[0].stage == stage:
            return self._failures.pop(0)
        return None

    def _fail(self, server: SMTP, failure: _Failure) -> str:
        if failure.reply.startswith("421") and server.transport is not None:
            # 421 closes the channel; the reply is written before this runs.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return failure.reply

    # aiosmtpd hooks

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        failure = self._take_failure("mail")
        if failure is not None:
            return self._fail(server, failure)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refused = self._refused.get(address.lower())
        if refused is not None:
            return refused
        failure = self._take_failure("rcpt")
        if failure is not None:
            return self._fail(server, failure)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        failure = self._take_failure("data")
        if failure is not None:
            return self._fail(server, failure)
        raw = envelope.original_content or b""
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        transport = server.transport
        tls = session.ssl is not None or (
            transport is not None and transport.get_extra_info("sslcontext") is not None
        )
        assert isinstance(server, _SinkSmtp)
        auth_user = session.auth_data if isinstance(session.auth_data, str) else None
        async with self._arrived:
            self.messages.append(
                ReceivedMail(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    raw=raw,
                    message=message,
                    connection=server.number,
                    tls=tls,
                    auth_user=auth_user,
                )
            )
            self._arrived.notify_all()
        return f"250 2.0.0 OK queued as {len(self.messages)}"
