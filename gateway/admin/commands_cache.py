"""`edgefn cache purge [--key K | --prefix P]` and `edgefn cache show`, against the admin API.

The admin URL and token are found as for every admin command (gateway/admin/client.py): `--admin
URL` before or after the subcommand, `EDGEFN_ADMIN_URL`, `--config FILE`. Exit status 0 on
success, 1 when the admin API refused or could not be reached (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.admin.client import call, common_options, run


def cmd_purge(args: argparse.Namespace) -> int:
    body = {"key": args.key} if args.key is not None else {"prefix": args.prefix}
    data = call(args, "POST", "/cache/purge", json=body)
    if args.json:
        print(json.dumps(data))
    else:
        what = f"key {args.key!r}" if args.key is not None else f"prefix {args.prefix!r}"
        print(f"purged {data['purged']} cached object(s) for {what}; told {data['told']} other process(es)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/cache")
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
    admin = common_options()
    cache = sub.add_parser("cache", help="edge cache: purge objects, show what is stored", parents=[admin])
    verbs = cache.add_subparsers(dest="cache_command", required=True)
    purge = verbs.add_parser(
        "purge", help="remove cached objects by exact key or key prefix", parents=[admin]
    )
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="exact key: host/path?query (every Vary variant goes)")
    which.add_argument("--prefix", help="key prefix: host/path-prefix ('' empties the cache)")
    purge.set_defaults(func=run(cmd_purge), json=False)
    show = verbs.add_parser("show", help="counts, bytes and the first 1000 keys", parents=[admin])
    show.set_defaults(func=run(cmd_show), json=False)
