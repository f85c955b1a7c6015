"""The registry's records and errors, and the storage protocol under it.

Records are frozen dataclasses with a JSON form (`to_doc`/`from_doc`): the same form is stored and
answered by the admin API, so a stored document and an answer never drift apart. `FunctionConfig`
checks its own rules (`check`), once for every way a configuration arrives.

    RegistryError        400 by default; message says what and why
    ├── Invalid          400 a value breaks a rule
    ├── NotFound         404 no such function, version, alias, URL or secret
    └── Conflict         409 the state forbids it (alias points at a version, defined in edgefn.toml)
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from routes import values
from routes.config import AsyncInvoke, Auth, Cors, Function, InvokeMode

LATEST = "$LATEST"
ENV_LIMIT_BYTES = 4096  # Lambda: all keys and values together
SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
DEFAULT_ASYNC = AsyncInvoke()
NO_AUTH = Auth()

Doc = dict[str, Any]
Changes = dict[str, tuple[int, Doc | None]]


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
    """Documents with compare-and-set, and content-addressed blobs (see docs/functions.md).

    `write(changes, blobs)` applies only if every blob in `blobs` exists, checked atomically with
    the revisions; `delete_blob(sha, rev)` deletes a blob atomically with moving its record
    `blob/<sha>` from revision `rev` (and refuses if the record moved). `local_files` lists this
    node's files a sweep may remove (copies, temporaries); `lease` / `release` let one process at a
    time do a shared chore.
    """

    def read(self, key: str) -> tuple[int, Doc | None]: ...
    def write(self, changes: Changes, blobs: Collection[str] = ()) -> bool: ...
    def keys(self, prefix: str) -> list[str]: ...
    def revision(self) -> int: ...
    def put_blob(self, sha256: str, path: Path) -> None: ...
    def blob_path(self, sha256: str) -> Path: ...
    def blob_ids(self) -> list[str]: ...
    def delete_blob(self, sha256: str, expected: int) -> bool: ...
    def local_files(self) -> list[Path]: ...
    def lease(self, name: str, holder: str, ttl_s: float) -> bool: ...
    def release(self, name: str, holder: str) -> None: ...
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
    provisioned: int = 0  # instances made ahead of demand; needs instance_reuse > 0
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
        if not 0 <= self.provisioned <= 1000:
            raise Invalid(f"provisioned: {self.provisioned} must be 0 to 1000")
        if self.provisioned and not self.instance_reuse:
            raise Invalid("provisioned: needs instance_reuse of 1 or more")
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
            "provisioned": self.provisioned,
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
        if "provisioned" in doc:
            changes["provisioned"] = _need(doc, "provisioned", int, "an integer", "")
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
    def stored(cls, doc: Mapping[str, Any]) -> FunctionConfig:
        """A configuration the registry wrote itself (checked then): built without the checks, which
        would cost more than the rest of a read for a function with many versions."""
        a = doc["async"]
        return cls(
            memory_mb=doc["memory_mb"],
            timeout_s=doc["timeout_s"],
            reserved_concurrency=doc["reserved_concurrency"],
            env=tuple(sorted(doc["env"].items())),
            secrets=tuple(sorted(doc["secrets"].items())),
            outbound=tuple(doc["outbound"]),
            instance_reuse=doc["instance_reuse"],
            provisioned=doc.get("provisioned", 0),  # stored before the key existed: none
            async_=AsyncInvoke(a["max_retries"], tuple(a["retry_delays_s"]), a["max_event_age_s"]),
            schedule=tuple(doc["schedule"]),
        )

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
            provisioned=function.provisioned,
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
            doc["version"], doc["code_sha256"], FunctionConfig.stored(doc["config"]), doc["description"],
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
            config=FunctionConfig.stored(doc["config"]),
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
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
    return Cors(**fields)


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
