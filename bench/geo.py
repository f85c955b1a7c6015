"""`python -m bench.geo`: what client geography costs per request.

Two views, both against a synthetic MaxMind City database (mmdb-writer; `--networks` random IPv4
/24s and IPv6 /48s, each with a full GeoIP2-City record in eight languages, so decoding costs what
a GeoLite2-City record costs):

1. in process, per call (median of `--repeats` timings of a loop): `maxminddb`'s own lookup,
   `GeoLocator.lookup` on a cache hit and on a miss, `locate` with trusted CDN headers, the
   `x-edgefn-viewer-*` headers, the nearest-endpoint order of a three-region pool against config
   order, and the whole accept phase (`Gateway.accept`, the real method) with and without a
   database;
2. end to end: `edgefn serve` proxying to an nginx origin, once with `geoip_db` and
   `select = "nearest"`, once with neither, loaded by wrk whose Lua script sets
   `x-forwarded-for` per request to one address (every lookup a cache hit) or to one of 100,000
   (almost every lookup a miss: the cache holds 4,096). Passes alternate the two gateways and
   medians are reported.

Figures go to the generated section of docs/edge.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    _DONE_LUA,
    BenchError,
    Child,
    Processes,
    WrkResult,
    ensure_tools,
    fmt,
    free_port,
    machine_info,
    median,
    parse_wrk,
    run_bench,
    say,
    table,
    tool_path,
    wait_http,
    write_section,
    wrk_argv,
)
from bench.proxy import _nginx_common, edgefn_argv

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench.geo"
LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")
CITIES = [
    ("IE", "Dublin", 53.35, -6.26, "EU"),
    ("GB", "London", 51.51, -0.13, "EU"),
    ("DE", "Frankfurt", 50.11, 8.68, "EU"),
    ("FR", "Paris", 48.86, 2.35, "EU"),
    ("US", "Washington", 38.90, -77.04, "NA"),
    ("US", "San Jose", 37.34, -121.89, "NA"),
    ("BR", "São Paulo", -23.55, -46.63, "SA"),
    ("JP", "Tōkyō", 35.68, 139.69, "AS"),
    ("SG", "Singapore", 1.35, 103.82, "AS"),
    ("IN", "Mumbai", 19.08, 72.88, "AS"),
    ("AU", "Sydney", -33.87, 151.21, "OC"),
    ("ZA", "Johannesburg", -26.20, 28.05, "AF"),
]


@dataclass(frozen=True)
class GeoData:
    path: Path
    listed: list[str]  # addresses inside the database's networks
    unlisted: list[str]  # addresses the database does not know


def city_record(i: int) -> dict[str, Any]:
    country, city, lat, lon, continent = CITIES[i % len(CITIES)]
    names = dict.fromkeys(LANGUAGES, city)
    return {
        "city": {"geoname_id": 1000 + i, "names": names},
        "continent": {"code": continent, "geoname_id": 6255148, "names": dict.fromkeys(LANGUAGES, continent)},
        "country": {"geoname_id": 2000 + i, "iso_code": country, "names": dict.fromkeys(LANGUAGES, country)},
        "location": {"accuracy_radius": 20, "latitude": lat, "longitude": lon, "time_zone": "Etc/UTC"},
        "postal": {"code": f"{i:05d}"},
        "registered_country": {"geoname_id": 2000 + i, "iso_code": country},
        "subdivisions": [{"geoname_id": 3000 + i, "iso_code": "X", "names": names}],
    }


def build_database(path: Path, networks: int, seed: int = 7) -> GeoData:
    from mmdb_writer import MMDBWriter  # dev extra: only the benchmark and the tests write databases
    from netaddr import IPSet

    rng = random.Random(seed)
    v4: set[int] = set()
    while len(v4) < networks:
        v4.add(rng.randrange(1 << 8, 224 << 16))  # /24 prefixes from 1.0.0.0 up to 223.255.255.0
    v6 = {rng.randrange(1 << 47) | (0x2001 << 32) for _ in range(networks // 10)}
    groups: dict[int, list[str]] = {}
    for prefix in v4:
        groups.setdefault(prefix % 97, []).append(f"{ipaddress.IPv4Address(prefix << 8)}/24")
    for prefix in v6:
        groups.setdefault(prefix % 97, []).append(f"{ipaddress.IPv6Address(prefix << 80)}/48")
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    for key, nets in groups.items():
        writer.insert_network(IPSet(nets), city_record(key))
    writer.to_db_file(str(path))
    prefixes = sorted(v4)
    listed = [
        str(ipaddress.IPv4Address((rng.choice(prefixes) << 8) | rng.randrange(1, 255)))
        for _ in range(100_000)
    ]
    unlisted: list[str] = []
    while len(unlisted) < 1000:
        address = rng.randrange(1 << 24, 224 << 24)
        if address >> 8 not in v4:
            unlisted.append(str(ipaddress.IPv4Address(address)))
    return GeoData(path, listed, unlisted)


# --- in process ----------------------------------------------------------------------------------


def per_call_us(fn: Callable[[int], object], calls: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of one call in a loop of `calls` (fn gets the index)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return median(samples)


def in_process(data: GeoData, workdir: Path, calls: int, repeats: int) -> list[tuple[str, float, str]]:
    import maxminddb

    from edge.geo import GeoLocator, viewer_headers
    from edge.origins import OriginPool
    from gateway.app import Gateway
    from routes.config import Config, Endpoint, Node, Origin, Region

    listed, n = data.listed, len(data.listed)
    reader = maxminddb.open_database(str(data.path), maxminddb.MODE_AUTO)
    geo = GeoLocator(data.path)
    tiny = GeoLocator(data.path, cache_size=1)
    none = GeoLocator(None)
    dublin = geo.lookup(listed[0])
    cdn = [
        (b"cloudfront-viewer-country", b"FR"),
        (b"cloudfront-viewer-latitude", b"48.86"),
        (b"cloudfront-viewer-longitude", b"2.35"),
    ]
    regions = {
        "eu-west": Region("eu-west", 53.35, -6.26),
        "us-east": Region("us-east", 38.90, -77.04),
        "ap-northeast": Region("ap-northeast", 35.68, 139.69),
    }
    endpoints = tuple(Endpoint(f"http://127.0.0.1:{9000 + i}", region=r) for i, r in enumerate(regions))
    nearest = OriginPool(Origin("web", endpoints, "nearest"), regions, "us-east")
    first = OriginPool(Origin("web", endpoints, "first-healthy"), regions, "us-east")

    def gateway(geoip: Path | None) -> Gateway:
        node = Node(name="bench", region="us-east", geoip_db=geoip, data_dir=workdir / "data")
        return Gateway(Config(path=workdir / "edgefn.toml", node=node, regions=regions), env={})

    with_db, without_db = gateway(data.path), gateway(None)

    def scope(i: int) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "path": "/x",
            "raw_path": b"/x",
            "query_string": b"",
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
            "headers": [
                (b"host", b"bench"),
                (b"user-agent", b"wrk"),
                (b"accept", b"*/*"),
                (b"x-forwarded-for", listed[i % n].encode()),
            ],
        }

    scopes = [scope(i) for i in range(1000)]

    def receive() -> None:
        return None

    rows: list[tuple[str, float, str]] = [
        (
            "maxminddb `reader.get`, no cache",
            per_call_us(lambda i: reader.get(listed[i % n]), calls, repeats),
            "the tree walk and record decode",
        ),
        (
            "`GeoLocator.lookup`, cache hit",
            per_call_us(lambda i: geo.lookup(listed[0]), calls, repeats),
            "one client, many requests",
        ),
        (
            "`GeoLocator.lookup`, cache miss",
            per_call_us(lambda i: tiny.lookup(listed[i % n]), calls, repeats),
            "every request a new address",
        ),
        (
            "`GeoLocator.lookup`, address not in the database",
            per_call_us(lambda i: tiny.lookup(data.unlisted[i % 1000]), calls, repeats),
            "miss, nothing found",
        ),
        (
            "`GeoLocator.lookup`, no database",
            per_call_us(lambda i: none.lookup(listed[0]), calls, repeats),
            "",
        ),
        (
            "`GeoLocator.locate` with trusted CloudFront headers, cache hit",
            per_call_us(lambda i: geo.locate(listed[0], cdn), calls, repeats),
            "header parse and merge",
        ),
        ("`viewer_headers` (4 headers)", per_call_us(lambda i: viewer_headers(dublin), calls, repeats), ""),
        (
            "`OriginPool.candidates`, nearest of 3 regions",
            per_call_us(lambda i: nearest.candidates(dublin), calls, repeats),
            "3 haversines and a sort",
        ),
        (
            "`OriginPool.candidates`, first-healthy of 3",
            per_call_us(lambda i: first.candidates(dublin), calls, repeats),
            "for scale",
        ),
        (
            "`Gateway.accept` with `geoip_db`, cache hit",
            per_call_us(lambda i: with_db.accept(scopes[0], receive), calls, repeats),
            "the whole accept phase",
        ),
        (
            "`Gateway.accept` with `geoip_db`, 1,000 clients",
            per_call_us(lambda i: with_db.accept(scopes[i % 1000], receive), calls, repeats),
            "all in the LRU after the first round",
        ),
        (
            "`Gateway.accept` without a database",
            per_call_us(lambda i: without_db.accept(scopes[i % 1000], receive), calls, repeats),
            "for scale",
        ),
    ]
    reader.close()
    return rows


# --- end to end ---------------------------------------------------------------------------------

ORIGIN_CONF = """  server {{
    listen 127.0.0.1:{port};
    listen 127.0.0.1:{port2};
    listen 127.0.0.1:{port3};
    access_log off;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""

EDGEFN_TOML = """
[node]
name = "bench"
region = "us-east"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{data}"
trusted_proxies = ["127.0.0.1/32"]
{geoip}

[regions.eu-west]
location = [53.35, -6.26]
[regions.us-east]
location = [38.90, -77.04]
[regions.ap-northeast]
location = [35.68, 139.69]

[origins.web]
endpoints = [
  {{ url = "http://127.0.0.1:{origins[0]}", region = "eu-west" }},
  {{ url = "http://127.0.0.1:{origins[1]}", region = "us-east" }},
  {{ url = "http://127.0.0.1:{origins[2]}", region = "ap-northeast" }},
]
select = "{select}"

[[routes]]
name = "web"
path = "/{{*rest}}"
origin = "web"
"""

XFF_LUA = """
local addresses = {{}}
for line in io.lines("{file}") do addresses[#addresses + 1] = line end
local n = #addresses
local i = 0
request = function()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", "/hello", {{ ["X-Forwarded-For"] = addresses[i] }})
end
"""


@dataclass(frozen=True)
class Gw:
    name: str
    about: str
    url: str
    child: Child


@dataclass(frozen=True)
class Load:
    name: str
    about: str
    addresses: list[str]


def start_e2e(procs: Processes, workdir: Path, data: GeoData, log_level: str) -> list[Gw]:
    # One nginx on three ports stands for three regional origins.
    ports = (free_port(), free_port(), free_port())
    conf = workdir / "origin.conf"
    conf.write_text(
        _nginx_common(workdir, "origin", 1)
        + ORIGIN_CONF.format(port=ports[0], port2=ports[1], port3=ports[2])
    )
    origin = procs.start("origin", [tool_path("nginx"), "-c", str(conf), "-p", str(workdir)])
    for port in ports:
        wait_http(f"http://127.0.0.1:{port}/", origin)
    base, env = edgefn_argv()
    out: list[Gw] = []
    for name, about, geoip, select in (
        ("geo", '`geoip_db`, `select = "nearest"`', f'geoip_db = "{data.path}"', "nearest"),
        ("plain", 'no database, `select = "first-healthy"`', "", "first-healthy"),
    ):
        port, admin = free_port(), free_port()
        toml = workdir / f"edgefn-{name}.toml"
        toml.write_text(
            EDGEFN_TOML.format(
                port=port,
                admin=admin,
                data=workdir / f"data-{name}",
                geoip=geoip,
                origins=ports,
                select=select,
            )
        )
        child = procs.start(
            f"edgefn-{name}", [*base, "serve", "--config", str(toml), "--log-level", log_level], env=env
        )
        out.append(Gw(name, about, f"http://127.0.0.1:{port}", child))
    for gw in out:
        wait_http(gw.url + "/hello", gw.child, timeout_s=90)
    return out


def run_load(gw: Gw, load: Load, workdir: Path, connections: int, duration_s: float) -> WrkResult:
    addresses = workdir / f"xff-{load.name}.txt"
    if not addresses.exists():
        addresses.write_text("\n".join(load.addresses) + "\n")
    script = workdir / f"wrk-{load.name}.lua"
    script.write_text(XFF_LUA.format(file=addresses) + _DONE_LUA)
    argv = wrk_argv(gw.url, connections=connections, threads=1, duration_s=duration_s, script=script)
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 30, start_new_session=True
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration_s + 30:.0f} s") from exc
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    result = parse_wrk(out.stdout)
    if result.errors:
        raise BenchError(f"{gw.name}/{load.name}: {result.errors} errors of {result.requests} requests")
    return result


# --- report -------------------------------------------------------------------------------------


def render(
    micro: list[tuple[str, float, str]],
    e2e: dict[tuple[str, str], list[WrkResult]],
    gateways: list[Gw],
    loads: list[Load],
    args: argparse.Namespace,
    machine: dict[str, str],
    data: GeoData,
    command: str,
) -> str:
    lines = [
        "## Cost of client geography (generated)",
        "",
        f"Run: `{command}` on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores), "
        f"Python {machine.get('python', sys.version.split()[0])}, {time.strftime('%Y-%m-%d')}. "
        f"Database: {args.networks:,} IPv4 /24 and {args.networks // 10:,} IPv6 /48 networks, "
        f"GeoIP2-City records in {len(LANGUAGES)} languages, {data.path.stat().st_size / 1e6:.1f} MB.",
        "",
        f"### In process, per call (median of {args.repeats} loops of {args.calls:,} calls)",
        "",
        table(["what", "µs per call", "note"], [[w, fmt(us, 2), note] for w, us, note in micro]),
        "",
    ]
    if e2e:
        rows = []
        for gw in gateways:
            for load in loads:
                results = e2e[(gw.name, load.name)]
                rows.append(
                    [
                        gw.about,
                        load.about,
                        fmt(median([r.req_per_s for r in results])),
                        fmt(median([r.p50_ms for r in results]), 2),
                        fmt(median([r.p99_ms for r in results]), 2),
                    ]
                )
        lines += [
            f"### End to end (wrk -t1 -c{args.connections}, {args.duration:g} s, "
            f"median of {args.passes} passes)",
            "",
            "`edgefn serve` (1 worker) proxying a 3-byte answer from nginx; every request carries "
            "`x-forwarded-for` from a trusted loopback peer.",
            "",
            table(["gateway", "clients", "req/s", "p50 ms", "p99 ms"], rows),
            "",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.geo", description=__doc__.split("\n")[0])
    p.add_argument(
        "--networks", type=int, default=50_000, help="IPv4 networks in the database (default 50,000)"
    )
    p.add_argument("--calls", type=int, default=100_000, help="calls per in-process loop (default 100,000)")
    p.add_argument("--repeats", type=int, default=5, help="in-process loops per figure (default 5)")
    p.add_argument("--passes", type=int, default=3, help="end-to-end passes (default 3)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run (default 8)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--no-e2e", action="store_true", help="only the in-process figures (no nginx, wrk)")
    p.add_argument("--edgefn-log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "edge.md")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install nginx and wrk")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.geo " + " ".join(argv if argv is not None else sys.argv[1:])

    def work(workdir: Path) -> None:
        if args.no_e2e:
            machine = {"cpu": "?", "cores": str(os.cpu_count())}
        else:
            ensure_tools(install=not args.no_install)
            machine = machine_info()
        say(f"building a database of {args.networks:,} networks in {workdir}")
        data = build_database(workdir / "city.mmdb", args.networks)
        say("in-process figures")
        micro = in_process(data, workdir, args.calls, args.repeats)
        for what, us, _ in micro:
            say(f"  {what}: {us:.2f} µs")
        e2e: dict[tuple[str, str], list[WrkResult]] = {}
        gateways: list[Gw] = []
        loads = [
            Load("one", "one address (cache hit)", data.listed[:1]),
            Load("many", "100,000 addresses (cache miss)", data.listed),
        ]
        if not args.no_e2e:
            with Processes(workdir) as procs:
                gateways = start_e2e(procs, workdir, data, args.edgefn_log_level)
                for p in range(args.passes):
                    for load in loads:
                        for gw in gateways if p % 2 == 0 else reversed(gateways):
                            result = run_load(gw, load, workdir, args.connections, args.duration)
                            e2e.setdefault((gw.name, load.name), []).append(result)
                            say(
                                f"  pass {p + 1} {gw.name}/{load.name}: {result.req_per_s:,.0f} req/s, "
                                f"p50 {result.p50_ms:.2f} ms"
                            )
        body = render(micro, e2e, gateways, loads, args, machine, data, command.strip())
        write_section(args.output, SECTION, body)
        say(f"wrote {args.output}")

    return run_bench("edgefn-bench-geo-", work)


if __name__ == "__main__":
    sys.exit(main())
