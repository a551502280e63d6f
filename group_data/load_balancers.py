"""The local load balancer (HAProxy): the ALB's stand-in on Docker. Defaults and their
meaning: mahaops/settings/lb.py."""

lb_http_port = 80  # published on 127.0.0.1 by `invoke up`
lb_https_port = 443  # the same, HTTPS with the environment's CA (lb_tls): `up` names the CA file
lb_health_path = "/health"  # the ALB target group checks the same path
lb_check_interval_ms = 1000  # a dead app server leaves after fall x interval: about 2 s
lb_check_fall = 2
lb_check_rise = 2
