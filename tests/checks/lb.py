"""What an operator expects of the local load balancer (HAProxy). Shared with the
Ansible tests."""

from __future__ import annotations

from typing import Any


def check_lb(th: Any, backends: dict[str, str]) -> None:
    """The lb role's promises: HAProxy runs a valid configuration listing ``backends``
    (host name -> private address) with active health checks, listening on port 80."""
    assert th.service("haproxy").is_running and th.service("haproxy").is_enabled
    assert th.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg").rc == 0
    config = th.file("/etc/haproxy/haproxy.cfg").content_string
    assert "option httpchk GET /health" in config
    assert "option forwardfor" in config
    for name, address in backends.items():
        assert f"server {name} {address}:80 check" in config
    assert "http-request set-header X-Forwarded-Proto https if { ssl_fc }" in config
    assert "ssl-min-ver TLSv1.2" in config
    listening = th.check_output("ss -Htln")
    assert ":80 " in listening and ":443 " in listening
