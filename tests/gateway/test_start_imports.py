"""What a node's start leaves out, and that the left-out parts still work when asked for.

A restart pays for every module it imports (issue #6: restart to first response); subsystems that
only some configs use are imported when a config uses them. These tests start a gateway in a fresh
interpreter (this process has imported everything already) and look at what it loaded.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.proxy import shared_client

ROOT = Path(__file__).resolve().parents[2]

# Loaded only by the configs that need them: jwt auth, a Redis control plane, cron schedules, a
# geoip_db, an https origin or outbound call.
OPTIONAL = ("jwt", "cryptography", "redis", "croniter", "maxminddb", "httpcore", "certifi")

START = textwrap.dedent(
    """
    import asyncio, json, sys
    from gateway.app import Gateway
    from routes import load_config

    async def main():
        gateway = Gateway(load_config(sys.argv[1]))
        await gateway.startup()
        assert gateway.pipeline is not None
        loaded = sorted(m for m in sys.argv[2].split(",") if m in sys.modules)
        await gateway.shutdown()
        print(json.dumps(loaded))

    asyncio.run(main())
    """
)


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    """What a fresh interpreter running `code` printed (this process has imported everything)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


NODE = """
[node]
name = "n1"
listen = "127.0.0.1:1"
data_dir = "{data_dir}"
"""


def started_modules(tmp_path: Path, config: str) -> list[str]:
    """The OPTIONAL modules loaded by a gateway's start-up for NODE and `config`."""
    path = tmp_path / "edgefn.toml"
    path.write_text((NODE + textwrap.dedent(config)).replace("{data_dir}", str(tmp_path / "data")))
    out = run_python(START, str(path), ",".join(OPTIONAL), env={"KEYS": "k1", "JWT_SECRET": "s" * 32})
    return json.loads(out.splitlines()[-1])


def test_a_plain_node_starts_without_the_optional_subsystems(tmp_path: Path) -> None:
    loaded = started_modules(
        tmp_path,
        """
        [origins.web]
        endpoints = [{ url = "http://127.0.0.1:9" }]

        [[routes]]
        name = "web"
        path = "/{*rest}"
        origin = "web"
        auth = { type = "api_key", keys_env = "KEYS" }
        """,
    )
    assert loaded == []


def test_a_jwt_route_loads_pyjwt_at_start(tmp_path: Path) -> None:
    """The lazy import happens while the plan is compiled, so a broken PyJWT still stops start-up
    rather than failing the first request."""
    loaded = started_modules(
        tmp_path,
        """
        [[routes]]
        name = "api"
        path = "/api"
        redirect = { to = "/", status = 308 }
        auth = { type = "jwt", secret_env = "JWT_SECRET", algorithms = ["HS256"] }
        """,
    )
    assert "jwt" in loaded


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return ctx


def test_https_transport_is_made_on_the_first_https_request_and_verifies(tmp_path: Path) -> None:
    """The shared client makes httpx's TLS transport on first use; it is a verifying one (a server
    with a self-signed certificate is refused at the handshake)."""
    server_ctx = _self_signed(tmp_path)
    handshakes: list[bool] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handshakes.append(True)
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        client = shared_client()
        try:
            assert client.https_transport.transport is None
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{port}/", timeout=30)
            assert client.https_transport.transport is not None
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_a_client_that_made_no_https_request_closes(tmp_path: Path) -> None:
    async def main() -> None:
        client = shared_client()
        await client.aclose()
        assert client.https_transport.transport is None
        assert client.is_closed

    asyncio.run(main())


def test_the_cli_module_leaves_the_admin_client_to_the_commands_that_use_it() -> None:
    """`edgefn serve` builds the parser before anything else: its admin commands' HTTP client
    (httpx, with click, rich and pygments through httpx's own CLI) waits for their use."""
    out = run_python(
        """
        import sys
        import gateway.cli
        before = "httpx" in sys.modules
        gateway.cli.parser()
        print(before, "httpx" in sys.modules)
        """
    )
    assert out == "False True"


def test_collection_is_paused_during_start_up_and_resumes_with_start_up_objects_frozen() -> None:
    out = run_python(
        """
        import gc
        from gateway.cli import collection_paused
        frozen = gc.get_freeze_count()
        with collection_paused():
            inside = gc.isenabled()
            made = [[i] for i in range(1000)]
        after = gc.isenabled()
        gc.disable()
        with collection_paused():
            pass
        print(inside, after, gc.get_freeze_count() >= frozen + 1000, gc.isenabled())
        """
    )
    # Paused inside; enabled after; what start-up made is frozen; a collector the caller had
    # disabled stays disabled.
    assert out == "False True True False"


def test_serving_does_not_import_httpxs_command_line() -> None:
    """httpx imports its CLI (click's neighbours pygments and rich) at import unless told it is
    absent; a node never runs it, and the proxy's client still works."""
    out = run_python(
        """
        import json, sys
        import gateway.server, httpx
        with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))) as client:
            status = client.get("http://origin.test/").status_code
        print(json.dumps([status, sorted(m for m in ("pygments", "rich") if m in sys.modules)]))
        """
    )
    assert json.loads(out) == [204, []]
