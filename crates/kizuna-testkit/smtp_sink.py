"""A real SMTP server for the tests and the benchmark: aiosmtpd on 127.0.0.1, each message written as a .eml
file into the given directory ("-" keeps nothing). Prints "READY <port>" once it listens.

Options: --tls CERT KEY requires STARTTLS with that certificate; --auth USER:PASSWORD requires AUTH (after
STARTTLS). Received messages record the authenticated login in an X-Sink-Login header."""
import asyncio
import os
import sys
import uuid

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bounce"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        login = getattr(session, "auth_data", None)
        if isinstance(login, bytes):
            login = login.decode()
        elif login is not None and hasattr(login, "login"):
            login = login.login.decode()
        tls = "yes" if session.ssl else "no"
        if self.directory != "-":
            name = os.path.join(self.directory, f"{self.count:08d}-{uuid.uuid4().hex[:8]}.eml")
            with open(name + ".tmp", "wb") as f:
                f.write(f"X-Sink-Login: {login}\r\nX-Sink-TLS: {tls}\r\n".encode())
                f.write(envelope.content)
            os.rename(name + ".tmp", name)
        return f"250 2.0.0 Ok: queued as Q{self.count}"


def authenticator(expected_user, expected_password):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == expected_user \
            and auth_data.password.decode() == expected_password
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    return check


def main():
    args = sys.argv[1:]
    directory = args.pop(0)
    options = {}
    while args:
        flag = args.pop(0)
        if flag == "--tls":
            import ssl
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.pop(0), args.pop(0))
            options.update(tls_context=context, require_starttls=True)
        elif flag == "--auth":
            user, password = args.pop(0).split(":", 1)
            options.update(authenticator=authenticator(user, password), auth_require_tls=True)
        else:
            sys.exit(f"unknown option {flag}")
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port, **options)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
