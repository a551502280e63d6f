"""Overlay for the local platform (Docker hosts on this machine)."""

# Containers have no route out: packages come through the package cache on this machine
# (nginx, mahaops/local/pkgcache.py), which `invoke up` starts. Set to None where
# containers reach a mirror themselves.
apt_proxy = "http://host.docker.internal:3150"
base_admin_cidrs = ["0.0.0.0/0"]  # SSH arrives from docker-proxy on 127.0.0.1 only
log_backend = "rsyslog"  # Graylog's repositories are out of reach here; a central rsyslog is not
# NodeSource is out of reach too: Debian 12's own Node.js 18 (Debian's security team keeps
# patching it); everywhere else the default, an LTS from NodeSource (mahaops/settings/app.py).
nodejs_major = 18
# Nine hosts share this machine: size PostgreSQL for a small share of it, not all of it.
postgresql_memory_mb = 1024
# Hosts per role (`invoke up` creates what is missing; `invoke scale` changes a count).
# mail: the SMTP sink the workers send campaign mail to (on AWS: SES); storage: the S3 API
# the app presigns uploads for (on AWS: S3 itself).
local_hosts = {
    "lb": 1,
    "app": 2,
    "db": 1,
    "cache": 1,
    "log": 1,
    "worker": 1,
    "mail": 1,
    "storage": 1,
}
# Off-host copies of the nightly dumps: the db hosts put each one to the log server's
# put-only store (they cannot delete or overwrite there); AWS copies to S3 instead.
postgresql_backup_offhost = True
