'use strict';
// A reliable job queue on Redis lists.
//
//   web     LPUSH  maha:jobs <campaign id>
//   worker  BLMOVE maha:jobs -> maha:jobs:processing, then holds a lease key
//           maha:jobs:lease:<id> (PX lease) that it renews while it works
//   done    the worker removes the id from the processing list (ack)
//   SIGTERM the worker moves the id back to maha:jobs (hand back)
//   crash   the lease expires; any worker's reaper moves the id back
//
// A job is therefore always in exactly one of the two lists, and an id whose
// holder died returns to the queue about one lease after the death.
// Lease checks and list moves run as Lua scripts so they are atomic; scripts
// touch lease keys not passed in KEYS, which is fine on a single Redis but
// not on Redis Cluster.

const PENDING = 'maha:jobs';
const PROCESSING = 'maha:jobs:processing';
const UNLEASED = 'maha:jobs:unleased'; // id -> when the reaper first saw it without a lease
const LEASE_PREFIX = 'maha:jobs:lease:';

const SCRIPTS = {
  // Renew the lease only if we still hold it; 0 tells the worker to drop the job.
  mahaRenew: {
    numberOfKeys: 1,
    lua: `if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('PEXPIRE', KEYS[1], ARGV[2])
          end
          return 0`,
  },
  // Finish (ARGV[2] = '0') or hand back (ARGV[2] = '1') a job we hold. A
  // worker whose lease was reaped must not remove the entry of the worker
  // that holds the job now, hence the ownership check.
  mahaRelease: {
    numberOfKeys: 3,
    lua: `if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
          redis.call('DEL', KEYS[3])
          local removed = redis.call('LREM', KEYS[1], 1, ARGV[3])
          if ARGV[2] == '1' and removed > 0 then redis.call('RPUSH', KEYS[2], ARGV[3]) end
          return 1`,
  },
  // Requeue processing entries that have had no lease for ARGV[2] ms. The
  // grace period covers the instant between BLMOVE and the lease SET of a
  // live worker. RPUSH puts requeued jobs next in line (BLMOVE takes RIGHT).
  mahaReap: {
    numberOfKeys: 3,
    lua: `local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          local grace = tonumber(ARGV[2])
          local seen, requeued = {}, {}
          for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
            seen[id] = true
            if redis.call('EXISTS', ARGV[1] .. id) == 1 then
              redis.call('HDEL', KEYS[3], id)
            else
              local since = redis.call('HGET', KEYS[3], id)
              if not since then
                redis.call('HSET', KEYS[3], id, now)
              elseif now - tonumber(since) >= grace then
                redis.call('LREM', KEYS[1], 1, id)
                redis.call('RPUSH', KEYS[2], id)
                redis.call('HDEL', KEYS[3], id)
                table.insert(requeued, id)
              end
            end
          end
          for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do
            if not seen[id] then redis.call('HDEL', KEYS[3], id) end
          end
          return requeued`,
  },
};

function defineScripts(client) {
  for (const [name, { numberOfKeys, lua }] of Object.entries(SCRIPTS)) {
    if (!client[name]) client.defineCommand(name, { numberOfKeys, lua });
  }
  return client;
}

class JobQueue {
  // `client` runs the scripts and short commands; take() needs its own
  // connection because BLMOVE blocks it.
  constructor(client, { leaseMs = 15000 } = {}) {
    this.client = defineScripts(client);
    this.leaseMs = leaseMs;
  }

  enqueue(id) {
    return this.client.lpush(PENDING, String(id));
  }

  // The next job id, or null after `timeoutSeconds` without one.
  async take(blockingClient, holder, timeoutSeconds = 1) {
    const id = await blockingClient.blmove(PENDING, PROCESSING, 'RIGHT', 'LEFT', timeoutSeconds);
    if (id === null) return null;
    await this.client.set(LEASE_PREFIX + id, holder, 'PX', this.leaseMs);
    return id;
  }

  async renew(id, holder) {
    return (await this.client.mahaRenew(LEASE_PREFIX + id, holder, this.leaseMs)) === 1;
  }

  async ack(id, holder) {
    return (await this.client.mahaRelease(PROCESSING, PENDING, LEASE_PREFIX + id, holder, '0', id)) === 1;
  }

  async handBack(id, holder) {
    return (await this.client.mahaRelease(PROCESSING, PENDING, LEASE_PREFIX + id, holder, '1', id)) === 1;
  }

  // Requeue jobs whose holder stopped renewing; returns their ids.
  reap(graceMs) {
    return this.client.mahaReap(PROCESSING, PENDING, UNLEASED, LEASE_PREFIX, graceMs);
  }

  // Jobs left in the queue's former home (`legacy`, another JobQueue: the cache instance,
  // where releases before the queue's own instance kept it, and where app servers still on
  // such a release push during a rolling release) move here; returns their ids. Each id is
  // pushed here before it leaves there: a crash in between runs a job twice (deliveries
  // are idempotent), never loses one. Jobs held there are reaped there first.
  async adoptFrom(legacy, graceMs) {
    await legacy.reap(graceMs);
    const moved = [];
    for (;;) {
      const id = await legacy.client.lindex(PENDING, -1);
      if (id === null) return moved;
      await this.client.rpush(PENDING, id); // next in line here, as it was there
      await legacy.client.lrem(PENDING, -1, id);
      moved.push(id);
    }
  }
}

module.exports = { JobQueue, PENDING, PROCESSING };
