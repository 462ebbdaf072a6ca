"""A real SMTP server for the email channel's tests: aiosmtpd requiring AUTH, over STARTTLS,
implicit TLS or (to test what a client does without it) no TLS.

Started by klaxon_fakes::smtp::SmtpServer; prints `LISTENING <port>` once it accepts connections. Each
accepted message becomes one JSON file in --maildir (envelope, TLS and login as the server saw
them, and the raw data), written under a temporary name and renamed, so a reader never sees
half a file. Recipients whose local part starts with `tempfail` get a 451, with `reject` a 550,
so the tests can drive both reply classes through a real SMTP dialogue.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, maildir):
        self.maildir = maildir
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("tempfail"):
            return "451 4.3.0 Mailbox temporarily unavailable, try again later"
        if local.startswith("reject"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def injected(self):
        """The next reply queued by the test (one code per line in `<maildir>/../fail_next`),
        so any reply class can be provoked on demand, like the HTTP fakes' `fail_next`."""
        path = os.path.join(os.path.dirname(self.maildir), "fail_next")
        try:
            with open(path, encoding="utf-8") as f:
                codes = [c.strip() for c in f if c.strip()]
        except FileNotFoundError:
            return None
        if not codes:
            return None
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(codes[1:]))
        os.replace(path + ".tmp", path)
        code = int(codes[0])
        text = {
            421: "4.7.0 Too many messages, slow down",
            451: "4.3.0 Local error in processing, try again later",
            550: "5.7.1 Message refused by policy",
            554: "5.6.0 Transaction failed",
        }.get(code, "injected failure")
        return f"{code} {text}"

    async def handle_DATA(self, server, session, envelope):
        injected = self.injected()
        if injected:
            return injected
        n = next(self.counter)
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": tls,
            "login": login,
            # lettre sends 7-bit MIME, so latin-1 round-trips every byte exactly.
            "data": envelope.original_content.decode("latin-1"),
        }
        path = os.path.join(self.maildir, f"{os.getpid()}-{n:05}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        return f"250 2.0.0 OK queued as {os.getpid()}-{n:05}"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        if ok:
            # auth_data is what the session keeps, so handle_DATA can record the login.
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False: aiosmtpd then answers 535 itself; its default (True) sends nothing.
        return AuthResult(success=False, handled=False)

    return check


async def main():
    # The tests provoke failed handshakes and logins on purpose; aiosmtpd logs each with a
    # traceback, and warns about its own deprecated attributes. Startup errors still show.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    # plain: no TLS at all, as a local relay, and to prove a STARTTLS client will not fall
    # back to it.
    p.add_argument("--mode", choices=["starttls", "implicit", "plain"], required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--maildir", required=True)
    a = p.parse_args()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    handler = Handler(a.maildir)
    starttls = a.mode == "starttls"
    implicit = a.mode == "implicit"
    loop = asyncio.get_running_loop()

    def protocol():
        return SMTP(
            handler,
            hostname="klaxon-test-smtp",
            tls_context=ctx if starttls else None,
            # STARTTLS mode: nothing but EHLO/STARTTLS/QUIT before TLS, and AUTH only after
            # it, so a client that skipped STARTTLS cannot deliver at all.
            require_starttls=starttls,
            # aiosmtpd only knows TLS it upgraded itself; in implicit mode the socket is TLS
            # from the first byte, so its own check would refuse every AUTH. Plain mode
            # takes AUTH in clear, like a relay on a trusted network.
            auth_require_tls=starttls,
            auth_required=True,
            authenticator=authenticator(a.user, a.password),
            loop=loop,
        )

    server = await loop.create_server(
        protocol, host="127.0.0.1", port=a.port, ssl=ctx if implicit else None
    )
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
