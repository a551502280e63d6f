"""The operator's day-to-day tools on Fabric: what runs where, commands and logs across
hosts, the deploy lock and the audit log.

- ``ssh``: a Fabric connection per inventory host, commands on several hosts in parallel
  (``ThreadingGroup``), which hosts a ``--role`` / ``--host`` selects.
- ``lock``: the per-environment deploy lock, a directory on the environment's lock host.
- ``audit``: the append-only record of mutating commands beside the lock, and
  ``guarded``, the decorator that takes the lock and writes the record around a task.
- ``status``: one row per host (release running, services, last deploy, load balancer).
- ``journal``: the hosts' journals merged by time.
"""
