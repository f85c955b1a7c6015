"""The CLI's side of the admin API: where it is, the token, one call, and how a refusal is told.

The admin URL is `--admin URL` (anywhere on the line), else `EDGEFN_ADMIN_URL`, else the
`admin_listen` of `--config FILE`, else http://127.0.0.1:8081; the bearer token comes from
`EDGEFN_ADMIN_TOKEN`. A command exits 0 on success and 1 when the admin API refused or could not be
reached, with one line on stderr saying why (the API's own message when it gave one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx

DEFAULT_ADMIN = "http://127.0.0.1:8081"


class CommandFailed(Exception):
    pass


def admin_url(args: argparse.Namespace) -> str:
    explicit = getattr(args, "admin", None) or os.environ.get("EDGEFN_ADMIN_URL")
    if explicit:
        return str(explicit).rstrip("/")
    config = getattr(args, "config", None)
    if config:
        from routes import ConfigError, load_config

        try:
            listen = load_config(config, deployed=True).node.admin_listen
        except ConfigError as exc:
            raise CommandFailed(f"{config}: {exc}") from exc
        return f"http://{listen}"
    return DEFAULT_ADMIN


def auth_headers() -> dict[str, str]:
    token = os.environ.get("EDGEFN_ADMIN_TOKEN", "")
    return {"authorization": f"Bearer {token}"} if token else {}


def api_message(response: httpx.Response) -> str:
    """The `error.message` of a JSON error answer, else the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def refused(method: str, url: str, response: httpx.Response) -> CommandFailed:
    return CommandFailed(f"{method} {url}: {response.status_code} {api_message(response)}")


def request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One admin request, whatever it answers; only an unreachable API raises."""
    url = admin_url(args) + path
    extra = kwargs.pop("headers", {})
    headers = [*auth_headers().items(), *(extra.items() if isinstance(extra, dict) else extra)]
    timeout = kwargs.pop("timeout", 30.0)
    try:
        return httpx.request(method, url, headers=headers, timeout=timeout, trust_env=False, **kwargs)
    except httpx.HTTPError as exc:
        raise CommandFailed(f"cannot reach the admin API at {url}: {exc}") from exc


def call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    """An admin request that must succeed (2xx); its JSON answer, or None when it has no body."""
    response = request(args, method, path, **kwargs)
    if not 200 <= response.status_code < 300:
        raise refused(method, admin_url(args) + path, response)
    return response.json() if response.content else None


def run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command handler whose CommandFailed becomes one stderr line and exit status 1."""

    def run_command(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except CommandFailed as exc:
            print(f"edgefn {args.command}: {exc}", file=sys.stderr)
            return 1

    return run_command


def common_options() -> argparse.ArgumentParser:
    """`--admin`, `--config` and `--json`, accepted before or after the verb."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", default=argparse.SUPPRESS, help="admin API URL")
    common.add_argument("--config", default=argparse.SUPPRESS, help="take admin_listen from this config")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common
