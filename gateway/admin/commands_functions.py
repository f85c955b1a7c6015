"""The function lifecycle on the command line: functions, aliases, urls, secrets and invoke.

    edgefn functions deploy NAME FILE.wasm [config flags]   $LATEST's code (and configuration)
    edgefn functions publish NAME [--description D]         prints the new version number
    edgefn functions list | get NAME | delete NAME
    edgefn functions config NAME [config flags]             show, or change the keys given
    edgefn aliases set NAME ALIAS VERSION [--weight V=0.1] | list NAME | delete NAME ALIAS
    edgefn urls create NAME [--qualifier A] [--auth none|sigv4] [--invoke-mode M] [--cors-origin O]
    edgefn urls list [NAME] | delete NAME [--qualifier A]
    edgefn secrets set NAME (value on stdin) | list | delete NAME
    edgefn invoke NAME [--qualifier Q] [--type RequestResponse|Event|DryRun] [--data D]

Config flags: --memory-mb, --timeout-s, --reserved-concurrency, --instance-reuse, --provisioned,
--env K=V, --secret ENV=SECRET, --outbound TARGET, --schedule EXPR (the repeatable ones replace the
whole list or map). `deploy` sends them with the code as one change, checked by the gateway
against the stored configuration before the upload, so a bad flag changes nothing. Each command
talks to the admin API (see gateway/admin/client.py for where it is found) and exits 0 on success,
1 when the API refused (its message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.admin.client import CommandFailed, api_message, call, common_options, request, run

INVOKE_TYPES = ("RequestResponse", "Event", "DryRun")


def _name(text: str) -> str:
    return quote(text, safe="")


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandFailed(f"{flag} {item!r}: write KEY=VALUE")
        out[key] = value
    return out


def config_doc(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys the flags set; the gateway checks them against the stored ones."""
    doc: dict[str, Any] = {}
    for flag, key in (
        ("memory_mb", "memory_mb"),
        ("timeout_s", "timeout_s"),
        ("reserved_concurrency", "reserved_concurrency"),
        ("instance_reuse", "instance_reuse"),
        ("provisioned", "provisioned"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            doc[key] = value
    if args.env is not None:
        doc["env"] = _pairs(args.env, "--env")
    if args.secret is not None:
        doc["secrets"] = _pairs(args.secret, "--secret")
    if args.outbound is not None:
        doc["outbound"] = list(args.outbound)
    if args.schedule is not None:
        doc["schedule"] = list(args.schedule)
    return doc


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data) if args.json else text)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def _config_text(config: dict[str, Any]) -> str:
    return "\n".join(f"  {k}: {json.dumps(v)}" for k, v in config.items() if k not in ("name", "source"))


# -- functions ---------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    doc = config_doc(args)
    path = Path(args.file)
    if not path.is_file():
        raise CommandFailed(f"{path}: no such file")
    headers = {"content-type": "application/wasm"}
    if doc:
        headers["x-edgefn-configuration"] = json.dumps(doc)  # code and settings in one write
    with path.open("rb") as wasm:
        info = call(
            args,
            "POST",
            f"/functions/{_name(args.name)}/code",
            content=wasm,
            headers=headers,
            timeout=600.0,  # the gateway compiles the component before it answers
        )
    _print(
        args,
        info,
        f"deployed {args.name} $LATEST: sha256 {info['code_sha256']} ({info['code_size']} bytes)",
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    version = call(
        args, "POST", f"/functions/{_name(args.name)}/versions", json={"description": args.description}
    )
    _print(args, version, str(version["version"]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/functions")
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"{'NAME':24}  {'SOURCE':8}  {'VERSIONS':8}  {'ALIASES':24}  {'SHA256':12}  LAST MODIFIED")
    for f in data["functions"]:
        aliases = ",".join(f"{a['name']}->{a['version']}" for a in f["aliases"]) or "-"
        versions = len(f["versions"])
        print(
            f"{f['name']:24}  {f['source']:8}  {versions:>8}  {aliases:24}  {f['code_sha256'][:12]:12}  "
            f"{_when(f['last_modified'])}"
        )
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    f = call(args, "GET", f"/functions/{_name(args.name)}")
    if args.json:
        print(json.dumps(f))
        return 0
    print(f"{f['name']} ({f['source']}): $LATEST sha256 {f['code_sha256']} ({f['code_size']} bytes)")
    print(f"last modified {_when(f['last_modified'])}; configuration:")
    print(_config_text(f["config"]))
    for v in f["versions"]:
        note = f"  {v['description']}" if v["description"] else ""
        print(f"version {v['version']}: sha256 {v['code_sha256'][:12]} {_when(v['created'])}{note}")
    for a in f["aliases"]:
        print(f"alias {_alias_text(f['name'], a)}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/functions/{_name(args.name)}")
    _print(args, {"deleted": args.name}, f"deleted {args.name}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    doc = config_doc(args)
    path = f"/functions/{_name(args.name)}/configuration"
    config = call(args, "PUT", path, json=doc) if doc else call(args, "GET", path)
    _print(args, config, f"{args.name} $LATEST configuration:\n{_config_text(config)}")
    return 0


# -- aliases -----------------------------------------------------------------------------------


def _alias_text(name: str, alias: dict[str, Any]) -> str:
    weights = alias["additional_version_weights"]
    extra = "".join(f", version {v} at {w:.0%}" for v, w in weights.items())
    return f"{name}:{alias['name']} -> version {alias['version']}{extra}"


def cmd_alias_set(args: argparse.Namespace) -> int:
    weights: dict[str, float] = {}
    for item in args.weight or []:
        version, sep, weight = item.partition("=")
        try:
            weights[str(int(version))] = float(weight)
        except ValueError:
            raise CommandFailed(f"--weight {item!r}: write VERSION=WEIGHT, for example 2=0.1") from None
        if not sep:
            raise CommandFailed(f"--weight {item!r}: write VERSION=WEIGHT, for example 2=0.1")
    body = {"version": args.version, "additional_version_weights": weights, "description": args.description}
    alias = call(args, "PUT", f"/functions/{_name(args.name)}/aliases/{_name(args.alias)}", json=body)
    _print(args, alias, _alias_text(args.name, alias))
    return 0


def cmd_alias_list(args: argparse.Namespace) -> int:
    data = call(args, "GET", f"/functions/{_name(args.name)}/aliases")
    _print(args, data, "\n".join(_alias_text(args.name, a) for a in data["aliases"]) or "no aliases")
    return 0


def cmd_alias_delete(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/functions/{_name(args.name)}/aliases/{_name(args.alias)}")
    _print(args, {"deleted": args.alias}, f"deleted alias {args.name}:{args.alias}")
    return 0


# -- Function URLs -----------------------------------------------------------------------------


def cmd_url_create(args: argparse.Namespace) -> int:
    auth: dict[str, Any] = {"type": args.auth}
    if args.credentials_env:
        auth["credentials_env"] = args.credentials_env
    body: dict[str, Any] = {"auth": auth, "invoke_mode": args.invoke_mode}
    if args.qualifier:
        body["qualifier"] = args.qualifier
    if args.cors_origin:
        cors: dict[str, Any] = {"allow_origins": args.cors_origin}
        if args.cors_method:
            cors["allow_methods"] = args.cors_method
        if args.cors_header:
            cors["allow_headers"] = args.cors_header
        body["cors"] = cors
    url = call(args, "POST", f"/functions/{_name(args.name)}/urls", json=body)
    _print(args, url, url["url"])
    return 0


def cmd_url_list(args: argparse.Namespace) -> int:
    path = f"/functions/{_name(args.name)}/urls" if args.name else "/urls"
    data = call(args, "GET", path)
    if args.json:
        print(json.dumps(data))
        return 0
    for u in data["urls"]:
        target = u["function"] + (f":{u['qualifier']}" if u["qualifier"] else "")
        print(f"{u['url']}  {target}  auth={u['auth']['type']}  {u['invoke_mode']}")
    return 0


def cmd_url_delete(args: argparse.Namespace) -> int:
    path = f"/functions/{_name(args.name)}/urls"
    if args.qualifier:
        path += f"?qualifier={_name(args.qualifier)}"
    call(args, "DELETE", path)
    _print(args, {"deleted": args.name}, f"deleted the Function URL of {args.name}")
    return 0


# -- secrets -----------------------------------------------------------------------------------


def cmd_secret_set(args: argparse.Namespace) -> int:
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]
    call(args, "PUT", f"/secrets/{_name(args.name)}", json={"value": value})
    _print(args, {"name": args.name}, f"secret {args.name} set")
    return 0


def cmd_secret_list(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/secrets")
    _print(args, data, "\n".join(data["secrets"]) or "no secrets")
    return 0


def cmd_secret_delete(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/secrets/{_name(args.name)}")
    _print(args, {"deleted": args.name}, f"deleted secret {args.name}")
    return 0


# -- invoke ------------------------------------------------------------------------------------


def cmd_invoke(args: argparse.Namespace) -> int:
    """Prints the status line, the headers, a blank line and the body; exit 1 only when the
    gateway itself refused (its own JSON error), not when the function answered an error."""
    params = {"type": args.type}
    if args.qualifier:
        params["qualifier"] = args.qualifier
    headers = {"x-edgefn-request-method": args.method, "x-edgefn-request-path": args.path}
    body: bytes = b""
    if args.data is not None:
        body = args.data.encode()
    elif args.data_file is not None:
        body = sys.stdin.buffer.read() if args.data_file == "-" else Path(args.data_file).read_bytes()
    response = request(
        args,
        "POST",
        f"/functions/{_name(args.name)}/invoke",
        params=params,
        content=body,
        headers=[*headers.items(), *(("x-edgefn-request-header", h) for h in args.header or [])],
        timeout=args.timeout,
    )
    answered = "x-edgefn-executed-version" in response.headers or response.status_code in (202, 204)
    if not answered:
        raise CommandFailed(f"{response.status_code} {api_message(response)}")
    print(f"HTTP {response.status_code}")
    for key, value in response.headers.multi_items():
        print(f"{key}: {value}")
    print(flush=True)
    sys.stdout.buffer.write(response.content)
    sys.stdout.flush()
    return 0


# -- parser ------------------------------------------------------------------------------------


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-mb", dest="memory_mb", type=int, help="16 to 10240 (default 128)")
    p.add_argument("--timeout-s", dest="timeout_s", type=float, help="more than 0, at most 900")
    p.add_argument("--reserved-concurrency", dest="reserved_concurrency", type=int, help="0: no limit")
    p.add_argument("--instance-reuse", dest="instance_reuse", type=int, help="requests per instance")
    p.add_argument("--provisioned", type=int, help="instances made ahead of demand (needs --instance-reuse)")
    p.add_argument("--env", action="append", metavar="K=V", help="an environment value (repeat)")
    p.add_argument("--secret", action="append", metavar="ENV=SECRET", help="env value from a secret")
    p.add_argument("--outbound", action="append", metavar="TARGET", help="origin or host:port (repeat)")
    p.add_argument("--schedule", action="append", metavar="EXPR", help="cron(...) or rate(...)")


def register(sub: Any) -> None:
    """Add `functions`, `aliases`, `urls`, `secrets` and `invoke` to the CLI's subparsers."""
    common = common_options()

    def verb(group: Any, name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help_text, parents=[common])
        p.set_defaults(func=run(handler), json=False)
        return p

    functions = sub.add_parser(
        "functions", help="deploy, publish, list, configure functions", parents=[common]
    )
    fv = functions.add_subparsers(dest="functions_command", required=True)
    p = verb(fv, "deploy", cmd_deploy, "set $LATEST's code from a .wasm component (and its configuration)")
    p.add_argument("name")
    p.add_argument("file")
    _config_flags(p)
    p = verb(fv, "publish", cmd_publish, "freeze $LATEST as a new numbered version; prints the number")
    p.add_argument("name")
    p.add_argument("--description", default="")
    verb(fv, "list", cmd_list, "every function, from edgefn.toml and deployed")
    p = verb(fv, "get", cmd_get, "one function with its versions and aliases")
    p.add_argument("name")
    p = verb(fv, "delete", cmd_delete, "delete a function with its versions, aliases and URLs")
    p.add_argument("name")
    p = verb(fv, "config", cmd_config, "show $LATEST's configuration, or change the keys given")
    p.add_argument("name")
    _config_flags(p)

    aliases = sub.add_parser("aliases", help="aliases: named pointers at versions", parents=[common])
    av = aliases.add_subparsers(dest="aliases_command", required=True)
    p = verb(av, "set", cmd_alias_set, "create or move an alias (roll out, shift, roll back)")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int)
    p.add_argument("--weight", action="append", metavar="VERSION=W", help="share for one more version")
    p.add_argument("--description", default="")
    p = verb(av, "list", cmd_alias_list, "a function's aliases")
    p.add_argument("name")
    p = verb(av, "delete", cmd_alias_delete, "delete an alias (and its Function URL)")
    p.add_argument("name")
    p.add_argument("alias")

    urls = sub.add_parser("urls", help="Function URLs: http://<url-id>.<url_domain>/", parents=[common])
    uv = urls.add_subparsers(dest="urls_command", required=True)
    p = verb(uv, "create", cmd_url_create, "give a function (or an alias) a URL; prints it")
    p.add_argument("name")
    p.add_argument("--qualifier", help="an alias; default $LATEST")
    p.add_argument("--auth", choices=["none", "sigv4"], default="none")
    p.add_argument("--credentials-env", help="sigv4: env variable with ACCESS_KEY_ID:SECRET pairs")
    p.add_argument("--invoke-mode", choices=["BUFFERED", "RESPONSE_STREAM"], default="BUFFERED")
    p.add_argument("--cors-origin", action="append", help="an allowed origin, or * (repeat)")
    p.add_argument("--cors-method", action="append", help="an allowed method (repeat)")
    p.add_argument("--cors-header", action="append", help="an allowed request header (repeat)")
    p = verb(uv, "list", cmd_url_list, "every Function URL, or those of NAME")
    p.add_argument("name", nargs="?")
    p = verb(uv, "delete", cmd_url_delete, "delete a function's (or an alias's) URL")
    p.add_argument("name")
    p.add_argument("--qualifier")

    secrets = sub.add_parser("secrets", help="secrets functions read as env values", parents=[common])
    sv = secrets.add_subparsers(dest="secrets_command", required=True)
    p = verb(sv, "set", cmd_secret_set, "set a secret; the value is read from stdin")
    p.add_argument("name")
    verb(sv, "list", cmd_secret_list, "secret names (values are never shown)")
    p = verb(sv, "delete", cmd_secret_delete, "delete a secret no configuration reads")
    p.add_argument("name")

    p = sub.add_parser("invoke", help="send one request to a function; prints its response", parents=[common])
    p.set_defaults(func=run(cmd_invoke), json=False)
    p.add_argument("name")
    p.add_argument("--qualifier", help="a version number or an alias; default $LATEST")
    p.add_argument("--type", choices=INVOKE_TYPES, default="RequestResponse")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", help="the request body")
    data.add_argument("--data-file", help="read the request body from a file ('-': stdin)")
    p.add_argument("--method", default="POST")
    p.add_argument("--path", default="/", help="path and query the function sees")
    p.add_argument("-H", "--header", action="append", help="'name: value' (repeat)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the answer")
