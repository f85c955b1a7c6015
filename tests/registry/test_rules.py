"""Every rule of the registry and the error it raises, one test per rule (docs/functions.md, Registry)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.functions.registry import (
    LATEST,
    Conflict,
    FunctionConfig,
    Invalid,
    NotFound,
    Registry,
    open_registry,
)
from gateway.functions.registry_sqlite import SqliteStore
from routes.config import AsyncInvoke, Auth, Cors, Function, FunctionUrl, Node

Code = Callable[[str], Path]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- deploy ---------------------------------------------------------------------------------------


def test_deploy_stores_the_blob_and_sets_latest(registry: Registry, code: Code) -> None:
    info = registry.deploy("hello", code("v1"))
    assert info.name == "hello" and info.source == "registry"
    assert info.code_sha256 == sha(code("v1")) and info.code_size == code("v1").stat().st_size
    assert registry.blob_path(info.code_sha256).read_bytes() == code("v1").read_bytes()
    assert registry.get("hello") == info
    assert info.config == FunctionConfig() and info.versions == () and info.aliases == ()


def test_redeploy_changes_code_and_keeps_the_rest(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"), FunctionConfig(memory_mb=256))
    registry.publish("hello")
    registry.set_alias("hello", "live", 1)
    info = registry.deploy("hello", code("v2"))
    assert info.code_sha256 == sha(code("v2"))
    assert info.config.memory_mb == 256
    assert [v.version for v in info.versions] == [1] and info.alias("live").version == 1


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "a/b", "ünï"])
def test_deploy_refuses_a_bad_name_and_stores_nothing(registry: Registry, code: Code, name: str) -> None:
    with pytest.raises(Invalid, match="not a function name"):
        registry.deploy(name, code("v1"))
    assert registry.functions() == []
    assert registry.revision() == 0


def test_deploy_refuses_a_bad_config_before_storing_anything(registry: Registry, code: Code) -> None:
    with pytest.raises(Invalid, match="memory_mb"):
        registry.deploy("hello", code("v1"), FunctionConfig(memory_mb=1))
    with pytest.raises(NotFound):
        registry.get("hello")


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory_mb": 15}, "memory_mb: 15 is out of range"),
        ({"memory_mb": 10241}, "memory_mb: 10241 is out of range"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"timeout_s": 900.5}, "timeout_s"),
        ({"reserved_concurrency": -1}, "reserved_concurrency"),
        ({"instance_reuse": -1}, "instance_reuse"),
        ({"env": (("1BAD", "x"),)}, "not an environment variable name"),
        ({"env": (("A", "x" * 4096),)}, "4097 bytes of keys and values; the limit is 4096"),
        ({"secrets": (("A", "bad name"),)}, "not a secret name"),
        ({"env": (("A", "1"),), "secrets": (("A", "s"),)}, "both in env and from a secret"),
        ({"outbound": ("not an origin!",)}, "neither an origin name nor host:port"),
        ({"schedule": ("every day",)}, "schedule"),
        ({"async_": AsyncInvoke(max_retries=11)}, "async.max_retries"),
        ({"async_": AsyncInvoke(retry_delays_s=(-1.0,))}, "async.retry_delays_s"),
        ({"async_": AsyncInvoke(max_event_age_s=59)}, "async.max_event_age_s"),
    ],
)
def test_configure_refuses_each_broken_rule(
    registry: Registry, code: Code, change: dict[str, object], message: str
) -> None:
    before = registry.deploy("hello", code("v1"))
    with pytest.raises(Invalid, match=message.replace("(", r"\(")):
        registry.configure("hello", replace(FunctionConfig(), **change))  # type: ignore[arg-type]
    assert registry.get("hello") == before


def test_configure_accepts_the_limits(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"))
    env = (("A", "x" * 4095),)  # 1 + 4095 bytes: exactly Lambda's 4 KB
    for config in (
        FunctionConfig(memory_mb=16, timeout_s=900, env=env),
        FunctionConfig(memory_mb=10240, timeout_s=0.001, outbound=("web", "api.example:443")),
        FunctionConfig(schedule=("rate(5 minutes)", "cron(0 12 * * ? *)")),
    ):
        assert registry.configure("hello", config).config == config


def test_update_config_changes_only_the_keys_given(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"), FunctionConfig(memory_mb=256, env=(("A", "1"),)))
    info = registry.update_config("hello", {"timeout_s": 3, "async": {"max_retries": 0}})
    assert info.config.memory_mb == 256 and info.config.env == (("A", "1"),)
    assert info.config.timeout_s == 3.0 and info.config.async_.max_retries == 0
    assert info.config.async_.retry_delays_s == (60.0, 120.0)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"memory_mb": "big"}, "memory_mb: expected an integer, got str"),
        ({"memory_mb": True}, "memory_mb: expected an integer, got a boolean"),
        ({"env": {"A": 1}}, "env.A: expected a string"),
        ({"env": ["A=1"]}, "env: expected an object of strings"),
        ({"outbound": "web"}, "outbound: expected an array of strings"),
        ({"memory": 128}, "memory: unknown configuration key"),
        ({"async": {"retries": 1}}, "async.retries: unknown key"),
        ({"async": {"retry_delays_s": ["1"]}}, "async.retry_delays_s: expected an array of numbers"),
    ],
)
def test_update_config_refuses_bad_json(registry: Registry, code: Code, doc: dict, message: str) -> None:
    registry.deploy("hello", code("v1"))
    with pytest.raises(Invalid, match=message):
        registry.update_config("hello", doc)


def test_configure_unknown_function_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound, match="'nope' does not exist"):
        registry.configure("nope", FunctionConfig())


def test_config_round_trips_through_json() -> None:
    config = FunctionConfig(
        memory_mb=512,
        env=(("A", "1"), ("B", "two")),
        secrets=(("DB", "db-pass"),),
        outbound=("web",),
        async_=AsyncInvoke(max_retries=1, retry_delays_s=(0.5,), max_event_age_s=60),
        schedule=("rate(1 minute)",),
    )
    assert FunctionConfig.from_doc(config.to_doc()) == config


# -- publish, versions ------------------------------------------------------------------------------


def test_publish_snapshots_code_and_config(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"), FunctionConfig(memory_mb=256))
    v1 = registry.publish("hello", "first")
    registry.deploy("hello", code("v2"), FunctionConfig(memory_mb=512))
    info = registry.get("hello")
    assert info.version(1) == v1
    assert (v1.version, v1.code_sha256, v1.config.memory_mb, v1.description) == (
        1,
        sha(code("v1")),
        256,
        "first",
    )
    assert info.snapshot("1") == (sha(code("v1")), v1.config)
    assert info.snapshot(LATEST) == (sha(code("v2")), FunctionConfig(memory_mb=512))
    assert registry.blob_path(v1.code_sha256).exists()


def test_publish_without_changes_returns_the_newest_version(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"))
    v1 = registry.publish("hello")
    revision = registry.revision()
    assert registry.publish("hello", "again") == v1
    assert registry.revision() == revision
    registry.update_config("hello", {"memory_mb": 256})
    assert registry.publish("hello").version == 2


def test_version_numbers_are_never_reused(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"))
    registry.publish("hello")
    registry.deploy("hello", code("v2"))
    registry.publish("hello")
    registry.delete_version("hello", 2)
    assert registry.publish("hello").version == 3


def test_delete_version_conflicts_while_an_alias_points_at_it(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"))
    registry.publish("hello")
    registry.deploy("hello", code("v2"))
    registry.publish("hello")
    registry.set_alias("hello", "live", 1, {2: 0.1})
    for version in (1, 2):
        with pytest.raises(Conflict, match=f"version {version} of 'hello' is used by alias live"):
            registry.delete_version("hello", version)
    registry.set_alias("hello", "live", 2)
    registry.delete_version("hello", 1)
    assert [v.version for v in registry.get("hello").versions] == [2]
    with pytest.raises(NotFound, match="no version 1"):
        registry.delete_version("hello", 1)


# -- aliases ---------------------------------------------------------------------------------------


@pytest.fixture
def two_versions(registry: Registry, code: Code) -> Registry:
    registry.deploy("hello", code("v1"))
    registry.publish("hello")
    registry.deploy("hello", code("v2"))
    registry.publish("hello")
    return registry


@pytest.mark.parametrize(
    ("alias", "version", "extra", "error", "message"),
    [
        ("live", 3, None, NotFound, "no version 3"),
        ("live", 1, {3: 0.5}, NotFound, "no version 3"),
        ("live", 1, {2: 0.0}, Invalid, "must be > 0 and < 1"),
        ("live", 1, {2: 1.0}, Invalid, "must be > 0 and < 1"),
        ("live", 1, {2: True}, Invalid, "must be > 0 and < 1"),
        ("live", 1, {1: 0.5}, Invalid, "already the alias's version"),
        ("live", 1, {2: 0.1, 3: 0.1}, Invalid, "at most one additional version"),
        ("123", 1, None, Invalid, "not all digits"),
        ("$LATEST", 1, None, Invalid, "not an alias name"),
        ("a b", 1, None, Invalid, "not an alias name"),
        ("x" * 129, 1, None, Invalid, "not an alias name"),
    ],
)
def test_set_alias_rules(
    two_versions: Registry, alias: str, version: int, extra: dict | None, error: type, message: str
) -> None:
    before = two_versions.get("hello")
    with pytest.raises(error, match=message.replace("$", r"\$")):
        two_versions.set_alias("hello", alias, version, extra)
    assert two_versions.get("hello") == before


def test_moving_an_alias_is_roll_out_and_roll_back(two_versions: Registry) -> None:
    reg = two_versions
    reg.set_alias("hello", "live", 1)
    assert reg.resolve("hello:live").choices == (("1", 1.0),)
    reg.set_alias("hello", "live", 1, {2: 0.3})
    assert reg.resolve("hello:live").choices == (("1", pytest.approx(0.7)), ("2", 0.3))
    reg.set_alias("hello", "live", 2)
    assert reg.resolve("hello:live").choices == (("2", 1.0),)
    reg.set_alias("hello", "live", 1, description="rolled back")
    info = reg.get("hello").alias("live")
    assert (info.version, info.additional, info.description) == (1, (), "rolled back")


def test_delete_alias(two_versions: Registry) -> None:
    two_versions.set_alias("hello", "live", 1)
    two_versions.delete_alias("hello", "live")
    with pytest.raises(NotFound, match="no alias 'live'"):
        two_versions.delete_alias("hello", "live")
    with pytest.raises(NotFound):
        two_versions.resolve("hello:live")


# -- resolve ---------------------------------------------------------------------------------------


def test_resolve_each_kind_of_reference(two_versions: Registry) -> None:
    reg = two_versions
    reg.set_alias("hello", "beta", 2)
    assert reg.resolve("hello").choices == ((LATEST, 1.0),)
    assert reg.resolve("hello:$LATEST").qualifier == LATEST
    assert reg.resolve("hello:2").choices == (("2", 1.0),)
    assert reg.resolve("hello:beta").choices == (("2", 1.0),)
    for bad, error in [
        ("hello:9", NotFound),
        ("hello:gamma", NotFound),
        ("nope", NotFound),
        ("hello:", Invalid),
    ]:
        with pytest.raises(error):
            reg.resolve(bad)


# -- delete ----------------------------------------------------------------------------------------


def test_delete_removes_versions_aliases_and_urls(two_versions: Registry) -> None:
    reg = two_versions
    reg.set_alias("hello", "live", 1)
    urls = [reg.create_url("hello"), reg.create_url("hello", "live")]
    reg.delete("hello")
    with pytest.raises(NotFound):
        reg.get("hello")
    assert reg.urls() == []
    for u in urls:
        with pytest.raises(NotFound):
            reg.url(u.url_id)
    with pytest.raises(NotFound):
        reg.delete("hello")


# -- Function URLs ---------------------------------------------------------------------------------


def test_create_url(two_versions: Registry) -> None:
    reg = two_versions
    reg.set_alias("hello", "live", 1)
    plain = reg.create_url("hello")
    live = reg.create_url("hello", "live", Auth(type="sigv4", credentials_env="CREDS"), "RESPONSE_STREAM")
    for u in (plain, live):
        assert len(u.url_id) == 32 and set(u.url_id) <= set("abcdefghijklmnopqrstuvwxyz0123456789")
        assert reg.url(u.url_id) == u
    assert plain.url_id != live.url_id
    assert (live.qualifier, live.auth.type, live.invoke_mode) == ("live", "sigv4", "RESPONSE_STREAM")
    assert reg.urls("hello") == [plain, live] and reg.urls() == [plain, live]
    assert reg.public_url(plain.url_id) == f"http://{plain.url_id}.fn.test:8080/"


@pytest.mark.parametrize(
    ("qualifier", "kwargs", "error", "message"),
    [
        (None, {}, Conflict, "already has a Function URL"),
        (LATEST, {}, Conflict, "already has a Function URL"),
        ("1", {}, Invalid, "not at a version"),
        ("gamma", {}, NotFound, "no alias 'gamma'"),
        ("live", {"auth": Auth(type="jwt")}, Invalid, "none or sigv4"),
        ("live", {"auth": Auth(type="sigv4")}, Invalid, "credentials_env"),
        ("live", {"invoke_mode": "STREAMING"}, Invalid, "not BUFFERED or RESPONSE_STREAM"),
    ],
)
def test_create_url_rules(
    two_versions: Registry, qualifier: str | None, kwargs: dict, error: type, message: str
) -> None:
    reg = two_versions
    reg.set_alias("hello", "live", 1)
    reg.create_url("hello")
    with pytest.raises(error, match=message):
        reg.create_url("hello", qualifier, **kwargs)
    assert len(reg.urls()) == 1


def test_update_and_delete_url(two_versions: Registry) -> None:
    reg = two_versions
    made = reg.create_url("hello")
    cors = Cors(allow_origins=("*",))
    updated = reg.update_url("hello", invoke_mode="RESPONSE_STREAM", cors=cors)
    assert (updated.url_id, updated.invoke_mode, updated.cors, updated.auth) == (
        made.url_id, "RESPONSE_STREAM", cors, Auth()
    )  # fmt: skip
    revision = reg.revision()
    assert reg.update_url("hello", cors=cors) == updated
    assert reg.revision() == revision  # nothing changed, nothing written
    reg.delete_url("hello")
    with pytest.raises(NotFound, match="has no Function URL"):
        reg.delete_url("hello")
    with pytest.raises(NotFound, match="has no Function URL"):
        reg.update_url("hello", invoke_mode="BUFFERED")


def test_deleting_an_alias_deletes_its_url(two_versions: Registry) -> None:
    two_versions.set_alias("hello", "live", 1)
    u = two_versions.create_url("hello", "live")
    two_versions.delete_alias("hello", "live")
    with pytest.raises(NotFound):
        two_versions.url(u.url_id)


def test_url_lookup_of_a_malformed_id_is_not_found(registry: Registry) -> None:
    for bad in ("", "ABC", "x" * 33, "../../etc"):
        with pytest.raises(NotFound):
            registry.url(bad)


def test_public_url_leaves_out_port_80(tmp_path: Path) -> None:
    reg = Registry(SqliteStore(tmp_path), url_domain="fn.example", url_port=80)
    assert reg.public_url("a" * 32) == f"http://{'a' * 32}.fn.example/"
    reg.close()


# -- functions from edgefn.toml ----------------------------------------------------------------------


def config_function(path: Path, url: FunctionUrl | None = None) -> Function:
    return Function(name="greet", component=path, memory_mb=64, env=(("GREETING", "hi"),), url=url)


def test_config_functions_are_read_only_but_listed(tmp_path: Path, code: Code) -> None:
    reg = Registry(SqliteStore(tmp_path / "data"), {"greet": config_function(code("toml"))})
    info = reg.get("greet")
    assert (info.source, info.code_sha256, info.config.memory_mb) == ("config", sha(code("toml")), 64)
    reg.deploy("other", code("v1"))
    assert [f.name for f in reg.functions()] == ["greet", "other"]
    for action in (
        lambda: reg.deploy("greet", code("v1")),
        lambda: reg.configure("greet", FunctionConfig()),
        lambda: reg.update_config("greet", {}),
        lambda: reg.publish("greet"),
        lambda: reg.set_alias("greet", "live", 1),
        lambda: reg.delete("greet"),
    ):
        with pytest.raises(Conflict, match=r"defined in edgefn\.toml"):
            action()
    assert reg.resolve("greet").choices == ((LATEST, 1.0),)
    with pytest.raises(NotFound, match="has only"):
        reg.resolve("greet:1")
    u = reg.create_url("greet")
    assert reg.urls("greet") == [u]
    with pytest.raises(Invalid, match="no aliases"):
        reg.create_url("greet", "live")
    reg.close()


def test_deployed_lists_registry_functions_that_no_config_function_shadows(tmp_path: Path, code: Code) -> None:
    reg = Registry(SqliteStore(tmp_path / "data"))
    for name in ("zeta", "greet", "other"):
        reg.deploy(name, code(name))
    reg.close()
    reg = Registry(SqliteStore(tmp_path / "data"), {"greet": config_function(code("toml"))})
    assert [(f.name, f.source) for f in reg.deployed()] == [("other", "registry"), ("zeta", "registry")]
    assert [(f.name, f.source) for f in reg.functions()] == [
        ("greet", "config"),
        ("other", "registry"),
        ("zeta", "registry"),
    ]
    reg.close()


def test_config_function_url_is_made_once_and_kept_across_restarts(tmp_path: Path, code: Code) -> None:
    node = Node(data_dir=tmp_path / "data", listen="127.0.0.1:9000", url_domain="fn.test")
    functions = {"greet": config_function(code("toml"), FunctionUrl(invoke_mode="RESPONSE_STREAM"))}
    reg = open_registry(node, functions)
    [first] = reg.urls()
    reg.close()
    reg = open_registry(node, functions)
    assert reg.urls() == [first]
    reg.close()
    # The toml is the source of truth for the URL's settings; the url-id stays.
    functions = {"greet": config_function(code("toml"), FunctionUrl(auth=Auth("sigv4", credentials_env="C")))}
    reg = open_registry(node, functions)
    [again] = reg.urls()
    assert again.url_id == first.url_id and again.auth.type == "sigv4" and again.invoke_mode == "BUFFERED"
    assert reg.public_url(again.url_id) == f"http://{again.url_id}.fn.test:9000/"
    reg.close()


def test_open_registry_refuses_an_unknown_control_plane(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="control_plane 'etcd://x:2379' is not a redis:// URL"):
        open_registry(Node(data_dir=tmp_path, control_plane="etcd://x:2379"), {})


# -- secrets ---------------------------------------------------------------------------------------


def test_secrets_are_write_only_names(registry: Registry, code: Code) -> None:
    registry.set_secret("db-pass", "s3cr3t-value")
    registry.set_secret("api.key", "other")
    assert registry.secret_names() == ["api.key", "db-pass"]
    assert registry.secret_value("db-pass") == "s3cr3t-value"
    info = registry.deploy("hello", code("v1"), FunctionConfig(secrets=(("DB_PASSWORD", "db-pass"),)))
    assert "s3cr3t-value" not in repr(info.to_doc()) and "s3cr3t-value" not in repr(info)
    registry.set_secret("db-pass", "rotated")
    assert registry.secret_value("db-pass") == "rotated"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("bad name", "x", "not a secret name"), ("ok", 42, "is a string"), ("ok", "x" * 65537, "at most 65536")],
)
def test_set_secret_rules(registry: Registry, name: str, value: object, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        registry.set_secret(name, value)  # type: ignore[arg-type]
    assert registry.secret_names() == []


def test_a_configuration_may_only_name_existing_secrets(registry: Registry, code: Code) -> None:
    registry.deploy("hello", code("v1"))
    with pytest.raises(Invalid, match="secret 'db' does not exist"):
        registry.update_config("hello", {"secrets": {"DB": "db"}})


def test_delete_secret_conflicts_while_latest_or_a_version_reads_it(registry: Registry, code: Code) -> None:
    registry.set_secret("db", "x")
    registry.deploy("hello", code("v1"), FunctionConfig(secrets=(("DB", "db"),)))
    with pytest.raises(Conflict, match=r"used by hello:\$LATEST"):
        registry.delete_secret("db")
    registry.publish("hello")
    registry.configure("hello", FunctionConfig())
    with pytest.raises(Conflict, match="used by hello:1"):
        registry.delete_secret("db")
    registry.delete("hello")
    registry.delete_secret("db")
    assert registry.secret_names() == []
    with pytest.raises(NotFound, match="secret 'db' does not exist"):
        registry.delete_secret("db")
    with pytest.raises(NotFound):
        registry.secret_value("db")


# -- the store's compare-and-set ---------------------------------------------------------------------


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    assert store.write({"a": (0, {"n": 1}), "b": (0, {"n": 1})})
    assert store.revision() == 1
    # b's expected revision is stale: a must not change either
    assert not store.write({"a": (1, {"n": 2}), "b": (0, {"n": 2})})
    assert store.read("a") == (1, {"n": 1}) and store.read("b") == (1, {"n": 1})
    assert store.revision() == 1
    assert store.write({"a": (1, None)})
    assert store.read("a") == (2, None)  # a tombstone keeps counting
    assert not store.write({"a": (0, {"n": 3})})
    assert store.keys("") == ["b"]
    store.close()


def test_keys_prefix_is_literal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.write({"url/a_b": (0, {}), "url/axb": (0, {}), "url%/x": (0, {})})
    assert store.keys("url/a_") == ["url/a_b"]
    assert store.keys("url%") == ["url%/x"]
    store.close()


def test_blob_path_only_takes_a_sha256(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    with pytest.raises(ValueError, match="not a sha256"):
        store.blob_path("../../etc/passwd")
    store.close()


def test_every_write_moves_the_revision(registry: Registry, code: Code) -> None:
    seen = [registry.revision()]
    registry.deploy("hello", code("v1"))
    seen.append(registry.revision())
    registry.publish("hello")
    seen.append(registry.revision())
    registry.set_alias("hello", "live", 1)
    seen.append(registry.revision())
    registry.create_url("hello")
    seen.append(registry.revision())
    assert seen == sorted(set(seen))
