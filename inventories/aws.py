"""pyinfra inventory of an AWS environment (``MAHA_ENV``), built from EC2 tags.

    MAHA_ENV=staging pyinfra inventories/aws.py deploys/base.py

Groups are the local inventory's: app_servers, db_servers, cache_servers,
log_servers, workers; load_balancers stays empty (the ALB is AWS's own), and
mail_servers too (the SMTP sink is for local platforms and tests).
"""

from mahaops.aws.inventory import hosts as _hosts
from mahaops.hosts import current_env as _current_env
from mahaops.hosts import group_lists as _group_lists

_found = _hosts(_current_env("staging"))
_groups = _group_lists(_found)

aws = [(host.name, dict(host.data)) for host in _found]
app_servers = _groups["app_servers"]
db_servers = _groups["db_servers"]
cache_servers = _groups["cache_servers"]
log_servers = _groups["log_servers"]
workers = _groups["workers"]
load_balancers: list[tuple[str, dict]] = []  # on AWS the load balancer is the ALB
mail_servers: list[tuple[str, dict]] = []  # the mail sink is local only
