"""A real asyncua server for tests, in its own process.

    python opcua_server.py --port N [--secure DIR] [--user U --password P]

Namespace "urn:datonis-edge:test" with Machine1.{Temperature (Double), Count (Int32, +1 every
100 ms), Running (Boolean), Name (String)}; clients may write Running, Name, Setpoint (Float)
and Mode (UInt16) (the instruction tests). With --secure, only Basic256Sha256
SignAndEncrypt is offered (a server certificate is created in DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

logging.disable(logging.WARNING)

from asyncua import Server, ua  # noqa: E402
from asyncua.crypto.cert_gen import setup_self_signed_certificate  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secure")
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/test/")
    if args.secure:
        pki = Path(args.secure)
        pki.mkdir(parents=True, exist_ok=True)
        key, cert = pki / "server-key.pem", pki / "server-cert.der"
        await setup_self_signed_certificate(
            key,
            cert,
            "urn:datonis-edge:test-server",
            "127.0.0.1",
            [ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": "datonis-edge test server"},
        )
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    if args.user:
        from asyncua.server.user_managers import UserManager

        class Users(UserManager):
            def get_user(self, iserver, username=None, password=None, certificate=None):  # type: ignore[no-untyped-def]
                from asyncua.server.user_managers import User, UserRole

                if username == args.user and password == args.password:
                    return User(role=UserRole.User)
                return None

        server.iserver.set_user_manager(Users())
        server.set_security_IDs(["Username"])
    idx = await server.register_namespace("urn:datonis-edge:test")
    machine = await server.nodes.objects.add_object(idx, "Machine1")
    temp = await machine.add_variable(ua.NodeId("Machine1.Temperature", idx), "Temperature", 21.5)
    count = await machine.add_variable(
        ua.NodeId(1001, idx), "Count", 0, varianttype=ua.VariantType.Int32
    )
    writable = [
        await machine.add_variable(ua.NodeId("Machine1.Running", idx), "Running", True),
        await machine.add_variable(ua.NodeId("Machine1.Name", idx), "Name", "Press 7"),
        await machine.add_variable(
            ua.NodeId("Machine1.Setpoint", idx), "Setpoint", 0.0, varianttype=ua.VariantType.Float
        ),
        await machine.add_variable(
            ua.NodeId("Machine1.Mode", idx), "Mode", 0, varianttype=ua.VariantType.UInt16
        ),
    ]
    for node in writable:
        await node.set_writable()
    async with server:
        n = 0
        while True:
            await asyncio.sleep(0.1)
            n += 1
            await count.write_value(n, ua.VariantType.Int32)
            await temp.write_value(21.5 + (n % 10) / 10)


if __name__ == "__main__":
    asyncio.run(main())
