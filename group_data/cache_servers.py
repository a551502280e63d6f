"""Cache servers: Redis, the cache and job queue. Defaults and their meaning:
mahaops/settings/cache.py (clients log in as the default user with secret redis_password)."""

redis_maxmemory = "256mb"  # hard cap; evictions then follow redis_maxmemory_policy
redis_maxmemory_policy = "volatile-lru"  # only keys with a TTL are evicted: jobs are kept
redis_appendonly = True  # AOF with fsync every second: at most 1 s of writes at risk
redis_appendfsync = "everysec"
