"""The log server. Defaults and their meaning: mahaops/settings/log.py.

Shippers and server must agree on log_backend and the log ports: set those in all.py
or an overlay (local.py, aws.py), not here.
"""

# `invoke logs.ui` reaches Graylog's interface through an SSH tunnel to this host.
base_ssh_allow_tcp_forwarding = True

graylog_version = "6.1"  # repository series, pinned (apt preferences)
graylog_mongodb_version = "7.0"  # a MongoDB Graylog 6.1 supports
graylog_opensearch_version = "2.15.0"  # the newest OpenSearch Graylog 6.1 supports
graylog_heap_mb = None  # None: a quarter of the host's memory
graylog_opensearch_heap_mb = None  # None: a quarter of the host's memory

rsyslog_remote_rotate = 14  # days of received logs kept (log_backend = "rsyslog")
