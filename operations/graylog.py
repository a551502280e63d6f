"""Graylog through its REST API, from the log server itself (curl against localhost).

Credentials never reach a command line: every call reads them from a curl config
file (``user = "admin:..."``, mode 0600) that the log role writes.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation


def _curl(curl_config: str, *args: str) -> str:
    return " ".join(
        [
            "curl -sS --max-time 10",
            "-K",
            shlex.quote(curl_config),
            "-H 'Accept: application/json'",
            *args,
        ]
    )


class GraylogApiReady(FactBase[bool]):
    """
    Whether Graylog on this host answers and processes (``/api/system/lbstatus`` is ALIVE).

    .. code:: python

        host.get_fact(GraylogApiReady, api_url="http://127.0.0.1:9000/api")
    """

    def command(self, api_url: str) -> str:
        return f"curl -s --max-time 5 {shlex.quote(api_url + '/system/lbstatus')} || true"

    def process(self, output: list[str]) -> bool:
        return "ALIVE" in "".join(output).upper()


class GraylogInputs(FactBase[list[dict[str, Any]] | None]):
    """
    Graylog's inputs as its API lists them: ``[{"id", "title", "type", "port"}]``,
    or None when the API does not answer (not installed yet, or starting).

    .. code:: python

        host.get_fact(
            GraylogInputs,
            api_url="http://127.0.0.1:9000/api",
            curl_config="/etc/graylog/server/maha-api.curl",
        )
    """

    def command(self, api_url: str, curl_config: str) -> str:
        url = shlex.quote(api_url + "/system/inputs")
        return f"{_curl(curl_config, '--fail', url)} 2>/dev/null || true"

    def process(self, output: list[str]) -> list[dict[str, Any]] | None:
        text = "\n".join(output).strip()
        if not text:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        return [
            {
                "id": item.get("id"),
                "title": item.get("title"),
                "type": item.get("type"),
                "port": (item.get("attributes") or {}).get("port"),
            }
            for item in data.get("inputs", [])
        ]


@operation()
def api_ready(api_url: str = "http://127.0.0.1:9000/api", timeout: int = 300):
    """
    Wait until Graylog's API answers and the node processes messages.

    + api_url: base URL of the REST API, from the log server itself
    + timeout: seconds to wait before failing (a first start migrates MongoDB: minutes)

    A no-op when Graylog already answers. Later operations read the API's state only
    after this one ran, so they see the node as it is, not as it was before a restart.

    **Example:**

    .. code:: python

        graylog.api_ready(name="Wait for Graylog's API", api_url="http://127.0.0.1:9000/api")
    """
    if host.get_fact(GraylogApiReady, api_url=api_url):
        host.noop("Graylog's API answers")
        return
    url = shlex.quote(api_url + "/system/lbstatus")
    yield StringCommand(
        f"deadline=$(( $(date +%s) + {int(timeout)} )); "
        f"until curl -s --max-time 5 {url} | grep -qi alive; do "
        f'[ "$(date +%s)" -lt "$deadline" ] || {{ echo "Graylog did not answer at {url}" >&2; '
        "exit 1; }; sleep 3; done"
    )


@operation()
def input(
    title: str,
    input_type: str,
    configuration: dict[str, Any],
    api_url: str = "http://127.0.0.1:9000/api",
    curl_config: str = "/etc/graylog/server/maha-api.curl",
    global_input: bool = True,
):
    """
    Create a Graylog input unless one with the same title exists.

    + title: the input's title, how it is found again (keep titles unique)
    + input_type: Graylog's input class, e.g. ``org.graylog2.inputs.gelf.udp.GELFUDPInput``
    + configuration: the input's settings (bind_address, port, ...)
    + api_url: base URL of the REST API, from the log server itself
    + curl_config: curl config file holding the admin credentials (mode 0600)
    + global_input: run the input on every Graylog node

    An existing input is left as it is, even when its configuration differs: inputs
    are changed in Graylog's interface, and a deploy must not undo that.

    **Example:**

    .. code:: python

        graylog.input(
            name="Graylog input: GELF UDP",
            title="GELF UDP",
            input_type="org.graylog2.inputs.gelf.udp.GELFUDPInput",
            configuration={"bind_address": "0.0.0.0", "port": 12201},
        )
    """
    existing = host.get_fact(GraylogInputs, api_url=api_url, curl_config=curl_config)
    if existing is not None:
        found = [i for i in existing if i["title"] == title]
        if found:
            host.noop(f"Graylog input {title!r} exists (id {found[0]['id']})")
            return
    body = json.dumps(
        {
            "title": title,
            "type": input_type,
            "global": global_input,
            "configuration": configuration,
        },
        sort_keys=True,
    )
    yield StringCommand(
        _curl(
            curl_config,
            "--fail-with-body",
            "-H 'Content-Type: application/json'",
            "-H 'X-Requested-By: maha-deploy'",
            "-X POST",
            "--data",
            shlex.quote(body),
            shlex.quote(api_url + "/system/inputs"),
        )
    )
