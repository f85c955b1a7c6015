"""The config `make run` serves answers every URL its header tells a reader to try."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gateway.app import Gateway
from routes import parse_config
from tests.servers import ServerThread

from .conftest import shared_data_dir

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edgefn.toml"


def test_every_url_the_example_config_offers_answers(tmp_path: Path, origin: str, example_components) -> None:
    text = EXAMPLE.read_text()
    tried = re.findall(r"^#\s+curl .*?http://127\.0\.0\.1:8080(\S+)", text, flags=re.MULTILINE)
    assert len(tried) >= 5, tried
    served = text.replace("http://127.0.0.1:9001", origin).replace(
        'data_dir = "../.edgefn"', f'data_dir = "{shared_data_dir(tmp_path / "data")}"'
    )
    assert served.count(origin) == 1 and str(tmp_path) in served  # both replaced: not the real ones
    config = parse_config(served, EXAMPLE)  # its components, relative to examples/
    with (
        ServerThread(Gateway(config), date_header=False, server_header=False) as gateway,
        httpx.Client(base_url=gateway.url, timeout=60) as client,
    ):
        answers = {path: client.get(path.replace("ms=300", "ms=10")) for path in tried}
    assert {path: r.status_code for path, r in answers.items()} == dict.fromkeys(tried, 200)
    assert answers["/fn/fetch/hello"].headers["x-fetched-by"] == "edgefn-fetch"
