"""A real SMTP server for the tests and the benchmark: aiosmtpd on 127.0.0.1, each message written as a .eml
file into the given directory. Prints "READY <port>" once it listens."""
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
        if self.directory != "-":
            name = os.path.join(self.directory, f"{self.count:08d}-{uuid.uuid4().hex[:8]}.eml")
            with open(name + ".tmp", "wb") as f:
                f.write(envelope.content)
            os.rename(name + ".tmp", name)
        return f"250 2.0.0 Ok: queued as Q{self.count}"


def main():
    directory = sys.argv[1]
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
