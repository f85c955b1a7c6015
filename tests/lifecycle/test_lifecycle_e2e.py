"""The function lifecycle through the `edgefn` CLI against a running `edgefn serve`.

Deploy, publish twice, a weighted alias, full shift and rollback, Function URLs by Host header
(BUFFERED with its 6 MB cap, RESPONSE_STREAM without), a bad upload that changes nothing, Event
invocations, secrets, reserved concurrency shared by versions, and a kill -9 after which the
registry and the URLs are as they were.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.functions.service import REFRESH_S
from tests.invocations.conftest import Node
from tests.lifecycle.conftest import EDGEFN, TOKEN, Cli, deploy_two_versions, get, url_host

MB = 1 << 20
AUTH = {"authorization": f"Bearer {TOKEN}"}


def served(response: httpx.Response) -> str:
    """The version that answered, checked against what its body says (WHO=v1 or v2)."""
    assert response.status_code == 200, response.text
    version = response.headers["x-edgefn-executed-version"]
    assert response.json()["env"]["WHO"] == f"v{version}"
    return version


def stream_bytes(n: int) -> bytes:
    """What the stream example sends: byte k is k % 256."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def split_invoke(stdout: str) -> tuple[int, dict[str, str], str]:
    """`edgefn invoke` prints `HTTP status`, the headers, a blank line, the body."""
    head, _, body = stdout.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.removeprefix("HTTP ")), headers, body


def test_weighted_alias_full_shift_and_rollback(node: Node, edgefn: Cli, example_components) -> None:
    deploy_two_versions(edgefn, example_components["hello"])
    out = edgefn("aliases", "set", "hello", "live", "1", "--weight", "2=0.3").stdout
    assert out.strip() == "hello:live -> version 1, version 2 at 30%"
    url = edgefn("urls", "create", "hello", "--qualifier", "live").stdout.strip()
    assert re.fullmatch(rf"http://[a-z0-9]{{32}}\.fn\.localhost:{node.port}/", url), url
    with httpx.Client(base_url=node.url, headers={"host": url_host(url)}, timeout=60) as client:
        versions = [served(client.get("/")) for _ in range(400)]
        share = versions.count("2") / len(versions)
        assert set(versions) == {"1", "2"}
        assert 0.22 <= share <= 0.38, share

        edgefn("aliases", "set", "hello", "live", "2")  # full shift
        assert {served(client.get("/")) for _ in range(40)} == {"2"}
        edgefn("aliases", "set", "hello", "live", "1")  # rollback
        assert {served(client.get("/")) for _ in range(40)} == {"1"}

    listed = edgefn("aliases", "list", "hello").stdout
    assert listed.strip() == "hello:live -> version 1"
    edgefn("functions", "delete", "hello")  # with its versions, aliases and URL
    assert "hello" not in edgefn("functions", "list").stdout
    r = get(node, url_host(url))
    assert r.status_code == 404 and r.json()["error"]["code"] == "function_url_not_found"


def test_a_bad_upload_is_refused_and_nothing_changes(
    node: Node, edgefn: Cli, example_components, tmp_path: Path
) -> None:
    hello = example_components["hello"]
    edgefn("functions", "deploy", "hello", str(hello), "--env", "WHO=v1")
    edgefn("functions", "publish", "hello")
    before = json.loads(edgefn("functions", "get", "hello", "--json").stdout)

    text = tmp_path / "notes.wasm"
    text.write_text("just some text\n")
    core = tmp_path / "core.wasm"
    core.write_bytes(b"\x00asm\x01\x00\x00\x00")  # an empty core module, not a component
    truncated = tmp_path / "truncated.wasm"
    data = hello.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for bad, reason in (
        (text, "not a WebAssembly binary"),
        (core, "a core WebAssembly module, not a component"),
        (truncated, "not deployed"),
    ):
        done = edgefn("functions", "deploy", "hello", str(bad), "--env", "WHO=bad", ok=False)
        assert done.returncode == 1, done.stdout
        assert "not deployed" in done.stderr and reason in done.stderr, done.stderr
    done = edgefn("functions", "deploy", "hello", str(hello), "--memory-mb", "5", ok=False)
    assert done.returncode == 1 and "400 memory_mb: 5 is out of range" in done.stderr, done.stderr
    # checked against the stored configuration: provisioned needs instance_reuse, which is 0 here
    done = edgefn("functions", "deploy", "hello", str(hello), "--provisioned", "2", ok=False)
    assert done.returncode == 1 and "provisioned: needs instance_reuse" in done.stderr, done.stderr
    done = edgefn("functions", "deploy", "fresh", str(text), ok=False)
    assert done.returncode == 1

    assert json.loads(edgefn("functions", "get", "hello", "--json").stdout) == before
    missing = edgefn("functions", "get", "fresh", ok=False)
    assert missing.returncode == 1 and "404 function 'fresh' does not exist" in missing.stderr
    status, headers, body = split_invoke(edgefn("invoke", "hello").stdout)
    assert status == 200 and headers["x-edgefn-executed-version"] == "$LATEST"
    assert json.loads(body)["env"] == {"WHO": "v1"}


def test_function_urls_buffered_with_cap_and_streamed(node: Node, edgefn: Cli, example_components) -> None:
    edgefn("functions", "deploy", "stream", str(example_components["stream"]))
    assert edgefn("functions", "publish", "stream").stdout.strip() == "1"
    edgefn("aliases", "set", "stream", "streamed", "1")
    buffered = url_host(edgefn("urls", "create", "stream").stdout)
    streamed = url_host(
        edgefn(
            "urls", "create", "stream", "--qualifier", "streamed", "--invoke-mode", "RESPONSE_STREAM"
        ).stdout
    )
    listed = edgefn("urls", "list", "stream").stdout
    assert f"http://{buffered}/  stream  auth=none  BUFFERED" in listed
    assert f"http://{streamed}/  stream:streamed  auth=none  RESPONSE_STREAM" in listed

    r = get(node, buffered, "/?n=3&size=1000&ms=0")
    assert r.status_code == 200 and r.headers["x-edgefn-executed-version"] == "$LATEST"
    assert r.headers["content-length"] == "3000" and r.content == stream_bytes(3000)
    r = get(node, buffered, f"/?n=6&size={MB}&ms=0")  # exactly 6 MB: still whole
    assert r.status_code == 200 and len(r.content) == 6 * MB and r.content == stream_bytes(6 * MB)
    r = get(node, buffered, f"/?n=7&size={MB}&ms=0")
    assert r.status_code == 502 and r.json()["error"]["code"] == "response_too_large", r.text

    with httpx.stream("GET", f"{node.url}/?n=7&size={MB}&ms=0", headers={"host": streamed}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["x-edgefn-executed-version"] == "1"
        assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
        body = r.read()
    assert body == stream_bytes(7 * MB)

    edgefn("aliases", "set", "stream", "signed", "1")
    signed = url_host(
        edgefn(
            "urls", "create", "stream", "--qualifier", "signed", "--auth", "sigv4",
            "--credentials-env", "URL_CREDS", "--cors-origin", "https://app.example",
        ).stdout
    )  # fmt: skip
    assert f"http://{signed}/  stream:signed  auth=sigv4  BUFFERED" in edgefn("urls", "list").stdout
    r = get(node, signed, headers={"origin": "https://app.example"})
    assert r.status_code == 403 and r.headers["access-control-allow-origin"] == "https://app.example"

    r = get(node, f"{'0' * 32}.fn.localhost:{node.port}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "function_url_not_found"
    assert r.headers["x-request-id"]
    edgefn("urls", "delete", "stream")
    assert get(node, buffered).status_code == 404
    assert get(node, streamed, "/?n=1&ms=0").status_code == 200


def test_event_runs_and_logs_and_metrics_carry_the_version(
    node: Node, edgefn: Cli, example_components
) -> None:
    deploy_two_versions(edgefn, example_components["hello"])
    edgefn("aliases", "set", "hello", "live", "2")
    status, headers, body = split_invoke(
        edgefn("invoke", "hello", "--qualifier", "live", "--type", "Event", "--data", "evt").stdout
    )
    assert status == 202
    invocation_id = json.loads(body)["invocation_id"]
    assert headers["x-edgefn-invocation-id"] == invocation_id
    deadline = time.monotonic() + 30
    while node.admin_get(f"/invocations/{invocation_id}")["state"] != "succeeded":
        assert time.monotonic() < deadline, node.log()[-3000:]
        time.sleep(0.05)
    logs = edgefn("logs", "hello", "--request-id", invocation_id).stdout
    assert f"START RequestId: {invocation_id} Version: 2" in logs
    assert f"REPORT RequestId: {invocation_id}" in logs and "hello handled POST /" in logs

    done = edgefn(
        "invoke", "hello", "--qualifier", "1", "--method", "PUT", "--path", "/p?q=1",
        "-H", "x-test: yes", "--data", "the body",
    )  # fmt: skip
    status, headers, body = split_invoke(done.stdout)
    echo = json.loads(body)
    assert status == 200 and headers["x-edgefn-executed-version"] == "1"
    assert (echo["method"], echo["path"], echo["body"], echo["env"]) == (
        "PUT",
        "/p?q=1",
        "the body",
        {"WHO": "v1"},
    )
    assert ["x-test", "yes"] in echo["headers"]
    assert split_invoke(edgefn("invoke", "hello", "--type", "DryRun").stdout)[0] == 204

    metrics = httpx.get(f"{node.admin}/metrics", headers=AUTH, timeout=10).text
    assert 'edgefn_function_invocations_total{function="hello",version="2"} 1.0' in metrics
    assert 'edgefn_function_invocations_total{function="hello",version="1"} 1.0' in metrics
    assert 'edgefn_function_duration_seconds_count{function="hello",version="2"} 1.0' in metrics

    for qualifier, message in (("9", "has no version 9"), ("nope", "has no alias 'nope'")):
        for kind in ("DryRun", "Event", "RequestResponse"):
            done = edgefn("invoke", "hello", "--qualifier", qualifier, "--type", kind, ok=False)
            assert done.returncode == 1 and "404" in done.stderr and message in done.stderr, done.stderr
    done = edgefn("invoke", "ghost", ok=False)
    assert done.returncode == 1 and "function 'ghost' does not exist" in done.stderr


def test_registry_and_urls_are_intact_after_kill_9(node: Node, edgefn: Cli, example_components) -> None:
    deploy_two_versions(edgefn, example_components["hello"])
    edgefn("aliases", "set", "hello", "live", "1", "--weight", "2=0.5")
    url = edgefn("urls", "create", "hello", "--qualifier", "live").stdout.strip()
    latest_url = edgefn("urls", "create", "hello").stdout.strip()
    before = json.loads(edgefn("functions", "get", "hello", "--json").stdout)
    urls_before = json.loads(edgefn("urls", "list", "--json").stdout)
    assert served(get(node, url_host(url))) in {"1", "2"}

    node.kill()
    node.start()

    assert json.loads(edgefn("functions", "get", "hello", "--json").stdout) == before
    assert json.loads(edgefn("urls", "list", "--json").stdout) == urls_before
    assert {served(get(node, url_host(url))) for _ in range(30)} == {"1", "2"}
    r = get(node, url_host(latest_url))
    assert r.headers["x-edgefn-executed-version"] == "$LATEST" and r.json()["env"] == {"WHO": "v2"}


ROUTES = """
[[routes]]
name = "live"
path = "/live"
function = "hello:live"

[[routes]]
name = "one"
path = "/one"
function = "hello:1"

[[routes]]
name = "latest"
path = "/latest"
function = "hello"
"""


def test_routes_name_deployed_functions_and_follow_changes(
    node_factory: Callable[..., Node], example_components
) -> None:
    first = node_factory("")
    deploy_two_versions(Cli(first), example_components["hello"])
    Cli(first)("aliases", "set", "hello", "live", "2")
    first.stop()

    routed = node_factory(ROUTES)
    edgefn = Cli(routed)
    assert served(httpx.get(routed.url + "/live", timeout=60)) == "2"
    assert served(httpx.get(routed.url + "/one", timeout=60)) == "1"
    edgefn("aliases", "set", "hello", "live", "1")
    assert served(httpx.get(routed.url + "/live", timeout=60)) == "1"  # the next request, no restart
    edgefn("functions", "config", "hello", "--env", "WHO=v3", "--instance-reuse", "10")
    # a partial change is checked against what is stored (instance_reuse is 10 now)
    edgefn("functions", "config", "hello", "--provisioned", "2")
    config = json.loads(edgefn("functions", "get", "hello", "--json").stdout)["config"]
    assert (config["instance_reuse"], config["provisioned"]) == (10, 2)
    r = httpx.get(routed.url + "/latest", timeout=60)
    assert r.headers["x-edgefn-executed-version"] == "$LATEST" and r.json()["env"] == {"WHO": "v3"}
    edgefn("aliases", "delete", "hello", "live")
    r = httpx.get(routed.url + "/live", timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "function_not_found"
    routed.stop()

    bad = node_factory(
        ROUTES + '\n[[routes]]\nname = "ghost"\npath = "/ghost"\nfunction = "ghost:live"\n', start=False
    )
    for command in ("check", "serve"):
        done = subprocess.run(
            [EDGEFN, command, "--config", str(bad.config)],
            env=bad.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert (
            f"{bad.config}: routes[3].function: function 'ghost' is neither configured nor deployed"
            in done.stderr
        )
        assert "deployed: hello" in done.stderr
    done = subprocess.run(
        [EDGEFN, "check", "--config", str(routed.config)],
        env=bad.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_secrets_reach_the_function_and_nothing_else(node: Node, edgefn: Cli, example_components) -> None:
    secret = "s3cr3t-value-42"
    edgefn("secrets", "set", "api-token", stdin=secret + "\n")
    assert edgefn("secrets", "list").stdout.split() == ["api-token"]
    hello = str(example_components["hello"])
    edgefn("functions", "deploy", "hello", hello, "--env", "WHO=v1", "--secret", "TOKEN=api-token")
    # the guest prints its path: a path holding the secret shows up masked in the function's log
    status, _, body = split_invoke(edgefn("invoke", "hello", "--path", f"/{secret}").stdout)
    assert status == 200 and json.loads(body)["env"] == {"WHO": "v1", "TOKEN": secret}
    logs = edgefn("logs", "hello").stdout
    assert "hello handled POST /" in logs and secret not in logs
    answers = [
        edgefn(*args).stdout
        for args in (
            ("functions", "get", "hello", "--json"),
            ("functions", "config", "hello", "--json"),
            ("functions", "list", "--json"),
            ("secrets", "list", "--json"),
        )
    ]
    assert all(secret not in answer for answer in answers) and "api-token" in answers[1]
    assert secret not in node.log()
    in_use = edgefn("secrets", "delete", "api-token", ok=False)
    assert in_use.returncode == 1 and "409" in in_use.stderr
    edgefn("secrets", "set", "api-token", stdin="rotated-value\n")  # takes effect on the next request
    _, _, body = split_invoke(edgefn("invoke", "hello").stdout)
    assert json.loads(body)["env"]["TOKEN"] == "rotated-value"


def test_reserved_concurrency_is_one_limit_across_versions(
    node: Node, edgefn: Cli, example_components
) -> None:
    stream = str(example_components["stream"])
    edgefn("functions", "deploy", "slow", stream, "--reserved-concurrency", "1")
    edgefn("functions", "publish", "slow")
    edgefn("functions", "config", "slow", "--timeout-s", "30")
    assert edgefn("functions", "publish", "slow").stdout.strip() == "2"
    hosts = {}
    for version in ("1", "2"):
        edgefn("aliases", "set", "slow", f"v{version}", version)
        hosts[version] = url_host(
            edgefn(
                "urls", "create", "slow", "--qualifier", f"v{version}", "--invoke-mode", "RESPONSE_STREAM"
            ).stdout
        )
    # version 1 holds the function's only slot while its body streams (3 chunks, 1 s apart)
    with httpx.stream("GET", f"{node.url}/?n=3&ms=1000", headers={"host": hosts["1"]}, timeout=60) as held:
        assert held.status_code == 200
        chunks = held.iter_raw()
        first = next(chunks)
        r = get(node, hosts["2"], "/?n=1&ms=0")
        assert r.status_code == 429 and r.json()["error"]["code"] == "throttled"
        assert r.headers["retry-after"]
        assert len(first + b"".join(chunks)) == 3 * 16
    assert get(node, hosts["2"], "/?n=1&ms=0").status_code == 200
    metrics = httpx.get(f"{node.admin}/metrics", headers=AUTH, timeout=10).text
    assert 'edgefn_function_throttles_total{function="slow",version="2"} 1.0' in metrics


def test_every_worker_serves_a_change_made_through_another(
    node_factory: Callable[..., Node], example_components
) -> None:
    node = node_factory("", start=False).start(workers=2)
    edgefn = Cli(node)
    deploy_two_versions(edgefn, example_components["hello"])
    edgefn("aliases", "set", "hello", "live", "1")
    host = url_host(edgefn("urls", "create", "hello", "--qualifier", "live").stdout)
    # a new connection per request, so both processes (sharing the listening socket) take some
    assert {served(get(node, host)) for _ in range(20)} == {"1"}
    edgefn("aliases", "set", "hello", "live", "2")  # handled by one of the two processes
    time.sleep(REFRESH_S * 1.5)  # the other reads the registry's revision again after this long
    assert {served(get(node, host)) for _ in range(40)} == {"2"}
