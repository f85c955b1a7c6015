"""`edgefn dlq list NAME`, `edgefn dlq redrive NAME` and `edgefn logs NAME [--follow]`.

The admin URL is `--admin URL` (anywhere on the line), else `EDGEFN_ADMIN_URL`, else the
`admin_listen` of `--config FILE`, else http://127.0.0.1:8081; the bearer token comes from
`EDGEFN_ADMIN_TOKEN`. Exit status 0 on success, 1 when the admin API refused or could not be
reached (one line on stderr says why). `--json` prints what the API answered.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from gateway.admin.client import CommandFailed, admin_url, auth_headers, call, common_options, refused, run


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def cmd_dlq_list(args: argparse.Namespace) -> int:
    data = call(args, "GET", f"/functions/{quote(args.name, safe='')}/dlq")
    if args.json:
        print(json.dumps(data))
        return 0
    events = data["events"]
    if not events:
        print(f"no events in the dead-letter queue of {args.name}")
        return 0
    print(f"{'INVOCATION ID':32}  {'ACCEPTED':20}  {'ATTEMPTS':>8}  {'REQUEST':24}  LAST ERROR")
    for e in events:
        request = f"{e['method']} {e['path']}"
        print(f"{e['id']:32}  {_when(e['created']):20}  {e['attempts']:>8}  {request:24}  {e['last_error']}")
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    data = call(args, "POST", f"/functions/{quote(args.name, safe='')}/dlq/redrive")
    if args.json:
        print(json.dumps(data))
    else:
        print(f"redrove {data['redriven']} event(s) of {args.name} from the dead-letter queue")
    return 0


def _line_text(line: dict[str, Any]) -> str:
    if line["stream"] == "platform":
        return str(line["message"])
    return f"{_when(line['ts'])}\t{line['request_id']}\t{line['stream']}\t{line['message']}"


def _follow(args: argparse.Namespace, path: str) -> Iterator[dict[str, Any]]:
    url = admin_url(args) + path
    timeout = httpx.Timeout(10.0, read=None)
    try:
        with httpx.stream("GET", url, headers=auth_headers(), timeout=timeout, trust_env=False) as response:
            if response.status_code != 200:
                response.read()
                raise refused("GET", url, response)
            for text in response.iter_lines():
                if text.startswith("data: "):
                    data = json.loads(text[6:])
                    if data:
                        yield data
                elif text.startswith("event: overflow"):
                    raise CommandFailed("fell too far behind the log; run the command again")
    except httpx.HTTPError as exc:
        raise CommandFailed(f"lost the admin API at {url}: {exc}") from exc


def cmd_logs(args: argparse.Namespace) -> int:
    path = f"/functions/{quote(args.name, safe='')}/logs?limit={args.limit}"
    if args.request_id:
        path += f"&request_id={quote(args.request_id, safe='')}"
    if args.follow:
        try:
            for line in _follow(args, path + "&follow=1"):
                print(json.dumps(line) if args.json else _line_text(line), flush=True)
        except KeyboardInterrupt:
            return 0
        return 0
    data = call(args, "GET", path)
    if args.json:
        print(json.dumps(data))
        return 0
    for line in data["lines"]:
        print(_line_text(line))
    return 0


def register(sub: Any) -> None:
    """Add `dlq list|redrive` and `logs` to the CLI's subparsers (unless already there)."""
    common = common_options()
    if "dlq" not in sub.choices:
        dlq = sub.add_parser("dlq", help="the dead-letter queue of Event invocations", parents=[common])
        verbs = dlq.add_subparsers(dest="dlq_command", required=True)
        listing = verbs.add_parser("list", help="events that failed every attempt", parents=[common])
        listing.add_argument("name")
        listing.set_defaults(func=run(cmd_dlq_list), json=False)
        redrive = verbs.add_parser("redrive", help="queue every DLQ event of NAME again", parents=[common])
        redrive.add_argument("name")
        redrive.set_defaults(func=run(cmd_dlq_redrive), json=False)
    if "logs" not in sub.choices:
        logs = sub.add_parser(
            "logs", help="a function's log: START, its output, END, REPORT", parents=[common]
        )
        logs.add_argument("name")
        logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
        logs.add_argument("--limit", type=int, default=100, help="lines of the past to print (default 100)")
        logs.add_argument("--request-id", help="only the lines of this request or invocation")
        logs.set_defaults(func=run(cmd_logs), json=False)
