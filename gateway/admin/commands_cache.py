"""`edgefn cache purge [--key K | --prefix P]` and `edgefn cache show`, against the admin API.

The admin URL is `--admin URL` (before or after the subcommand), else `EDGEFN_ADMIN_URL`, else
http://127.0.0.1:8081; the bearer token comes from `EDGEFN_ADMIN_TOKEN`. Exit status 0 on success,
1 when the admin API refused or could not be reached (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

DEFAULT_ADMIN = "http://127.0.0.1:8081"


def admin_url(args: argparse.Namespace) -> str:
    return (getattr(args, "admin", None) or os.environ.get("EDGEFN_ADMIN_URL") or DEFAULT_ADMIN).rstrip("/")


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, str] | None = None) -> Any:
    token = os.environ.get("EDGEFN_ADMIN_TOKEN", "")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = admin_url(args) + path
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=10.0, trust_env=False)
    except httpx.HTTPError as exc:
        raise SystemExit(_fail(f"cannot reach the admin API at {url}: {exc}")) from exc
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200:
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        raise SystemExit(_fail(f"{method} {url}: {response.status_code} {message or response.text[:200]}"))
    return data


def _fail(message: str) -> int:
    print(f"edgefn cache: {message}", file=sys.stderr)
    return 1


def cmd_purge(args: argparse.Namespace) -> int:
    body = {"key": args.key} if args.key is not None else {"prefix": args.prefix}
    data = _call(args, "POST", "/cache/purge", body)
    if args.json:
        print(json.dumps(data))
    else:
        what = f"key {args.key!r}" if args.key is not None else f"prefix {args.prefix!r}"
        print(f"purged {data['purged']} cached object(s) for {what}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    data = _call(args, "GET", "/cache")
    if args.json:
        print(json.dumps(data))
        return 0
    print(
        f"{data['entries']} objects, {data['bytes']} of {data['max_bytes']} bytes; "
        f"hits {data['hits']}, misses {data['misses']}, revalidated {data['revalidated']}"
    )
    for key in data["keys"]:
        print(f"  {key}")
    return 0


def register(sub: Any) -> None:
    """Add `cache purge` and `cache show` to the CLI's subparsers."""
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument("--admin", default=argparse.SUPPRESS, help="admin API URL")
    admin.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    cache = sub.add_parser("cache", help="edge cache: purge objects, show what is stored", parents=[admin])
    verbs = cache.add_subparsers(dest="cache_command", required=True)
    purge = verbs.add_parser(
        "purge", help="remove cached objects by exact key or key prefix", parents=[admin]
    )
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="exact key: host/path?query (every Vary variant goes)")
    which.add_argument("--prefix", help="key prefix: host/path-prefix ('' empties the cache)")
    purge.set_defaults(func=cmd_purge, json=False)
    show = verbs.add_parser("show", help="counts, bytes and the first 1000 keys", parents=[admin])
    show.set_defaults(func=cmd_show, json=False)
