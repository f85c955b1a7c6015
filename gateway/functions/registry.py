"""The function registry: deployed code, configuration, versions, aliases, Function URLs, secrets.

Every rule of the control plane lives here, once; storage is the small `RegistryStore` protocol
(documents with a per-key revision and an all-or-nothing compare-and-set `write`), so the
embedded SQLite store and the fleet's Redis store stay dumb. A change is computed from the
documents it read and committed only if none of them moved meanwhile; otherwise it is computed
again from fresh reads (`Registry._commit`). That is how many processes share one registry
without locks held across a decision, and why a kill -9 leaves either the old or the new state.
The records, errors and the store protocol are in `registry_records` and re-exported here.

Keys: `function/<name>` (config, $LATEST code, versions, aliases, next version number and the
function's URL ids), `url/<url_id>`, `secret/<name>`, `blob/<sha256>` (a blob's record, rewritten
by every deploy naming it: the revision a sweep must find unmoved to delete the blob). Component
bytes are blobs named by sha256, stored before the document naming them is committed; blobs that
no document names are deleted by `registry_sweep`.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets as secrets_module
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from gateway.functions.registry_records import (
    LATEST,
    NO_AUTH,
    SECRET_NAME,
    AliasInfo,
    Changes,
    Conflict,
    Doc,
    FunctionConfig,
    FunctionInfo,
    Invalid,
    NotFound,
    RegistryError,
    RegistryStore,
    Resolved,
    UrlInfo,
    VersionInfo,
)
from routes import values
from routes.config import Auth, Cors, Function, InvokeMode, Node

SECRET_LIMIT_BYTES = 65536
ALIAS_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
URL_ID = re.compile(r"[a-z0-9]{32}")
_URL_ALPHABET = string.ascii_lowercase + string.digits
_INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")
_CAS_DEADLINE_S = 30.0
T = TypeVar("T")

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

    def _commit(self, decide: Callable[[], tuple[Changes, T]], blobs: tuple[str, ...] = ()) -> T:
        """Run `decide` (reads, then the changes and a result) until its write applies unopposed
        (and, with `blobs`, finds those blobs stored)."""
        deadline = time.monotonic() + _CAS_DEADLINE_S
        attempt = 0
        while True:
            changes, result = decide()
            if not changes or self.store.write(changes, blobs):
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

    def check_deployable(self, name: str, config: FunctionConfig | Mapping[str, Any] | None = None) -> None:
        """Raise now what `deploy` would, before a caller spends time on an upload or a compile."""
        _check_name(name)
        if name in self.config_functions:
            raise Conflict(f"function {name!r} is defined in edgefn.toml; change it there")
        if config is None:
            return
        if isinstance(config, FunctionConfig):
            given = config
        else:  # keys not given keep the stored values, as the write will
            _, doc = self.store.read(f"function/{name}")
            stored = doc["config"] if doc is not None and doc.get("source") == "registry" else None
            given = FunctionConfig.from_doc(config, base=FunctionConfig.stored(stored) if stored else None)
        given.check()
        self._touch_secrets(given)

    def deploy(
        self, name: str, wasm_path: Path, config: FunctionConfig | Mapping[str, Any] | None = None
    ) -> FunctionInfo:
        """Set $LATEST's code, and its configuration in the same write when one is given.

        A mapping changes only the keys it names (as `update_config`), so code and settings that
        arrive together land together or not at all. The caller has validated the component.
        The blob's record is rewritten in the same change: a sweep that decided to delete the
        blob before this commits finds the record moved and keeps it (docs/functions.md).
        """
        self.check_deployable(name, config)  # before the blob is stored: a refusal leaves no file
        sha, size = file_sha256(Path(wasm_path))

        def decide() -> tuple[Changes, FunctionInfo]:
            blob_rev, _ = self.store.read(f"blob/{sha}")
            # Durable before any document names it; stored again if a sweep deleted it meanwhile
            # (then the record read above has moved, or the write finds the blob missing).
            self.store.put_blob(sha, Path(wasm_path))
            key = f"function/{name}"
            rev, doc = self.store.read(key)
            changes: Changes = {f"blob/{sha}": (blob_rev, {"size": size})}
            now = self.clock()
            if doc is None or doc.get("source") != "registry":
                urls = doc.get("urls", {}) if doc is not None else {}
                doc = {
                    **FunctionInfo(name, sha, size, FunctionConfig(), now).to_doc(),
                    "next_version": 1,
                    "urls": urls,
                }
            else:
                doc = {**doc, "code_sha256": sha, "code_size": size, "last_modified": now}
            if config is not None:
                settings = (
                    config
                    if isinstance(config, FunctionConfig)
                    else FunctionConfig.from_doc(config, base=FunctionConfig.stored(doc["config"]))
                )
                doc["config"] = settings.to_doc()
                changes |= self._touch_secrets(settings)
            changes[key] = (rev, doc)
            return changes, FunctionInfo.from_doc(doc)

        return self._commit(decide, blobs=(sha,))

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
            config = FunctionConfig.from_doc(changes, base=FunctionConfig.stored(doc["config"]))
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
        out.update((info.name, info) for info in self.deployed())
        return [out[name] for name in sorted(out)]

    def deployed(self) -> list[FunctionInfo]:
        """Functions deployed through the registry and not shadowed by an edgefn.toml one, by name.

        Unlike `functions()`, reads no component file: a config function's info hashes its file
        (the first time, 30-40 ms for an 18 MB component), which a caller such as the scheduler,
        asking on the event loop at start-up, does not need.
        """
        out = []
        for key in sorted(self.store.keys("function/")):
            name = key.removeprefix("function/")
            if name in self.config_functions:
                continue
            _, doc = self.store.read(key)
            if doc is not None and doc.get("source") == "registry":
                out.append(FunctionInfo.from_doc(doc))
        return out

    def referenced_blobs(self) -> set[str]:
        """The sha256 of every blob a function document names ($LATEST or a version), read from
        the documents themselves (a deployed function shadowed by an edgefn.toml one still counts)."""
        shas: set[str] = set()
        for key in self.store.keys("function/"):
            _, doc = self.store.read(key)
            if doc is not None and "code_sha256" in doc:
                shas.add(doc["code_sha256"])
                shas.update(v["code_sha256"] for v in doc.get("versions", ()))
        return shas

    def config_blobs(self) -> set[str]:
        """The sha256 of the edgefn.toml functions' components (compiled here, never stored)."""
        return {self._config_info(f).code_sha256 for f in self.config_functions.values()} - {""}

    def delete(self, name: str) -> None:
        """Delete a function with its versions, aliases and URLs (their blobs go with a later sweep)."""

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
    """The node's registry, with URLs made for edgefn.toml functions that ask for one.

    Each store is imported only when chosen: the Redis one loads redis-py (about 100 ms of a
    node's start), which a node on SQLite never uses."""
    store: RegistryStore
    if node.control_plane == "sqlite":
        from gateway.functions.registry_sqlite import SqliteStore

        store = SqliteStore(Path(node.data_dir))
    else:  # a fleet: documents and blobs in Redis (edge/sync_registry.py)
        from edge.sync import ControlPlane
        from edge.sync_registry import RedisRegistryStore

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
