"""Function URLs in one gateway process: sigv4 auth (botocore's signatures), CORS, Event, the
URL table following the registry, and edgefn.toml functions with a `url` table.

The registry is written before the gateway starts (as `edgefn` would through the admin API) or,
for changes while it runs, through the gateway's own registry object, so these tests need no
subprocess; the CLI path is in test_lifecycle_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.app import Gateway
from gateway.functions.registry import FunctionConfig, open_registry
from routes import load_config
from routes.config import Auth, Cors
from tests.gateway.conftest import shared_data_dir
from tests.servers import ServerThread, free_port

KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENV = {"URL_CREDS": f"{KEY_ID}:{SECRET}"}
APP = "https://app.example"


class Served:
    def __init__(self, tmp_path: Path, toml: str = "", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        data = shared_data_dir(tmp_path / "data")
        path = tmp_path / "edgefn.toml"
        path.write_text(f'[node]\nlisten = "127.0.0.1:{self.port}"\ndata_dir = "{data}"\n{toml}')
        self.config = load_config(path, deployed=True)
        self.env = env if env is not None else ENV
        self.gateway: Gateway | None = None
        self.server: ServerThread | None = None

    def registry(self):  # type: ignore[no-untyped-def]
        return open_registry(self.config.node, self.config.functions)

    def start(self) -> Served:
        self.gateway = Gateway(self.config, env=self.env)
        self.server = ServerThread(self.gateway, port=self.port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def host(self, url_id: str) -> str:
        return f"{url_id}.fn.localhost:{self.port}"

    def request(self, method: str, url_id: str, path: str = "/", **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        headers = {"host": self.host(url_id), **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=60, **kwargs
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.stop()


def signed_headers(
    host: str, method: str, path: str, body: bytes = b"", secret: str = SECRET
) -> dict[str, str]:
    request = AWSRequest(method=method, url=f"http://{host}{path}", data=body)
    SigV4Auth(Credentials(KEY_ID, secret), "lambda", "eu-west-1").add_auth(request)
    return {k.lower(): v for k, v in request.prepare().headers.items()}


def test_sigv4_url_with_cors(served: Served, example_components) -> None:
    registry = served.registry()
    registry.deploy("hello", example_components["hello"], FunctionConfig(env=(("WHO", "v1"),)))
    url = registry.create_url(
        "hello",
        auth=Auth(type="sigv4", credentials_env="URL_CREDS", region="eu-west-1"),
        cors=Cors(allow_origins=(APP,), allow_methods=("GET", "POST"), allow_headers=("content-type",)),
    )
    registry.close()
    served.start()
    host = served.host(url.url_id)

    r = served.request("GET", url.url_id, "/x")
    assert r.status_code == 403 and r.json()["error"]["code"]
    r = served.request("GET", url.url_id, "/x", headers=signed_headers(host, "GET", "/x", secret="wrong"))
    assert r.status_code == 403, r.text
    r = served.request(
        "POST", url.url_id, "/x", content=b"hi", headers=signed_headers(host, "POST", "/x", b"hi")
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-edgefn-executed-version"] == "$LATEST" and r.json()["body"] == "hi"

    # a preflight needs no signature (browsers send none) and never reaches the function
    preflight = {"origin": APP, "access-control-request-method": "POST"}
    r = served.request("OPTIONS", url.url_id, "/x", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP
    assert "POST" in r.headers["access-control-allow-methods"] and not r.content
    r = served.request("OPTIONS", url.url_id, "/x", headers={**preflight, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    headers = {**signed_headers(host, "GET", "/y"), "origin": APP}
    r = served.request("GET", url.url_id, "/y", headers=headers)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP
    assert "origin" in r.headers["vary"].lower()


def test_event_and_table_changes_on_a_running_gateway(served: Served, example_components) -> None:
    registry = served.registry()
    registry.deploy("hello", example_components["hello"])
    registry.close()
    served.start()
    assert served.gateway is not None and served.gateway.registry is not None
    live = served.gateway.registry
    url = live.create_url("hello", invoke_mode="RESPONSE_STREAM")
    r = served.request("GET", url.url_id)  # created after start: in the table within a refresh
    deadline = time.monotonic() + 5
    while r.status_code == 404:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)
        r = served.request("GET", url.url_id)
    assert r.status_code == 200 and "content-length" not in r.headers

    r = served.request(
        "POST", url.url_id, "/e", content=b"evt", headers={"x-edgefn-invocation-type": "Event"}
    )
    assert r.status_code == 202, r.text
    invocation_id = r.json()["invocation_id"]
    invocations = served.gateway.invocations
    assert invocations is not None
    deadline = time.monotonic() + 20
    while True:
        lines = invocations.logs.lines("hello", 100, invocation_id)
        if any(line.message.startswith("REPORT") for line in lines):
            break
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    assert any("hello handled POST /e" in line.message for line in lines)

    live.delete_url("hello")
    served.gateway.functions.changed()  # type: ignore[union-attr]
    assert served.request("GET", url.url_id).status_code == 404


def test_a_url_whose_auth_cannot_work_answers_500_and_others_still_serve(
    tmp_path: Path, example_components
) -> None:
    served = Served(tmp_path, env={})  # no URL_CREDS in the environment
    registry = served.registry()
    registry.deploy("hello", example_components["hello"])
    registry.publish("hello")
    registry.set_alias("hello", "live", 1)
    broken = registry.create_url("hello", auth=Auth(type="sigv4", credentials_env="URL_CREDS"))
    fine = registry.create_url("hello", qualifier="live")
    registry.close()
    try:
        served.start()
        r = served.request("GET", broken.url_id)
        assert r.status_code == 500 and r.json()["error"]["code"] == "function_url_misconfigured"
        assert "URL_CREDS" in r.json()["error"]["message"]
        r = served.request("GET", fine.url_id)
        assert r.status_code == 200 and r.headers["x-edgefn-executed-version"] == "1"
    finally:
        served.stop()


CONFIG_URL = """
[functions.hello]
component = "{hello}"
env = {{ WHO = "config" }}
url = {{ auth = "none", invoke_mode = "RESPONSE_STREAM", cors = {{ allow_origins = ["*"] }} }}
"""


def test_an_edgefn_toml_function_keeps_its_url_across_restarts(tmp_path: Path, example_components) -> None:
    toml = CONFIG_URL.format(hello=example_components["hello"])
    ids = []
    for _ in range(2):
        served = Served(tmp_path, toml)
        try:
            served.start()
            assert served.gateway is not None and served.gateway.registry is not None
            [url] = served.gateway.registry.urls()
            ids.append(url.url_id)
            r = served.request("GET", url.url_id, "/c", headers={"origin": "https://any.example"})
            assert r.status_code == 200 and r.json()["env"] == {"WHO": "config"}
            assert r.headers["x-edgefn-executed-version"] == "$LATEST"
            assert r.headers["access-control-allow-origin"] == "*"
        finally:
            served.stop()
    assert ids[0] == ids[1]
