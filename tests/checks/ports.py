"""What each port a host listens on beyond loopback speaks, found by trying, and the rule
every role's summary is held to: TLS, or SSH, or an exception written down with its reason.

Shared by the role tests (one summary per role, printed as a table) so that a new port, or
one that stops speaking TLS, fails the test of the role that opened it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mahaops.local.hosts import LocalHost

# A port speaks TLS when a handshake gets a certificate from it, straight away or after
# PostgreSQL's STARTTLS; else SSH announces itself with a banner; else it is "plain".
# (A server that requires a client certificate still shows its own: TLS 1.3 finishes the
# client's side of the handshake before the server judges the client.)
_PROBE = (
    "for p in $(ss -Htln | awk '{print $4}' | grep -v \"^127\\.\\|^\\[::1\\]\" "
    "| sed 's/.*://' | sort -un); do "
    "if timeout 5 openssl s_client -connect {addr}:$p </dev/null 2>/dev/null "
    "| grep -q '^-----BEGIN CERTIFICATE'; then s=tls; "
    "elif timeout 5 openssl s_client -starttls postgres -connect {addr}:$p </dev/null "
    "2>/dev/null | grep -q '^-----BEGIN CERTIFICATE'; then s=tls; "
    'elif timeout 2 bash -c "exec 3<>/dev/tcp/{addr}/$p; head -c 4 <&3" 2>/dev/null '
    "| grep -q SSH; then s=ssh; else s=plain; fi; echo $p $s; done"
)


# The plain ports the platform keeps on purpose, per role, with the reason (docs/security.md).
PLAIN_BY_DESIGN: dict[str, dict[int, str]] = {
    "app": {
        80: "nginx, admitted from the load balancer only; TLS ends at the load balancer "
        "(the ALB on AWS), the hop to the app server is the private network's",
    },
    "lb": {
        80: "the local stand-in's plain HTTP, published on loopback only, kept for the tests "
        "and benchmarks (HTTPS on 443 beside it; lb_http_redirect); on AWS the ALB redirects",
    },
    "mail": {
        25: "the local SMTP sink, admitted from workers only; on AWS workers send to SES with "
        "STARTTLS (worker_smtp_security)",
    },
}


def listening_summary(testbed: Any, host: LocalHost) -> dict[int, str]:
    """Every TCP port ``host`` listens on beyond loopback, and what it speaks (tls, ssh or
    plain), probed on its private address from the host itself."""
    out = testbed.exec(host, _PROBE.replace("{addr}", host.private_address))
    return {int(port): kind for port, kind in (line.split() for line in out.splitlines())}


def table(role: str, summary: Mapping[int, str], exceptions: Mapping[int, str]) -> str:
    """The summary as a table: role, port, what it speaks, and why when it is not TLS/SSH."""
    rows = [("role", "port", "speaks", "why not TLS")]
    for port, kind in sorted(summary.items()):
        rows.append((role, str(port), kind, exceptions.get(port, "") if kind == "plain" else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + ("  " + row[3] if row[3] else "")
        for row in rows
    )


def assert_tls_or_ssh(
    testbed: Any,
    role: str,
    host: LocalHost,
    expected: Mapping[int, str],
    exceptions: Mapping[int, str] | None = None,
) -> dict[int, str]:
    """``host``'s summary is exactly ``expected`` (port -> tls, ssh or plain); a plain port
    must be one of ``exceptions`` (port -> the reason it may be; default: the role's
    ``PLAIN_BY_DESIGN``). Prints the table."""
    exceptions = PLAIN_BY_DESIGN.get(role, {}) if exceptions is None else exceptions
    # A service a deploy just started may not listen yet (the mail sink's Python takes a
    # moment): wait, 30 s at most, for every expected port before probing.
    wanted = " ".join(str(p) for p in expected)
    testbed.exec(
        host,
        f"for i in $(seq 150); do missing=; for p in {wanted}; do ss -Htln | awk '{{print $4}}' "
        '| grep -q ":$p$" || missing=1; done; [ -z "$missing" ] && break; sleep 0.2; done',
    )
    summary = listening_summary(testbed, host)
    print(f"\n{table(role, summary, exceptions)}")
    unexplained = {p for p, kind in summary.items() if kind == "plain" and p not in exceptions}
    assert not unexplained, f"plain ports with no documented reason: {sorted(unexplained)}"
    assert summary == dict(expected), table(role, summary, exceptions)
    return summary
