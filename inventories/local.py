"""pyinfra inventory of a local environment (``MAHA_ENV``, default ``local``), from Docker labels.

    pyinfra inventories/local.py exec -- uptime          # ad-hoc, with pyinfra's CLI
    invoke deploy --env local                             # what the project runs

Containers labelled ``maha.project=maha`` and ``maha.env=<env>`` are the hosts;
``maha.role`` puts each in its group. Nothing else records what exists.
"""

from mahaops.hosts import current_env as _current_env
from mahaops.hosts import group_lists as _group_lists
from mahaops.local.hosts import inventory_hosts as _hosts

_found = _hosts(_current_env("local"))
_groups = _group_lists(_found)

local = [(host.name, dict(host.data)) for host in _found]
app_servers = _groups["app_servers"]
db_servers = _groups["db_servers"]
cache_servers = _groups["cache_servers"]
log_servers = _groups["log_servers"]
workers = _groups["workers"]
load_balancers = _groups["load_balancers"]
mail_servers = _groups["mail_servers"]
storage_servers = _groups["storage_servers"]
