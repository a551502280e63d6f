"""Cache servers: Redis twice, the cache and the job queue (its own instance, never evicting).
Defaults and their meaning: mahaops/settings/cache.py (clients log in as the default user
with secret redis_password, on both instances)."""

redis_maxmemory = "256mb"  # the cache's hard cap; evictions then follow redis_maxmemory_policy
redis_maxmemory_policy = "allkeys-lru"  # cache entries only: the least recently used go
redis_queue_maxmemory = "256mb"  # the queue's cap: full, it refuses writes, never drops one
redis_appendonly = True  # AOF with fsync every second: at most 1 s of writes at risk
redis_appendfsync = "everysec"
