"""The `edgefn` command as a user runs it: check, routes, serve (with a graceful SIGTERM), admin."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

from .conftest import shared_data_dir

EDGEFN = [sys.executable, "-m", "gateway.cli"]


def write(tmp_path: Path, text: str, name: str = "edgefn.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_reports_every_problem_with_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[node]
listen = "127.0.0.1:8080"
bogus = 1

[[routes]]
name = "a"
path = "/a"
origin = "missing"

[[routes]]
name = "b"
path = "/b"
redirect = { to = "/c" }
auth = { type = "jwt", secret_env = "S", algorithms = ["none"] }
""",
    )
    run = subprocess.run([*EDGEFN, "check", "--config", str(path)], capture_output=True, text=True)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert any(line.startswith(f"{path}: node.bogus:") for line in lines), lines
    assert any(line.startswith(f"{path}: routes[0].origin:") and "missing" in line for line in lines), lines
    assert any(line.startswith(f"{path}: routes[1].auth.algorithms:") for line in lines), lines
    assert "Traceback" not in run.stderr


def test_check_accepts_the_example_config(example_components) -> None:
    run = subprocess.run(
        [*EDGEFN, "check", "--config", "examples/edgefn.toml"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "ok" in run.stdout


def test_routes_explains_the_winner(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[origins.web]
endpoints = [{ url = "http://127.0.0.1:9" }]

[[routes]]
name = "tail"
path = "/api/{*rest}"
origin = "web"

[[routes]]
name = "exact"
path = "/api/users"
origin = "web"
methods = ["GET"]
""",
    )
    run = subprocess.run(
        [*EDGEFN, "routes", "--config", str(path), "GET", "http://x/api/users"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "'exact'" in run.stdout
    run = subprocess.run(
        [*EDGEFN, "routes", "--config", str(path), "GET", "http://x/api/orders/7"],
        capture_output=True,
        text=True,
    )
    assert "'tail'" in run.stdout and "rest='orders/7'" in run.stdout
    run = subprocess.run(
        [*EDGEFN, "routes", "--config", str(path), "GET", "http://x/other"], capture_output=True, text=True
    )
    assert run.returncode == 1 and "404" in run.stdout


@pytest.fixture
def served(tmp_path: Path, origin: str):
    port, admin = free_port(), free_port()
    path = write(
        tmp_path,
        f"""
[node]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{tmp_path / "data"}"

[origins.web]
endpoints = [{{ url = "{origin}" }}]

[[routes]]
name = "web"
path = "/{{*rest}}"
origin = "web"
""",
    )
    env = {**os.environ, "EDGEFN_ADMIN_TOKEN": "s3cret"}
    proc = subprocess.Popen(
        [*EDGEFN, "serve", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    yield proc, base, f"http://127.0.0.1:{admin}"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigterm_lets_an_in_flight_stream_finish(served) -> None:
    proc, base, _ = served
    result: dict[str, object] = {}

    def fetch() -> None:
        with httpx.stream("GET", f"{base}/pause?first=32&wait=1.5", timeout=10) as r:
            result["body"] = r.read()
            result["status"] = r.status_code

    t = threading.Thread(target=fetch)
    t.start()
    time.sleep(0.5)  # the stream is open and waiting on the origin's pause
    proc.send_signal(signal.SIGTERM)
    t.join(timeout=10)
    assert result.get("status") == 200
    assert result.get("body") == b"a" * 32 + b"b" * 32
    assert proc.wait(timeout=15) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{") and '"route"' in line]
    assert any(a["path"].startswith("/pause") and a["status"] == 200 and a["bytes_out"] == 64 for a in access)


def test_admin_health_and_metrics(served) -> None:
    _, base, admin = served
    assert httpx.get(f"{base}/echo").status_code == 200
    assert httpx.get(f"{base}/status/503").status_code == 503
    assert httpx.get(f"{admin}/metrics").status_code == 401
    r = httpx.get(f"{admin}/metrics", headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 200
    text = r.text
    assert 'edgefn_requests_total{route="web",status="200"}' in text
    assert 'edgefn_requests_total{route="web",status="503"}' in text
    assert "edgefn_request_duration_seconds_bucket" in text
    assert "edgefn_requests_in_flight" in text
    origins = httpx.get(f"{admin}/origins", headers={"authorization": "Bearer s3cret"}).json()
    assert origins[0]["name"] == "web"


def test_an_upgrade_request_is_served_as_plain_http(served) -> None:
    """The gateway speaks HTTP/1.1 only: a WebSocket upgrade request goes through the route like any
    other (here to the origin, without the hop-by-hop `upgrade`), is logged, and leaves no warning."""
    proc, base, _ = served
    port = int(base.rsplit(":", 1)[1])
    request = (
        b"GET /echo/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        reader = conn.makefile("rb")
        status = reader.readline()
        fields = {}
        while (line := reader.readline().strip()) != b"":
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        echoed = json.loads(reader.read(int(fields[b"content-length"])))
    assert status.startswith(b"HTTP/1.1 200 "), status
    assert b"x-request-id" in fields
    assert echoed["path"] == "/echo/ws"
    assert "upgrade" not in {name.lower() for name, _ in echoed["headers"]}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{") and '"route"' in line]
    assert any(a["path"] == "/echo/ws" and a["status"] == 200 for a in access), stderr
    assert "upgrade" not in stderr.lower() and "websocket" not in stderr.lower(), stderr


def _node_config(tmp_path: Path, port: int, data_dir: Path, body: str) -> Path:
    """A config file: a node listening on `port` (and an admin port) with `data_dir`, then `body`."""
    node = f'[node]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{free_port()}"\n'
    return write(tmp_path, f'{node}data_dir = "{data_dir}"\n{body}')


@contextmanager
def _node_with_workers(
    tmp_path: Path, origin: str, workers: int = 2, preexec_fn: Callable[[], None] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`edgefn serve --workers N` proxying `origin`, once it answers; the node and its port."""
    port = free_port()
    path = _node_config(
        tmp_path,
        port,
        tmp_path / "data",
        f"""
[origins.web]
endpoints = [{{ url = "{origin}" }}]

[[routes]]
name = "web"
path = "/{{*rest}}"
origin = "web"
""",
    )
    proc = subprocess.Popen(
        [*EDGEFN, "serve", "--config", str(path), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_node_raises_its_open_files_limit_to_the_hard_one_for_its_workers(
    tmp_path: Path, origin: str
) -> None:
    """Started with a soft limit of 1,024 descriptors (a common default), the node and both workers
    run with the hard limit, so they accept more than about a thousand connections."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"this machine's hard limit of open files is {hard}: nothing to raise")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    with _node_with_workers(tmp_path, origin, preexec_fn=low_soft_limit) as (proc, _port):
        for pid in [proc.pid, *_workers(proc.pid, 2)]:
            limits = Path(f"/proc/{pid}/limits").read_text()
            soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
            assert int(soft) == (1 << 20 if hard == resource.RLIM_INFINITY else hard), (pid, limits)


def test_workers_share_the_port_are_replaced_by_forks_and_stop_together(tmp_path: Path, origin: str) -> None:
    """Workers are forked from the node process, which has done the imports a worker needs, so a
    killed one is replaced without them (~1 s of a worker's start, spawned)."""
    with _node_with_workers(tmp_path, origin) as (proc, port):
        workers = _workers(proc.pid, 2)
        # it imported the gateway and the wasm runtime before forking them (gateway/worker_preload.py)
        assert "libwasmtime" in Path(f"/proc/{proc.pid}/maps").read_text()
        assert all(httpx.get(f"http://127.0.0.1:{port}/echo").status_code == 200 for _ in range(10))

        # A killed worker is replaced by a fork of the node process, which has imported what a
        # worker runs: not by a new interpreter (`spawn`) importing it all.
        os.kill(workers[0], signal.SIGKILL)
        (replacement,) = _replacements(proc.pid, workers, 1)
        assert _cmdline(replacement) == _cmdline(proc.pid)  # forked, no new interpreter
        assert all(httpx.get(f"http://127.0.0.1:{port}/echo").status_code == 200 for _ in range(10))

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        assert code == 0, proc.stderr.read()[-4000:] if proc.stderr else code


def test_workers_killed_together_are_replaced_together_and_each_place_is_spaced(
    tmp_path: Path, origin: str
) -> None:
    """Both workers killed at once (as the OOM killer may) are replaced at once, not one of them
    RESTART_EVERY_S later with no worker serving in between; a place whose worker is killed again
    within RESTART_EVERY_S of its start waits out the rest of it (no busy loop of restarts)."""
    from gateway.server import RESTART_EVERY_S

    with _node_with_workers(tmp_path, origin) as (proc, port):
        workers = _workers(proc.pid, 2)
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        replaced = _replacements(proc.pid, workers, 2)
        first, second = sorted(_started_s(w) for w in replaced)
        assert second - first < RESTART_EVERY_S / 2
        assert all(httpx.get(f"http://127.0.0.1:{port}/echo").status_code == 200 for _ in range(10))

        started = _started_s(replaced[0])
        os.kill(replaced[0], signal.SIGKILL)
        (again,) = _replacements(proc.pid, [*workers, *replaced], 1)
        assert _started_s(again) - started >= RESTART_EVERY_S - 0.5
        assert all(httpx.get(f"http://127.0.0.1:{port}/echo").status_code == 200 for _ in range(10))


def test_a_replacement_worker_serves_the_config_the_node_started_with(tmp_path: Path, origin: str) -> None:
    """A worker forked after the config file was edited serves what its siblings serve: the config
    the node read and checked at start. It read the file again, and an edit that broke it failed
    the replacement's start, which gave its place up for good."""
    with _node_with_workers(tmp_path, origin) as (proc, port):
        workers = _workers(proc.pid, 2)
        (tmp_path / "edgefn.toml").write_text('[node]\nlisten = "half an edit')
        os.kill(workers[0], signal.SIGKILL)
        (replacement,) = _replacements(proc.pid, workers, 1)
        time.sleep(2)  # a replacement that could not start exits within a few hundred ms
        assert replacement in _children(proc.pid)
        with httpx.Client() as client:  # connections the kernel spreads over both workers' sockets
            codes = [
                client.get(f"http://127.0.0.1:{port}/echo", headers={"connection": "close"})
                for _ in range(20)
            ]
        assert [r.status_code for r in codes] == [200] * 20

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "not replaced" not in stderr, stderr[-4000:]


def test_every_worker_loads_the_component_the_node_hashed(tmp_path: Path, example_components) -> None:
    """The node hashes each function's file before it forks: a worker replaced after the file
    was replaced loads the component its siblings run, from the compiled artifact, as it serves
    the config they serve. It hashed the file again and ran whatever the file was by then."""
    component = tmp_path / "fn.wasm"
    shutil.copyfile(example_components["hello"], component)
    port = free_port()
    path = _node_config(
        tmp_path,
        port,
        shared_data_dir(tmp_path / "data"),
        f"""
[functions.fn]
component = "{component}"

[[routes]]
name = "fn"
path = "/fn"
function = "fn"
""",
    )
    log = tmp_path / "node.log"

    def ready() -> int:
        return log.read_text().count("Application startup complete")

    with log.open("w") as out:
        proc = subprocess.Popen([*EDGEFN, "serve", "--config", str(path), "--workers", "2"], stderr=out)
    try:
        _wait_until(lambda: ready() == 2 or proc.poll() is not None, 120)
        workers = _workers(proc.pid, 2)
        # forked: the threads that hashed the files had ended (a node running threads spawns)
        assert all(_cmdline(w) == _cmdline(proc.pid) for w in workers)
        shutil.copyfile(example_components["stream"], component)  # another function, same name
        os.kill(workers[0], signal.SIGKILL)
        _replacements(proc.pid, workers, 1)
        _wait_until(lambda: ready() == 3 or proc.poll() is not None, 120)
        with httpx.Client(timeout=30) as client:  # new connections, spread over both workers
            answers = [
                client.get(f"http://127.0.0.1:{port}/fn", headers={"connection": "close"}) for _ in range(20)
            ]
        assert all(a.status_code == 200 and a.json()["path"] == "/fn" for a in answers)  # hello's echo
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _wait_until(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _replacements(node: int, gone: list[int], n: int) -> list[int]:
    """The `n` workers the node has forked in place of `gone` ones, once all have been."""
    deadline = time.monotonic() + 30
    while True:
        new = [w for w in _children(node) if w not in gone and "resource_tracker" not in _cmdline(w)]
        if len(new) == n:
            return new
        assert time.monotonic() < deadline, f"{len(new)} of {n} killed workers replaced"
        time.sleep(0.05)


def _started_s(pid: int) -> float:
    """When the process started, in seconds since boot (clock ticks: 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def test_each_worker_accepts_on_a_socket_of_its_own(tmp_path: Path, origin: str) -> None:
    """The kernel spreads connections over the workers' sockets (on one shared socket, whichever
    worker woke first kept them: 6/58 of 64 seen); a killed worker's socket stays open in the
    node, so connections given to it wait for its replacement instead of being refused; a worker
    that is not replaced takes its socket with it."""
    import socket

    with _node_with_workers(tmp_path, origin) as (proc, port):
        listeners = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(listeners) == 2, listeners

        def answered_by(connections: list[socket.socket]) -> list[str]:
            for c in connections:
                c.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
            prefixes = []
            for c in connections:
                head = c.recv(65536).decode("latin-1")
                assert head.startswith("HTTP/1.1 200"), head[:200]
                prefixes.append(head.lower().split("x-request-id: ")[1][:16])
            return prefixes

        connections = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(64)]
        try:
            counts = sorted(Counter(answered_by(connections)).values())
        finally:
            for c in connections:
                c.close()
        assert len(counts) == 2 and counts[0] >= 16, counts  # 32 +- 4 by the kernel's hash

        os.kill(_workers(proc.pid, 2)[0], signal.SIGKILL)
        connections = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(32)]
        try:
            assert len(answered_by(connections)) == 32  # none refused or reset
        finally:
            for c in connections:
                c.close()

        # A worker that ends by itself is not replaced: its socket is closed with it, and its
        # share of new connections goes to the other worker instead of a backlog nobody reads.
        leaving, _ = _workers(proc.pid, 2)
        os.kill(leaving, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while leaving in _children(proc.pid):  # until the node has reaped it (and closed its socket)
            assert time.monotonic() < deadline, "the worker did not stop"
            time.sleep(0.05)
        time.sleep(0.2)  # the node closes the socket just after it reaps the worker
        connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(32)]
        try:
            answered = answered_by(connections)  # a socket nobody reads would time these out
            assert len(answered) == 32 and len(set(answered)) == 1
        finally:
            for c in connections:
                c.close()


def test_sockets_for_each_worker_share_a_port_nobody_else_holds() -> None:
    import socket

    from gateway.server import bind, bind_each

    sockets = bind_each("127.0.0.1:0", 3)
    try:
        assert len({s.getsockname() for s in sockets}) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
        port = sockets[0].getsockname()[1]
    finally:
        for s in sockets:
            s.close()
    held = bind(f"127.0.0.1:{port}")
    try:
        with pytest.raises(OSError):  # another listener's port is an error, not a share of its traffic
            bind_each(f"127.0.0.1:{port}", 2)
    finally:
        held.close()


def test_an_idle_node_sleeps(tmp_path: Path, origin: str) -> None:
    """uvicorn looks for a reason to stop ten times a second; the gateway's servers are woken for
    it instead, and refresh their state once a second: an idle node's event loop sleeps. Counted
    as the loop thread's voluntary context switches (each wake-up from a timer is one)."""

    def switches(pid: int) -> int:
        status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
        return int(status.split("voluntary_ctxt_switches:")[1].split()[0])

    with _node_with_workers(tmp_path, origin, workers=1) as (proc, port):
        assert httpx.get(f"http://127.0.0.1:{port}/echo").status_code == 200
        time.sleep(1)
        before = switches(proc.pid)
        time.sleep(4)
        woken = switches(proc.pid) - before
        # 17-21 (the listeners' ticks, the event queue's poll, one thread a second); uvicorn's: ~85
        assert woken <= 40, f"{woken} wake-ups in 4 s idle"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0  # and a stop still wakes it at once


def test_workers_are_spawned_rather_than_forked_from_a_node_running_threads() -> None:
    """A node process of its own runs no thread and forks; this one (the test run's) runs some."""
    import threading

    from gateway.server import worker_context

    from .test_start_imports import run_python

    fresh = run_python(
        "from gateway.server import worker_context; print(worker_context().get_start_method())"
    )
    assert fresh == "fork"
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert worker_context().get_start_method() == "spawn"
    finally:
        stop.set()
        thread.join()


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()


def _workers(node: int, n: int) -> list[int]:
    """The node process's `n` workers, once all are up."""
    return _replacements(node, [], n)


def test_the_listener_takes_connections_before_the_gateway_has_started() -> None:
    """Bound sockets listen at once: a client (or a probe that just saw /healthz answer) that
    connects while start-up finishes waits in the backlog instead of being refused."""
    import socket

    from gateway.server import bind

    listener = bind("127.0.0.1:0")
    try:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            accepted, _ = listener.accept()  # what uvicorn does once it serves
            with accepted:
                assert accepted.recv(100).startswith(b"GET / HTTP/1.1")
    finally:
        listener.close()


def test_the_heap_built_at_start_up_is_frozen_once_the_server_has_started() -> None:
    """Start-up's objects leave the collector's generations (full collections stop walking them),
    and only after start-up: what the lifespan builds must be in the frozen set too. Then young
    collections wait for more objects than a request in flight has at its peak."""
    import asyncio
    import gc

    import uvicorn

    from gateway.server import YOUNG_THRESHOLD, _settle_collector_once_started

    server = uvicorn.Server(uvicorn.Config(app=None))

    async def scenario() -> tuple[tuple[int, int], tuple[int, int]]:
        task = asyncio.create_task(_settle_collector_once_started(server))
        await asyncio.sleep(0.2)
        before = gc.get_freeze_count(), gc.get_threshold()[0]
        server.started = True
        await asyncio.wait_for(task, 5)
        return before, (gc.get_freeze_count(), gc.get_threshold()[0])

    thresholds = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700)
    try:
        (frozen_before, young_before), (frozen_after, young_after) = asyncio.run(scenario())
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert (frozen_before, young_before) == (0, 700)  # not while the server is still starting
    assert frozen_after > 1000
    assert young_after == YOUNG_THRESHOLD > 700
