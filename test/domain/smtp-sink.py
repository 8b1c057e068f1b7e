"""A real SMTP server for the alert tests (aiosmtpd): prints each message it accepts as one JSON line.

Usage: smtp-sink.py ADDRESS PORT [USER PASSWORD]
With USER and PASSWORD it offers AUTH (PLAIN/LOGIN, without TLS: the test network is private) and
refuses mail from a session that did not log in with them.
"""
import json
import sys
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        print(json.dumps({
            "mailFrom": envelope.mail_from,
            "rcptTos": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "body": body.get_content() if body is not None else "",
            "authenticated": bool(session.authenticated),
        }), flush=True)
        return "250 OK"


def main():
    address, port = sys.argv[1], int(sys.argv[2])
    kwargs = {}
    if len(sys.argv) >= 5:
        user, password = sys.argv[3].encode(), sys.argv[4].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
            return AuthResult(success=ok, handled=False)

        kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    controller = Controller(Sink(), hostname=address, port=port, **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
