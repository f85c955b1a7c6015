"""The function registry: deployed code, configuration, versions, aliases, Function URLs, secrets.

Every rule of the control plane lives here, once; storage is the small `RegistryStore` protocol
(documents with a per-key revision and an all-or-nothing compare-and-set `write`), so the
embedded SQLite store and the fleet's Redis store stay dumb. A change is computed from the
documents it read and committed only if none of them moved meanwhile; otherwise it is computed
again from fresh reads (`Registry._commit`). That is how many processes share one registry
without locks held across a decision, and why a kill -9 leaves either the old or the new state.

    RegistryError        400 by default; message says what and why
    ├── Invalid          400 a value breaks a rule
    ├── NotFound         404 no such function, version, alias, URL or secret
    └── Conflict         409 the state forbids it (alias points at a version, defined in edgefn.toml)

Keys: `function/<name>` (config, $LATEST code, versions, aliases, next version number and the
function's URL ids), `url/<url_id>`, `secret/<name>`. Component bytes are blobs named by sha256,
stored before the document naming them is committed.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets as secrets_module
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from routes import values
from routes.config import AsyncInvoke, Auth, Cors, Function, InvokeMode, Node

LATEST = "$LATEST"
ENV_LIMIT_BYTES = 4096  # Lambda: all keys and values together
SECRET_LIMIT_BYTES = 65536
ALIAS_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
URL_ID = re.compile(r"[a-z0-9]{32}")
_URL_ALPHABET = string.ascii_lowercase + string.digits
_INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")
_CAS_DEADLINE_S = 30.0
DEFAULT_ASYNC = AsyncInvoke()
NO_AUTH = Auth()

Doc = dict[str, Any]
Changes = dict[str, tuple[int, Doc | None]]
T = TypeVar("T")


class RegistryError(Exception):
    status = 400
    code = "invalid"


class Invalid(RegistryError):
    status, code = 400, "invalid"


class NotFound(RegistryError):
    status, code = 404, "not_found"


class Conflict(RegistryError):
    status, code = 409, "conflict"


class RegistryStore(Protocol):
    """Documents with compare-and-set, and content-addressed blobs (see docs/functions.md)."""

    def read(self, key: str) -> tuple[int, Doc | None]: ...
    def write(self, changes: Changes) -> bool: ...
    def keys(self, prefix: str) -> list[str]: ...
    def revision(self) -> int: ...
    def put_blob(self, sha256: str, path: Path) -> None: ...
    def blob_path(self, sha256: str) -> Path: ...
    def close(self) -> None: ...


# -- records -------------------------------------------------------------------------------------


def _need(doc: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], what: str, where: str) -> Any:
    value = doc[key]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise Invalid(f"{where}{key}: expected {what}, got a boolean")
    if not isinstance(value, kinds):
        raise Invalid(f"{where}{key}: expected {what}, got {type(value).__name__} ({value!r:.60})")
    return value


def _string_map(doc: Mapping[str, Any], key: str, where: str) -> tuple[tuple[str, str], ...]:
    value = _need(doc, key, dict, "an object of strings", where)
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        raise Invalid(f"{where}{key}.{bad[0]}: expected a string")
    return tuple(sorted(value.items()))


def _string_list(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _need(doc, key, list, "an array of strings", where)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid(f"{where}{key}[{i}]: expected a string, got {type(item).__name__}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """What can be changed without new code; a version freezes it together with the code."""

    memory_mb: int = 128
    timeout_s: float = 10.0
    reserved_concurrency: int = 0
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[tuple[str, str], ...] = ()  # (ENV_NAME, secret name): the value is read at invoke time
    outbound: tuple[str, ...] = ()
    instance_reuse: int = 0
    async_: AsyncInvoke = DEFAULT_ASYNC
    schedule: tuple[str, ...] = ()

    def check(self) -> None:
        """Every rule of a configuration; the first one broken raises `Invalid`."""
        if not 16 <= self.memory_mb <= 10240:
            raise Invalid(f"memory_mb: {self.memory_mb} is out of range; use 16 to 10240")
        if not 0 < self.timeout_s <= 900:
            raise Invalid(f"timeout_s: {self.timeout_s} is out of range; use more than 0, at most 900")
        if not 0 <= self.reserved_concurrency <= 100_000:
            raise Invalid(f"reserved_concurrency: {self.reserved_concurrency} must be 0 (no limit) to 100000")
        if self.instance_reuse < 0:
            raise Invalid(f"instance_reuse: {self.instance_reuse} must be 0 or more")
        for key, _ in (*self.env, *self.secrets):
            if not values.ENV_NAME.fullmatch(key):
                raise Invalid(f"env: {key!r} is not an environment variable name (letters, digits, '_')")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in self.env)
        if size > ENV_LIMIT_BYTES:
            raise Invalid(f"env: {size} bytes of keys and values; the limit is {ENV_LIMIT_BYTES} (as Lambda)")
        both = {k for k, _ in self.env} & {k for k, _ in self.secrets}
        if both:
            raise Invalid(f"secrets: {sorted(both)[0]!r} is set both in env and from a secret")
        for _, name in self.secrets:
            if not SECRET_NAME.fullmatch(name):
                raise Invalid(f"secrets: {name!r} is not a secret name (letters, digits, '_', '.', '-')")
        for target in self.outbound:
            if not (values.ORIGIN_NAME.fullmatch(target) or values.host_port(target)):
                raise Invalid(f"outbound: {target!r} is neither an origin name nor host:port")
        a = self.async_
        if not 0 <= a.max_retries <= 10:
            raise Invalid(f"async.max_retries: {a.max_retries} must be 0 to 10")
        if any(not 0 <= d <= 21600 for d in a.retry_delays_s):
            raise Invalid("async.retry_delays_s: every delay must be 0 to 21600 seconds")
        if not 60 <= a.max_event_age_s <= 21600:
            raise Invalid(f"async.max_event_age_s: {a.max_event_age_s} must be 60 to 21600 seconds")
        for item in self.schedule:
            if problem := values.schedule(item):
                raise Invalid(f"schedule: {problem}")

    def to_doc(self) -> Doc:
        return {
            "memory_mb": self.memory_mb,
            "timeout_s": self.timeout_s,
            "reserved_concurrency": self.reserved_concurrency,
            "env": dict(self.env),
            "secrets": dict(self.secrets),
            "outbound": list(self.outbound),
            "instance_reuse": self.instance_reuse,
            "async": {
                "max_retries": self.async_.max_retries,
                "retry_delays_s": list(self.async_.retry_delays_s),
                "max_event_age_s": self.async_.max_event_age_s,
            },
            "schedule": list(self.schedule),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], base: FunctionConfig | None = None) -> FunctionConfig:
        """Keys absent from `doc` keep `base`'s values (Lambda's UpdateFunctionConfiguration)."""
        if not isinstance(doc, Mapping):
            raise Invalid(f"a configuration is a JSON object, not {type(doc).__name__}")
        known = {*cls().to_doc()}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise Invalid(f"{unknown[0]}: unknown configuration key (known: {', '.join(sorted(known))})")
        c = base or cls()
        changes: dict[str, Any] = {}
        number = (int, float)
        if "memory_mb" in doc:
            changes["memory_mb"] = _need(doc, "memory_mb", int, "an integer", "")
        if "timeout_s" in doc:
            changes["timeout_s"] = float(_need(doc, "timeout_s", number, "a number", ""))
        if "reserved_concurrency" in doc:
            changes["reserved_concurrency"] = _need(doc, "reserved_concurrency", int, "an integer", "")
        if "instance_reuse" in doc:
            changes["instance_reuse"] = _need(doc, "instance_reuse", int, "an integer", "")
        if "env" in doc:
            changes["env"] = _string_map(doc, "env", "")
        if "secrets" in doc:
            changes["secrets"] = _string_map(doc, "secrets", "")
        if "outbound" in doc:
            changes["outbound"] = _string_list(doc, "outbound", "")
        if "schedule" in doc:
            changes["schedule"] = _string_list(doc, "schedule", "")
        if "async" in doc:
            a = _need(doc, "async", dict, "an object", "")
            extra = sorted(set(a) - {"max_retries", "retry_delays_s", "max_event_age_s"})
            if extra:
                raise Invalid(f"async.{extra[0]}: unknown key")
            cur = c.async_
            delays = cur.retry_delays_s
            if "retry_delays_s" in a:
                raw = _need(a, "retry_delays_s", list, "an array of numbers", "async.")
                if any(isinstance(d, bool) or not isinstance(d, number) for d in raw):
                    raise Invalid("async.retry_delays_s: expected an array of numbers")
                delays = tuple(float(d) for d in raw)
            changes["async_"] = AsyncInvoke(
                max_retries=_need(a, "max_retries", int, "an integer", "async.")
                if "max_retries" in a
                else cur.max_retries,
                retry_delays_s=delays,
                max_event_age_s=float(_need(a, "max_event_age_s", number, "a number", "async."))
                if "max_event_age_s" in a
                else cur.max_event_age_s,
            )
        config = replace(c, **changes)
        config.check()
        return config

    @classmethod
    def from_function(cls, function: Function) -> FunctionConfig:
        """The registry's view of an `edgefn.toml` function."""
        return cls(
            memory_mb=function.memory_mb,
            timeout_s=function.timeout_s,
            reserved_concurrency=function.reserved_concurrency,
            env=function.env,
            outbound=function.outbound,
            instance_reuse=function.instance_reuse,
            async_=function.async_,
            schedule=function.schedule,
        )


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    code_sha256: str
    config: FunctionConfig
    description: str
    created: float

    def to_doc(self) -> Doc:
        return {
            "version": self.version,
            "code_sha256": self.code_sha256,
            "config": self.config.to_doc(),
            "description": self.description,
            "created": self.created,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> VersionInfo:
        return cls(
            doc["version"], doc["code_sha256"], FunctionConfig.from_doc(doc["config"]), doc["description"],
            doc["created"],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AliasInfo:
    name: str
    version: int
    additional: tuple[tuple[int, float], ...] = ()  # Lambda's AdditionalVersionWeights
    description: str = ""

    def to_doc(self) -> Doc:
        return {
            "name": self.name,
            "version": self.version,
            "additional_version_weights": {str(v): w for v, w in self.additional},
            "description": self.description,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> AliasInfo:
        extra = tuple((int(v), float(w)) for v, w in doc["additional_version_weights"].items())
        return cls(doc["name"], doc["version"], extra, doc["description"])

    def versions(self) -> set[int]:
        return {self.version, *(v for v, _ in self.additional)}


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    name: str
    code_sha256: str
    code_size: int
    config: FunctionConfig
    last_modified: float
    versions: tuple[VersionInfo, ...] = ()
    aliases: tuple[AliasInfo, ...] = ()
    source: Literal["registry", "config"] = "registry"

    def to_doc(self) -> Doc:
        return {
            "name": self.name,
            "code_sha256": self.code_sha256,
            "code_size": self.code_size,
            "config": self.config.to_doc(),
            "last_modified": self.last_modified,
            "versions": [v.to_doc() for v in self.versions],
            "aliases": [a.to_doc() for a in self.aliases],
            "source": self.source,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> FunctionInfo:
        return cls(
            name=doc["name"],
            code_sha256=doc["code_sha256"],
            code_size=doc["code_size"],
            config=FunctionConfig.from_doc(doc["config"]),
            last_modified=doc["last_modified"],
            versions=tuple(VersionInfo.from_doc(v) for v in doc["versions"]),
            aliases=tuple(AliasInfo.from_doc(a) for a in doc["aliases"]),
            source=doc["source"],
        )

    def version(self, number: int) -> VersionInfo:
        for v in self.versions:
            if v.version == number:
                return v
        raise NotFound(f"function {self.name!r} has no version {number}")

    def alias(self, name: str) -> AliasInfo:
        for a in self.aliases:
            if a.name == name:
                return a
        raise NotFound(f"function {self.name!r} has no alias {name!r}")

    def snapshot(self, label: str) -> tuple[str, FunctionConfig]:
        """Code sha256 and configuration behind a version label ("$LATEST", "3") that `resolve` chose."""
        if label == LATEST:
            return self.code_sha256, self.config
        v = self.version(int(label))
        return v.code_sha256, v.config


@dataclass(frozen=True, slots=True)
class UrlInfo:
    url_id: str
    function: str
    qualifier: str | None = None
    auth: Auth = NO_AUTH
    invoke_mode: InvokeMode = "BUFFERED"
    cors: Cors | None = None
    created: float = 0.0

    def to_doc(self) -> Doc:
        auth: Doc = {"type": self.auth.type}
        if self.auth.type == "sigv4":
            auth |= {
                "credentials_env": self.auth.credentials_env,
                "service": self.auth.service,
                "region": self.auth.region,
            }
        return {
            "url_id": self.url_id,
            "function": self.function,
            "qualifier": self.qualifier,
            "auth": auth,
            "invoke_mode": self.invoke_mode,
            "cors": None if self.cors is None else _cors_doc(self.cors),
            "created": self.created,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> UrlInfo:
        a = doc["auth"]
        auth = Auth() if a["type"] == "none" else Auth(
            type="sigv4", credentials_env=a["credentials_env"], service=a["service"], region=a["region"]
        )  # fmt: skip
        c = doc["cors"]
        cors = None if c is None else _cors_from_doc(c)
        return cls(
            doc["url_id"], doc["function"], doc["qualifier"], auth, doc["invoke_mode"], cors, doc["created"]
        )


def _cors_from_doc(doc: Mapping[str, Any]) -> Cors:
    return Cors(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()})


def _cors_doc(cors: Cors) -> Doc:
    return {
        "allow_origins": list(cors.allow_origins),
        "allow_methods": list(cors.allow_methods),
        "allow_headers": list(cors.allow_headers),
        "expose_headers": list(cors.expose_headers),
        "max_age": cors.max_age,
        "allow_credentials": cors.allow_credentials,
    }


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a reference names: the version labels that may serve it, with their weights (sum 1)."""

    name: str
    qualifier: str | None
    choices: tuple[tuple[str, float], ...]

    def pick(self, rand: float) -> str:
        """The label for a uniform draw `rand` in [0, 1): each label gets a share equal to its weight."""
        total = 0.0
        for label, weight in self.choices:
            total += weight
            if rand < total:
                return label
        return self.choices[-1][0]


# -- the registry --------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not values.FUNCTION_NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a function name (1-64 letters, digits, '-', '_')")


def _check_alias_name(alias: str) -> None:
    if not isinstance(alias, str) or not ALIAS_NAME.fullmatch(alias) or alias.isdigit():
        raise Invalid(
            f"{alias!r} is not an alias name (1-128 letters, digits, '-', '_', not all digits, not $LATEST)"
        )


def _check_secret_name(name: str) -> None:
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a secret name (1-128 letters, digits, '_', '.', '-')")


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


_UNSET: Any = object()


class Registry:
    """The rules of the control plane over a `RegistryStore`; sync and thread-safe.

    Functions from `edgefn.toml` (`config_functions`) are read-only here, except for their URLs.
    """

    def __init__(
        self,
        store: RegistryStore,
        config_functions: Mapping[str, Function] | None = None,
        *,
        url_domain: str = "fn.localhost",
        url_port: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config_functions = dict(config_functions or {})
        self.url_domain = url_domain
        self.url_port = url_port
        self.clock = clock
        self._config_code: dict[str, tuple[str, int]] = {}

    def close(self) -> None:
        self.store.close()

    def revision(self) -> int:
        return self.store.revision()

    def blob_path(self, sha256: str) -> Path:
        return self.store.blob_path(sha256)

    def public_url(self, url_id: str) -> str:
        port = f":{self.url_port}" if self.url_port not in (None, 80) else ""
        return f"http://{url_id}.{self.url_domain}{port}/"

    # -- compare-and-set ---------------------------------------------------------------------------

    def _commit(self, decide: Callable[[], tuple[Changes, T]]) -> T:
        """Run `decide` (reads, then the changes and a result) until its write applies unopposed."""
        deadline = time.monotonic() + _CAS_DEADLINE_S
        attempt = 0
        while True:
            changes, result = decide()
            if not changes or self.store.write(changes):
                return result
            attempt += 1
            if time.monotonic() > deadline:
                raise Conflict("the registry is changing too fast to apply this change; try again")
            time.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))

    def _function_doc(self, name: str) -> tuple[int, Doc]:
        """A deployed function's document for a change; config functions are refused."""
        _check_name(name)
        if name in self.config_functions:
            raise Conflict(f"function {name!r} is defined in edgefn.toml; change it there")
        rev, doc = self.store.read(f"function/{name}")
        if doc is None or doc.get("source") != "registry":
            raise NotFound(f"function {name!r} does not exist")
        return rev, doc

    # -- functions ------------------------------------------------------------------------------

    def check_deployable(self, name: str) -> None:
        """Raise now what `deploy` would, before a caller spends time on an upload or a compile."""
        _check_name(name)
        if name in self.config_functions:
            raise Conflict(f"function {name!r} is defined in edgefn.toml; change it there")

    def deploy(self, name: str, wasm_path: Path, config: FunctionConfig | None = None) -> FunctionInfo:
        """Set $LATEST's code (and configuration, if given). The caller has validated the component."""
        self.check_deployable(name)
        if config is not None:
            config.check()
        sha, size = file_sha256(Path(wasm_path))
        self.store.put_blob(sha, Path(wasm_path))  # durable before any document names it

        def decide() -> tuple[Changes, FunctionInfo]:
            key = f"function/{name}"
            rev, doc = self.store.read(key)
            changes: Changes = {}
            now = self.clock()
            if doc is None or doc.get("source") != "registry":
                urls = doc.get("urls", {}) if doc is not None else {}
                doc = {
                    **FunctionInfo(name, sha, size, config or FunctionConfig(), now).to_doc(),
                    "next_version": 1,
                    "urls": urls,
                }
            else:
                doc = {**doc, "code_sha256": sha, "code_size": size, "last_modified": now}
            if config is not None:
                doc["config"] = config.to_doc()
                changes |= self._touch_secrets(config)
            changes[key] = (rev, doc)
            return changes, FunctionInfo.from_doc(doc)

        return self._commit(decide)

    def configure(self, name: str, config: FunctionConfig) -> FunctionInfo:
        config.check()

        def decide() -> tuple[Changes, FunctionInfo]:
            rev, doc = self._function_doc(name)
            doc = {**doc, "config": config.to_doc(), "last_modified": self.clock()}
            return {f"function/{name}": (rev, doc), **self._touch_secrets(config)}, FunctionInfo.from_doc(doc)

        return self._commit(decide)

    def update_config(self, name: str, changes: Mapping[str, Any]) -> FunctionInfo:
        """Change only the keys given (JSON names, as `FunctionConfig.to_doc`); the rest stay."""

        def decide() -> tuple[Changes, FunctionInfo]:
            rev, doc = self._function_doc(name)
            config = FunctionConfig.from_doc(changes, base=FunctionConfig.from_doc(doc["config"]))
            doc = {**doc, "config": config.to_doc(), "last_modified": self.clock()}
            return {f"function/{name}": (rev, doc), **self._touch_secrets(config)}, FunctionInfo.from_doc(doc)

        return self._commit(decide)

    def _touch_secrets(self, config: FunctionConfig) -> Changes:
        """Referenced secrets must exist; rewriting them unchanged makes a concurrent delete retry."""
        changes: Changes = {}
        for _, secret in config.secrets:
            rev, doc = self.store.read(f"secret/{secret}")
            if doc is None:
                raise Invalid(f"secrets: secret {secret!r} does not exist; PUT /secrets/{secret} first")
            changes[f"secret/{secret}"] = (rev, doc)
        return changes

    def get(self, name: str) -> FunctionInfo:
        _check_name(name)
        function = self.config_functions.get(name)
        if function is not None:
            return self._config_info(function)
        _, doc = self.store.read(f"function/{name}")
        if doc is None or doc.get("source") != "registry":
            raise NotFound(f"function {name!r} does not exist")
        return FunctionInfo.from_doc(doc)

    def _config_info(self, function: Function) -> FunctionInfo:
        path = function.component
        try:
            stat = path.stat()
            key = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
            if key not in self._config_code:
                self._config_code[key] = file_sha256(path)
            sha, size = self._config_code[key]
            modified = stat.st_mtime
        except OSError:
            sha, size, modified = "", 0, 0.0
        return FunctionInfo(
            function.name, sha, size, FunctionConfig.from_function(function), modified, source="config"
        )

    def functions(self) -> list[FunctionInfo]:
        out = {name: self._config_info(f) for name, f in self.config_functions.items()}
        for key in self.store.keys("function/"):
            name = key.removeprefix("function/")
            if name in out:
                continue
            _, doc = self.store.read(key)
            if doc is not None and doc.get("source") == "registry":
                out[name] = FunctionInfo.from_doc(doc)
        return [out[name] for name in sorted(out)]

    def delete(self, name: str) -> None:
        """Delete a function with its versions, aliases and URLs."""

        def decide() -> tuple[Changes, None]:
            rev, doc = self._function_doc(name)
            changes: Changes = {f"function/{name}": (rev, None)}
            for url_id in doc["urls"].values():
                changes[f"url/{url_id}"] = (self.store.read(f"url/{url_id}")[0], None)
            return changes, None

        self._commit(decide)

    # -- versions and aliases -----------------------------------------------------------------

    def publish(self, name: str, description: str = "") -> VersionInfo:
        """Freeze $LATEST's code and configuration as the next version (the newest if unchanged)."""
        if not isinstance(description, str) or len(description) > 256:
            raise Invalid("description: a string of at most 256 characters")

        def decide() -> tuple[Changes, VersionInfo]:
            rev, doc = self._function_doc(name)
            info = FunctionInfo.from_doc(doc)
            if info.versions:
                newest = max(info.versions, key=lambda v: v.version)
                if newest.code_sha256 == info.code_sha256 and newest.config == info.config:
                    return {}, newest
            number = doc["next_version"]
            version = VersionInfo(number, info.code_sha256, info.config, description, self.clock())
            doc = {**doc, "versions": [*doc["versions"], version.to_doc()], "next_version": number + 1}
            return {f"function/{name}": (rev, doc)}, version

        return self._commit(decide)

    def delete_version(self, name: str, version: int) -> None:
        def decide() -> tuple[Changes, None]:
            rev, doc = self._function_doc(name)
            info = FunctionInfo.from_doc(doc)
            info.version(version)
            users = sorted(a.name for a in info.aliases if version in a.versions())
            if users:
                raise Conflict(
                    f"version {version} of {name!r} is used by alias {', '.join(users)}; move the alias first"
                )
            doc = {**doc, "versions": [v for v in doc["versions"] if v["version"] != version]}
            return {f"function/{name}": (rev, doc)}, None

        self._commit(decide)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        additional: Mapping[int, float] | None = None,
        description: str = "",
    ) -> AliasInfo:
        """Create or move an alias; `additional` routes a share of requests to one other version."""
        _check_alias_name(alias)
        extra = dict(additional or {})
        if len(extra) > 1:
            raise Invalid("additional_version_weights: at most one additional version (as Lambda)")
        for v, w in extra.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < 1:
                raise Invalid(f"additional_version_weights: the weight of version {v} must be > 0 and < 1")
            if v == version:
                raise Invalid(f"additional_version_weights: version {v} is already the alias's version")
        if not isinstance(description, str) or len(description) > 256:
            raise Invalid("description: a string of at most 256 characters")
        info_alias = AliasInfo(alias, version, tuple((v, float(w)) for v, w in extra.items()), description)

        def decide() -> tuple[Changes, AliasInfo]:
            rev, doc = self._function_doc(name)
            info = FunctionInfo.from_doc(doc)
            for v in info_alias.versions():
                info.version(v)
            aliases = [a for a in doc["aliases"] if a["name"] != alias] + [info_alias.to_doc()]
            doc = {**doc, "aliases": sorted(aliases, key=lambda a: a["name"])}
            return {f"function/{name}": (rev, doc)}, info_alias

        return self._commit(decide)

    def delete_alias(self, name: str, alias: str) -> None:
        """Delete an alias and the Function URL that points at it, if any."""

        def decide() -> tuple[Changes, None]:
            rev, doc = self._function_doc(name)
            FunctionInfo.from_doc(doc).alias(alias)
            doc = {**doc, "aliases": [a for a in doc["aliases"] if a["name"] != alias]}
            changes: Changes = {}
            url_id = doc["urls"].get(alias)
            if url_id is not None:
                doc["urls"] = {q: u for q, u in doc["urls"].items() if q != alias}
                changes[f"url/{url_id}"] = (self.store.read(f"url/{url_id}")[0], None)
            changes[f"function/{name}"] = (rev, doc)
            return changes, None

        self._commit(decide)

    def resolve(self, reference: str) -> Resolved:
        """`NAME`, `NAME:$LATEST`, `NAME:3` or `NAME:ALIAS` -> the version labels that may serve it."""
        name, sep, qualifier = reference.partition(":")
        if sep and not qualifier:
            raise Invalid(f"{reference!r}: empty qualifier after ':'")
        info = self.get(name)
        if not sep or qualifier == LATEST:
            return Resolved(name, qualifier or None, ((LATEST, 1.0),))
        if info.source == "config":
            raise NotFound(f"{reference!r}: function {name!r} from edgefn.toml has only $LATEST")
        if qualifier.isdigit():
            info.version(int(qualifier))
            return Resolved(name, qualifier, ((qualifier, 1.0),))
        alias = info.alias(qualifier)
        rest = 1.0 - sum(w for _, w in alias.additional)
        choices = ((str(alias.version), rest), *((str(v), w) for v, w in alias.additional))
        return Resolved(name, qualifier, choices)

    # -- Function URLs ----------------------------------------------------------------------------

    def _url_owner(self, name: str, qualifier: str | None) -> tuple[str, int, Doc | None, str]:
        """(key, revision, doc, qualifier key) of the document holding the function's URL ids."""
        _check_name(name)
        if qualifier == LATEST:
            qualifier = None
        key = f"function/{name}"
        rev, doc = self.store.read(key)
        if name in self.config_functions:
            if qualifier is not None:
                raise Invalid(f"function {name!r} from edgefn.toml has no aliases; its URL has no qualifier")
            return key, rev, doc, ""
        if doc is None or doc.get("source") != "registry":
            raise NotFound(f"function {name!r} does not exist")
        if qualifier is not None:
            if qualifier.isdigit():
                raise Invalid("a Function URL points at $LATEST or an alias, not at a version (as Lambda)")
            FunctionInfo.from_doc(doc).alias(qualifier)
        return key, rev, doc, qualifier or ""

    def create_url(
        self,
        name: str,
        qualifier: str | None = None,
        auth: Auth = NO_AUTH,
        invoke_mode: InvokeMode = "BUFFERED",
        cors: Cors | None = None,
    ) -> UrlInfo:
        _check_url_settings(auth, invoke_mode)

        def decide() -> tuple[Changes, UrlInfo]:
            key, rev, doc, q = self._url_owner(name, qualifier)
            urls = (doc or {}).get("urls", {})
            if q in urls:
                where = f"{name}:{q}" if q else name
                raise Conflict(f"{where} already has a Function URL ({self.public_url(urls[q])})")
            url_id = "".join(secrets_module.choice(_URL_ALPHABET) for _ in range(32))
            info = UrlInfo(url_id, name, q or None, auth, invoke_mode, cors, self.clock())
            owner = {**(doc or {"name": name, "source": "config"}), "urls": {**urls, q: url_id}}
            url_key = f"url/{url_id}"
            return {key: (rev, owner), url_key: (self.store.read(url_key)[0], info.to_doc())}, info

        return self._commit(decide)

    def url(self, url_id: str) -> UrlInfo:
        if not isinstance(url_id, str) or not URL_ID.fullmatch(url_id):
            raise NotFound(f"{url_id!r} is not a Function URL id")
        _, doc = self.store.read(f"url/{url_id}")
        if doc is None:
            raise NotFound(f"no Function URL {url_id!r}")
        return UrlInfo.from_doc(doc)

    def urls(self, name: str | None = None) -> list[UrlInfo]:
        if name is not None:
            self.get(name)
        out = []
        for key in self.store.keys("url/"):
            _, doc = self.store.read(key)
            if doc is not None and (name is None or doc["function"] == name):
                out.append(UrlInfo.from_doc(doc))
        return sorted(out, key=lambda u: (u.function, u.qualifier or "", u.url_id))

    def update_url(
        self,
        name: str,
        qualifier: str | None = None,
        *,
        auth: Auth | None = None,
        invoke_mode: InvokeMode | None = None,
        cors: Cors | None = _UNSET,
    ) -> UrlInfo:
        def decide() -> tuple[Changes, UrlInfo]:
            _, _, doc, q = self._url_owner(name, qualifier)
            url_id = (doc or {}).get("urls", {}).get(q)
            if url_id is None:
                raise NotFound(f"{name}{':' + q if q else ''} has no Function URL")
            rev, url_doc = self.store.read(f"url/{url_id}")
            if url_doc is None:
                raise NotFound(f"no Function URL {url_id!r}")
            old = UrlInfo.from_doc(url_doc)
            info = replace(
                old,
                auth=old.auth if auth is None else auth,
                invoke_mode=old.invoke_mode if invoke_mode is None else invoke_mode,
                cors=old.cors if cors is _UNSET else cors,
            )
            _check_url_settings(info.auth, info.invoke_mode)
            return ({f"url/{url_id}": (rev, info.to_doc())} if info != old else {}), info

        return self._commit(decide)

    def delete_url(self, name: str, qualifier: str | None = None) -> None:
        def decide() -> tuple[Changes, None]:
            key, rev, doc, q = self._url_owner(name, qualifier)
            urls = (doc or {}).get("urls", {})
            if q not in urls:
                raise NotFound(f"{name}{':' + q if q else ''} has no Function URL")
            url_key = f"url/{urls[q]}"
            owner = {**doc, "urls": {k: v for k, v in urls.items() if k != q}}  # type: ignore[dict-item]
            return {key: (rev, owner), url_key: (self.store.read(url_key)[0], None)}, None

        self._commit(decide)

    def ensure_config_urls(self) -> None:
        """Give every edgefn.toml function with a `url` table its URL, keeping an existing url-id."""
        for name, function in sorted(self.config_functions.items()):
            if function.url is None:
                continue
            u = function.url
            try:
                self.update_url(name, auth=u.auth, invoke_mode=u.invoke_mode, cors=u.cors)
            except NotFound:
                try:
                    self.create_url(name, auth=u.auth, invoke_mode=u.invoke_mode, cors=u.cors)
                except Conflict:  # another worker of this node made it first
                    self.update_url(name, auth=u.auth, invoke_mode=u.invoke_mode, cors=u.cors)

    # -- secrets ---------------------------------------------------------------------------------

    def set_secret(self, name: str, value: str) -> None:
        _check_secret_name(name)
        if not isinstance(value, str):
            raise Invalid("a secret value is a string")
        if len(value.encode()) > SECRET_LIMIT_BYTES:
            raise Invalid(f"a secret value is at most {SECRET_LIMIT_BYTES} bytes")

        def decide() -> tuple[Changes, None]:
            rev, _ = self.store.read(f"secret/{name}")
            return {f"secret/{name}": (rev, {"value": value})}, None

        self._commit(decide)

    def secret_names(self) -> list[str]:
        return sorted(
            k.removeprefix("secret/") for k in self.store.keys("secret/") if self.store.read(k)[1] is not None
        )

    def secret_value(self, name: str) -> str:
        """For the function service only: never returned by the admin API nor logged."""
        _check_secret_name(name)
        _, doc = self.store.read(f"secret/{name}")
        if doc is None:
            raise NotFound(f"secret {name!r} does not exist")
        return str(doc["value"])

    def delete_secret(self, name: str) -> None:
        """Refused while $LATEST or a version of a function reads it."""
        _check_secret_name(name)

        def decide() -> tuple[Changes, None]:
            rev, doc = self.store.read(f"secret/{name}")
            if doc is None:
                raise NotFound(f"secret {name!r} does not exist")
            users = []
            for info in self.functions():
                configs = [(LATEST, info.config), *((str(v.version), v.config) for v in info.versions)]
                users += [f"{info.name}:{label}" for label, c in configs if name in dict(c.secrets).values()]
            if users:
                raise Conflict(f"secret {name!r} is used by {', '.join(users[:5])}; change those first")
            return {f"secret/{name}": (rev, None)}, None

        self._commit(decide)


def _check_url_settings(auth: Auth, invoke_mode: str) -> None:
    if auth.type not in ("none", "sigv4"):
        raise Invalid(f"auth: a Function URL's auth type is none or sigv4, not {auth.type!r} (as Lambda)")
    if auth.type == "sigv4" and not auth.credentials_env:
        raise Invalid("auth.credentials_env: sigv4 needs the environment variable holding the credentials")
    if invoke_mode not in _INVOKE_MODES:
        raise Invalid(f"invoke_mode: {invoke_mode!r} is not BUFFERED or RESPONSE_STREAM")


def _port(listen: str) -> int | None:
    port = listen.rpartition(":")[2]
    return int(port) if port.isdigit() and int(port) else None


def open_registry(node: Node, config_functions: Mapping[str, Function]) -> Registry:
    """The node's registry, with URLs made for edgefn.toml functions that ask for one."""
    from edge.sync import ControlPlane
    from edge.sync_registry import RedisRegistryStore
    from gateway.functions.registry_sqlite import SqliteStore

    store: RegistryStore
    if node.control_plane == "sqlite":
        store = SqliteStore(Path(node.data_dir))
    else:  # a fleet: documents and blobs in Redis (edge/sync_registry.py)
        store = RedisRegistryStore(ControlPlane.parse(node.control_plane), Path(node.data_dir))
    registry = Registry(store, config_functions, url_domain=node.url_domain, url_port=_port(node.listen))
    try:
        registry.ensure_config_urls()
    except BaseException:
        registry.close()
        raise
    return registry


__all__ = [
    "LATEST",
    "AliasInfo",
    "Conflict",
    "FunctionConfig",
    "FunctionInfo",
    "Invalid",
    "NotFound",
    "Registry",
    "RegistryError",
    "RegistryStore",
    "Resolved",
    "UrlInfo",
    "VersionInfo",
    "open_registry",
]
