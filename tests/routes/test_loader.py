"""The config loader: DESIGN.md's sample loads, and each rule reports the exact key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from routes import ConfigError, load_config, parse_config
from tests.routes.helpers import BASE, config_dir, problems_of

# DESIGN.md's sample, verbatim, plus the two edge functions its route names (the sample does not
# define them, and a route may only name configured functions).
DESIGN_SAMPLE = """
[node]
name = "edge-1"
region = "eu-west"                  # a key of [regions]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"     # admin API and /metrics; bearer token from env EDGEFN_ADMIN_TOKEN
data_dir = ".edgefn"                # registry, compiled artifacts, queues
url_domain = "fn.localhost"         # Function URLs answer on <url-id>.<url_domain>
trusted_proxies = ["127.0.0.1/32"]  # only these may set X-Forwarded-For and geo headers
geoip_db = "geo/GeoLite2-City.mmdb" # optional MaxMind database
control_plane = "sqlite"            # or "redis://127.0.0.1:6379/0" for a fleet

[regions.eu-west]
location = [53.35, -6.26]           # latitude, longitude
[regions.us-east]
location = [38.90, -77.04]

[origins.web]
endpoints = [
  { url = "http://127.0.0.1:9001", region = "eu-west" },
  { url = "http://127.0.0.1:9002", region = "us-east" },
]
select = "nearest"                  # nearest | weighted | first-healthy
health = { path = "/healthz", interval_s = 5, timeout_s = 1 }
timeouts = { connect_s = 2, read_s = 30 }

[functions.hello]
component = "examples/hello/hello.wasm"   # a wasi:http/proxy component
memory_mb = 128
timeout_s = 10
reserved_concurrency = 20           # 0 disables; over the limit: 429
env = { GREETING = "hi" }
outbound = ["web"]                  # origins or host:port a function may call; default none
instance_reuse = 0                  # requests one instance may serve before it is dropped; 0 = fresh per request
async = { max_retries = 2, retry_delays_s = [60, 120], max_event_age_s = 21600 }
url = { auth = "none", invoke_mode = "RESPONSE_STREAM", cors = { allow_origins = ["*"] } }

[[routes]]
name = "api"
host = "*"                          # "api.example.com", "*.example.com" or "*"
path = "/api/{*rest}"               # exact, {param} segments, {*rest} tail
methods = ["GET", "POST"]           # default: all
function = "hello"                  # exactly one of: function, origin, redirect
# origin = "web"
# redirect = { to = "https://example.com/{rest}", status = 308 }
rewrite = { path = "/{rest}" }
request_headers = { set = { "x-edge" = "1" }, append = {}, remove = ["cookie"] }
response_headers = { set = { "strict-transport-security" = "max-age=63072000" }, remove = ["server"] }
auth = { type = "jwt", secret_env = "JWT_SECRET", algorithms = ["HS256"], audience = "api" }
cors = { allow_origins = ["https://app.example"], allow_methods = ["GET", "POST"], allow_headers = ["content-type"], expose_headers = [], max_age = 600, allow_credentials = false }
cache = { ttl_s = 60 }              # edge cache for this route, honouring Cache-Control
edge = { viewer = "geo-rewrite", origin = "add-headers" }   # edge functions by name

[functions.geo-rewrite]
component = "examples/hello/hello.wasm"
[functions.add-headers]
component = "examples/hello/hello.wasm"
"""


def test_design_sample_loads(tmp_path: Path) -> None:
    component = tmp_path / "examples" / "hello" / "hello.wasm"
    component.parent.mkdir(parents=True)
    component.write_bytes(b"\0asm")
    path = tmp_path / "edgefn.toml"
    path.write_text(DESIGN_SAMPLE)
    config = load_config(path)

    assert config.node.region == "eu-west"
    assert config.node.data_dir == tmp_path / ".edgefn"
    assert config.node.geoip_db == tmp_path / "geo" / "GeoLite2-City.mmdb"
    assert config.regions["us-east"].latitude == 38.90
    web = config.origins["web"]
    assert [e.region for e in web.endpoints] == ["eu-west", "us-east"]
    assert web.select == "nearest" and web.health is not None and web.health.timeout_s == 1.0
    hello = config.functions["hello"]
    assert hello.component == component
    assert hello.env == (("GREETING", "hi"),)
    assert hello.async_.retry_delays_s == (60.0, 120.0)
    assert hello.url is not None and hello.url.invoke_mode == "RESPONSE_STREAM"
    assert hello.url.cors is not None and hello.url.cors.allow_origins == ("*",)
    (route,) = config.routes
    assert route.index == 0 and route.target_kind == "function"
    assert route.rewrite_path == "/{rest}"
    assert route.request_headers.set == (("x-edge", "1"),)
    assert route.request_headers.remove == ("cookie",)
    assert route.auth.type == "jwt" and route.auth.algorithms == ("HS256",)
    assert route.cors is not None and route.cors.max_age == 600
    assert route.cache is not None and route.edge.viewer == "geo-rewrite"


F = "[functions.f]\ncomponent = 'hello.wasm'\n"
R = "[[routes]]\nfunction = 'hello'\n"

# (TOML appended to BASE, expected key path, fragment of the message): each yields exactly one problem.
CASES = [
    # top level and node
    ("[nodes]\nname = 'x'", "nodes", "unknown key; did you mean 'node'?"),
    ("[node]\nregoin = 'eu-west'", "node.regoin", "did you mean 'region'?"),
    ("[node]\nname = 5", "node.name", "expected a string, got an integer (5)"),
    ("[node]\nregion = 'mars'", "node.region", "'mars' is not a key of [regions]"),
    ("[node]\nlisten = 'localhost'", "node.listen", "is not host:port"),
    ("[node]\nadmin_listen = '127.0.0.1:70000'", "node.admin_listen", "not a number from 0 to 65535"),
    ("[node]\ntrusted_proxies = ['10.0.0.1/8']", "node.trusted_proxies[0]", "is not a CIDR network"),
    ("[node]\ntrusted_proxies = 'x'", "node.trusted_proxies", "expected an array of strings"),
    ("[node]\ncontrol_plane = 'postgres://x'", "node.control_plane", "neither 'sqlite' nor a redis:// URL"),
    ("[node]\nurl_domain = '*.fn'", "node.url_domain", "without '*'"),
    ("[node]\ninstance_slots = -1", "node.instance_slots", "must be from 0 to 256"),
    ("routes = 3", "routes", "expected an array of tables"),
    # regions
    ("[regions.mars]\nlocation = [95, 0]", "regions.mars.location[0]", "latitude 95 is out of range"),
    ("[regions.mars]\nlocation = [0, 181]", "regions.mars.location[1]", "longitude 181 is out of range"),
    ("[regions.mars]\nlocation = [1]", "regions.mars.location", "expected [latitude, longitude]"),
    ("[regions.mars]", "regions.mars.location", "is required"),
    # origins
    ("[origins.o]\nendpoints = ['ftp://x']", "origins.o.endpoints[0].url", "scheme must be http or https"),
    ("[origins.o]\nendpoints = [{ url = 'http://' }]", "origins.o.endpoints[0].url", "has no host"),
    (
        "[origins.o]\nendpoints = [{ url = 'http://a', region = 'eu-wst' }]",
        "origins.o.endpoints[0].region",
        "did you mean 'eu-west'?",
    ),
    ("[origins.o]\nendpoints = []", "origins.o.endpoints", "non-empty array"),
    ("[origins.o]\nselect = 'nearest'", "origins.o.endpoints", "is required"),
    (
        "[origins.o]\nendpoints = ['http://a']\nselect = 'closest'",
        "origins.o.select",
        "is not one of nearest",
    ),
    (
        "[origins.o]\nendpoints = ['http://a']\nhealth = { interval_s = 0 }",
        "origins.o.health.interval_s",
        "must be greater than 0",
    ),
    (
        "[origins.o]\nendpoints = ['http://a']\ntimeouts = { read = 1 }",
        "origins.o.timeouts.read",
        "unknown key",
    ),
    # functions
    ("[functions.f]\nmemory_mb = 64", "functions.f.component", "is required"),
    ("[functions.f]\ncomponent = 'missing.wasm'", "functions.f.component", "file not found"),
    (F + "memory_mb = 0", "functions.f.memory_mb", "0 is out of range"),
    (F + "memory_mb = '1'", "functions.f.memory_mb", "expected an integer"),
    (F + "memory_mb = true", "functions.f.memory_mb", "got a boolean"),
    (F + "timeout_s = nan", "functions.f.timeout_s", "not a finite number"),
    (F + "timeout_s = -1", "functions.f.timeout_s", "greater than 0"),
    (
        F + "reserved_concurrency = -1",
        "functions.f.reserved_concurrency",
        "out of range",
    ),
    (F + "env = { A = 1 }", "functions.f.env.A", "expected a string"),
    (F + "env = { 1A = 'x' }", "functions.f.env.1A", "not a valid environment"),
    (
        F + "outbound = ['web', 'nowhere']",
        "functions.f.outbound[1]",
        "neither a configured origin nor host:port",
    ),
    (
        F + "async = { max_retries = 11 }",
        "functions.f.async.max_retries",
        "out of range",
    ),
    (
        F + "async = { retry_delays_s = [1, 'x'] }",
        "functions.f.async.retry_delays_s[1]",
        "not a number of seconds",
    ),
    (
        F + "url = { invoke_mode = 'STREAM' }",
        "functions.f.url.invoke_mode",
        "is not one of BUFFERED, RESPONSE_STREAM",
    ),
    (F + "url = { auth = 'basic' }", "functions.f.url.auth.type", "not one of"),
    (
        F + "schedule = 'cron(0 12 * * ?)'",
        "functions.f.schedule",
        "takes 6 fields",
    ),
    (
        F + "schedule = ['rate(5 minutes)', 'rate(0 days)']",
        "functions.f.schedule[1]",
        "at least 1",
    ),
    (
        F + "schedule = 'every day'",
        "functions.f.schedule",
        "'cron(m h dom mon dow year)' or 'rate(N unit)'",
    ),
    ("[functions.'a:b']\ncomponent = 'hello.wasm'", 'functions."a:b"', "is not a valid name"),
    # routes: targets and references
    ("[[routes]]\nname = 'r'", "routes[0]", "needs exactly one target"),
    (R + "origin = 'web'", "routes[0]", "got function and origin"),
    ("[[routes]]\nfunction = 'helo'", "routes[0].function", "'helo' is not configured (configured: hello)"),
    ("[[routes]]\nfunction = 'hello:'", "routes[0].function", "empty qualifier"),
    ("[[routes]]\nfunction = 'hello:0'", "routes[0].function", "versions start at 1"),
    ("[[routes]]\nfunction = 'hello:a b'", "routes[0].function", "is not an alias"),
    ("[[routes]]\norigin = 'webb'", "routes[0].origin", "did you mean 'web'?"),
    (
        "[[routes]]\nredirect = { to = '/x', status = 303 }",
        "routes[0].redirect.status",
        "not one of 301, 302, 307, 308",
    ),
    ("[[routes]]\nredirect = { status = 301 }", "routes[0].redirect.to", "is required"),
    ("[[routes]]\nredirect = { to = 'ftp://x' }", "routes[0].redirect.to", "absolute http(s) URL"),
    (
        "[[routes]]\nname = 'a'\nfunction = 'hello'\npath = '/a'\n[[routes]]\nname = 'a'\norigin = 'web'",
        "routes[1].name",
        "duplicate route name 'a' (first used by routes[0])",
    ),
    (
        R + "path = '/u/{id}'\n[[routes]]\npath = '/u/{name}'\nmethods = ['GET']\norigin = 'web'",
        "routes[1]",
        "unreachable: routes[0]",
    ),
    # routes: patterns and templates
    (R + "host = 'a.*.com'", "routes[0].host", "'*' is allowed only"),
    (R + "host = 'exa mple.com'", "routes[0].host", "not a valid host name label"),
    (R + "host = 'a.com:80'", "routes[0].host", "has no port"),
    (R + "path = 'api'", "routes[0].path", "starts with '/'"),
    (R + "path = '/a/{*rest}/b'", "routes[0].path", "must be the last segment"),
    (R + "path = '/{a}/{a}'", "routes[0].path", "'a' appears twice"),
    (R + "path = '/{1x}'", "routes[0].path", "a name is a letter"),
    (R + "path = '/a{b}'", "routes[0].path", "must be a whole segment"),
    (R + "path = '/a//b'", "routes[0].path", "empty segment"),
    (R + "path = '/a b'", "routes[0].path", "must be percent-encoded"),
    (
        R + "path = '/u/{name}'\nrewrite = { path = '/{id}' }",
        "routes[0].rewrite.path",
        "{id} is not captured by path '/u/{name}' (it captures name)",
    ),
    (
        "[[routes]]\npath = '/a'\nredirect = { to = 'https://x/{rest}' }",
        "routes[0].redirect.to",
        "{rest} is not captured",
    ),
    (R + "rewrite = { path = 'x' }", "routes[0].rewrite.path", "must start with '/'"),
    (R + "rewrite = { path = '/{a' }", "routes[0].rewrite.path", "unbalanced"),
    (R + "methods = ['GET', 'BAD METHOD']", "routes[0].methods[1]", "not a valid HTTP"),
    (R + "methods = []", "routes[0].methods", "allows nothing"),
    (R + "metods = ['GET']", "routes[0].metods", "did you mean 'methods'?"),
    # routes: auth
    (R + "auth = { type = 'api_key' }", "routes[0].auth.keys_env", "is required"),
    (R + "auth = { header = 'x' }", "routes[0].auth.type", "is required"),
    (
        R + "auth = { type = 'api_key', keys_env = 'K', secret_env = 'S' }",
        "routes[0].auth.secret_env",
        "not used by auth type 'api_key'",
    ),
    (
        R + "auth = { type = 'jwt', secret_env = 'S', algorithms = ['HS256', 'none'] }",
        "routes[0].auth.algorithms",
        "'none' is not allowed; use one of HS256,",
    ),
    (
        R + "auth = { type = 'jwt', secret_env = 'S', algorithms = ['HS257'] }",
        "routes[0].auth.algorithms",
        "did you mean 'HS256'?",
    ),
    (
        R + "auth = { type = 'jwt', algorithms = ['HS256'] }",
        "routes[0].auth",
        "exactly one of secret_env, jwks_file, jwks_url (got none)",
    ),
    (
        R + "auth = { type = 'jwt', secret_env = 'S', jwks_url = 'https://i/j', algorithms = ['HS256'] }",
        "routes[0].auth",
        "(got secret_env and jwks_url)",
    ),
    (
        R + "auth = { type = 'jwt', secret_env = 'S', algorithms = [] }",
        "routes[0].auth.algorithms",
        "must not be empty",
    ),
    (
        R + "auth = { type = 'jwt', jwks_url = 'https://i/j', algorithms = ['RS256', 'HS256'] }",
        "routes[0].auth.algorithms",
        "HS256 cannot be used with a JWKS key source",
    ),
    (
        R + "auth = { type = 'jwt', secret_env = 'S', algorithms = ['RS256'] }",
        "routes[0].auth.algorithms",
        "RS256 need a public key",
    ),
    (
        R + "auth = { type = 'jwt', jwks_file = 'nope.json', algorithms = ['ES256'] }",
        "routes[0].auth.jwks_file",
        "file not found",
    ),
    (R + "auth = { type = 'sigv4' }", "routes[0].auth.credentials_env", "is required"),
    # routes: cors, headers, cache, edge
    (R + "cors = { max_age = -1 }", "routes[0].cors.max_age", "out of range"),
    (
        R + "cors = { allow_origins = ['*'], allow_credentials = true }",
        "routes[0].cors.allow_origins",
        "'*' cannot be used with allow_credentials = true",
    ),
    (
        R + "cors = { allow_origins = ['app.example'] }",
        "routes[0].cors.allow_origins[0]",
        "is not an origin",
    ),
    (
        R + "request_headers = { set = { x-a = 1 } }",
        "routes[0].request_headers.set.x-a",
        "expected a string",
    ),
    (
        R + "response_headers = { set = { 'bad header' = 'v' } }",
        'routes[0].response_headers.set."bad header"',
        "not a valid header name",
    ),
    (
        R + 'request_headers = { set = { x-a = "a\\nb" } }',
        "routes[0].request_headers.set.x-a",
        "must not contain CR, LF or NUL",
    ),
    (R + "cache = { ttl_s = -1 }", "routes[0].cache.ttl_s", "out of range"),
    (R + "edge = { viewer = 'geo' }", "routes[0].edge.viewer", "'geo' is not configured"),
]


@pytest.mark.parametrize(("extra", "key", "fragment"), CASES, ids=[c[1] + ":" + c[2][:30] for c in CASES])
def test_each_rule_names_key_and_problem(tmp_path: Path, extra: str, key: str, fragment: str) -> None:
    path = config_dir(tmp_path)
    # Top-level keys must come before the first table.
    text = BASE + "\n" + extra + "\n" if extra.startswith("[") else extra + "\n" + BASE
    problems = problems_of(path, text)
    assert [(p.key, fragment in p.message) for p in problems] == [(key, True)], [str(p) for p in problems]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = config_dir(tmp_path)
    text = BASE + "[node]\nname = 1\nlisten = 'x'\n[[routes]]\nfunction = 'nope'\nmethods = ['A B']\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    keys = [p.key for p in info.value.problems]
    assert keys == ["routes[0].methods[0]", "routes[0].function", "node.listen", "node.name"]
    assert str(info.value).count("\n") == 3


def test_toml_syntax_error_is_one_line_with_position(tmp_path: Path) -> None:
    path = tmp_path / "edgefn.toml"
    with pytest.raises(ConfigError) as info:
        parse_config("[node]\nname = \n", path)
    assert str(info.value) == f"{path}: line 2, column 8: TOML syntax error: Invalid value"


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the file: No such file"):
        load_config(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"[node]\nname = '\xe9'\n")
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8 text \(byte 15\)"):
        load_config(latin)


def test_values_are_normalised(tmp_path: Path) -> None:
    path = config_dir(tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwks.json").write_text("{}")
    text = BASE + (
        "[[routes]]\nfunction = 'hello:prod'\nmethods = ['get', 'Post', 'GET']\nhost = 'API.Example.com'\n"
        "request_headers = { set = { X-Edge = '1' }, append = { Via = 'edgefn' }, remove = ['Cookie'] }\n"
        "auth = { type = 'jwt', jwks_file = 'keys/jwks.json', algorithms = ['RS256', 'ES256'] }\n"
        "[[routes]]\nname = 'v3'\nfunction = 'hello:3'\npath = '/v3'\n"
    )
    config = parse_config(text, path)
    first, second = config.routes
    assert first.name == "route-0" and second.name == "v3" and second.index == 1
    assert first.methods == ("GET", "POST")
    assert first.request_headers.set == (("x-edge", "1"),)
    assert first.request_headers.append == (("via", "edgefn"),)
    assert first.request_headers.remove == ("cookie",)
    assert first.auth.jwks_file == tmp_path / "keys" / "jwks.json"


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = config_dir(sub)
    monkeypatch.chdir(tmp_path)
    config = parse_config(BASE + "[node]\ndata_dir = 'state'\n", Path("conf/edgefn.toml"))
    assert config.functions["hello"].component == sub / "hello.wasm"
    assert config.node.data_dir == sub / "state"
    assert path.parent == sub


def test_a_bad_definition_does_not_cascade_into_references(tmp_path: Path) -> None:
    path = config_dir(tmp_path)
    text = BASE + "[functions.f]\ncomponent = 3\n[[routes]]\nfunction = 'f'\n"
    assert [p.key for p in problems_of(path, text)] == ["functions.f.component"]
    text = BASE + "[regions.mars]\nlocation = 'red'\n[node]\nregion = 'mars'\n"
    assert [p.key for p in problems_of(path, text)] == ["regions.mars.location"]


def test_a_problem_is_one_line_whatever_the_user_wrote(tmp_path: Path) -> None:
    path = config_dir(tmp_path)
    text = BASE + '[origins."a\\rb"]\nendpoints = ["http://a"]\n[[routes]]\norigin = "zz"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.problems) == 2
    assert lines[1].endswith("origin 'zz' is not configured (configured: a\\rb, web)")
