"""Settings of the local load balancer (HAProxy), the ALB's stand-in on Docker."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mahaops.settings.models import Settings, group_settings


@group_settings("load_balancers")
class LbSettings(Settings):
    lb_http_port: int = Field(80, ge=1, le=65535)  # where clients connect
    lb_https_port: int = Field(443, ge=1, le=65535)  # TLS ends here (lb_tls); on AWS at the ALB
    # HTTPS on lb_https_port with a certificate from the environment's CA (mahaops/tls.py);
    # the operator trusts that CA (`invoke up` says where its certificate is)
    lb_tls: bool = True
    # names clients use besides those always in the certificate: localhost, 127.0.0.1, the
    # host's inventory name and private address (a DNS name pointing here, say)
    lb_tls_names: list[str] = Field(default_factory=list)
    # plain HTTP answers 301 to HTTPS, as the ALB does with a certificate (the health path
    # excepted); off locally: lb_http_port is published on loopback only, and the tests,
    # benchmarks and `invoke up`'s own checks speak plain HTTP to it
    lb_http_redirect: bool = False
    lb_balance: Literal["roundrobin", "leastconn"] = "roundrobin"  # leastconn suits WebSockets
    lb_health_path: str = "/health"  # GET on each app server's nginx; 200 = in service
    lb_check_interval_ms: int = Field(1000, ge=100, le=60000)  # between active checks
    # a check's answer: one held in a restarting app server's socket queue (a second or
    # two) must not count as a failure (HAProxy's default is the interval)
    lb_timeout_check_ms: int = Field(5000, ge=100, le=60000)
    lb_check_fall: int = Field(2, ge=1, le=10)  # failed checks before a server leaves
    lb_check_rise: int = Field(2, ge=1, le=10)  # passed checks before it returns
    lb_timeout_connect_ms: int = Field(1000, ge=100)  # then retry another server
    lb_timeout_http_s: int = Field(60, ge=1)  # client and server inactivity, plain HTTP
    lb_timeout_tunnel_s: int = Field(3600, ge=1)  # idle WebSocket tunnels (like ALB idle timeout)
    lb_retries: int = Field(2, ge=0, le=10)  # connection retries, redispatched to another server
