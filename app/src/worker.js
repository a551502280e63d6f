'use strict';
// The campaign worker: takes campaign ids from the Redis queue, "sends" the
// campaign (one deliveries row per recipient, in batches), records progress
// and the result in PostgreSQL and publishes progress on Redis pub/sub for
// the web servers to relay over WebSocket.
//
// Safe to kill at any moment: a delivery's primary key makes reruns add
// nothing, a rerun resumes after the last recorded batch, and a job whose
// worker died is requeued by the other workers' reapers (see queue.js).
// SIGTERM: stop taking jobs, keep working on jobs in hand for at most
// WORKER_STOP_GRACE_MS, hand the rest back to the queue, exit 0.

const { setTimeout: sleep } = require('timers/promises');
const config = require('./config');
const log = require('./log');
const db = require('./db').connect();
const redisClients = require('./redis');
const { JobQueue } = require('./queue');
const { progressMessage } = require('./campaigns');

const settings = {
  concurrency: config.int('WORKER_CONCURRENCY', 2, { min: 1, max: 64 }),
  leaseMs: config.int('WORKER_LEASE_MS', 15000, { min: 1000 }),
  batchSize: config.int('WORKER_BATCH_SIZE', 500, { min: 1, max: 10000 }),
  batchDelayMs: config.int('WORKER_BATCH_DELAY_MS', 100), // simulated mail-provider latency per batch
  stopGraceMs: config.int('WORKER_STOP_GRACE_MS', 5000),
  maxAttempts: config.int('WORKER_MAX_ATTEMPTS', 5, { min: 1 }),
};
const reapIntervalMs = Math.max(250, Math.floor(settings.leaseMs / 4));

const redis = redisClients.connect('worker');
const queue = new JobQueue(redis, { leaseMs: settings.leaseMs });
// The queue's former home (the cache instance), drained into the queue's own instance.
const legacy =
  config.queueUrl === config.redisUrl
    ? null
    : new JobQueue(redisClients.connect('worker-legacy', { url: config.redisUrl }));
const state = { stopping: false, stopDeadline: Infinity };

function publish(message) {
  redis.publish(redisClients.PROGRESS_CHANNEL, JSON.stringify(message)).catch((err) => {
    // Progress is advisory (PostgreSQL holds the truth): never fail a job for it.
    log.warn('progress not published', { campaign: message.campaign, ...log.errorFields(err) });
  });
}

// Renews the job's lease while we work. `lost` turns true when another
// worker may have taken the job over: our lease is gone, or we could not
// renew it for a whole lease period.
function holdLease(id, holder) {
  const lease = { lost: false };
  let renewedAt = Date.now();
  const timer = setInterval(async () => {
    try {
      if (await queue.renew(id, holder)) renewedAt = Date.now();
      else lease.lost = true;
    } catch {
      if (Date.now() - renewedAt >= settings.leaseMs) lease.lost = true;
    }
  }, Math.floor(settings.leaseMs / 3));
  lease.release = () => clearInterval(timer);
  return lease;
}

async function start(id) {
  const { rows } = await db.query(
    `update campaigns
        set status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now())
      where id = $1 and status in ('queued', 'running')
      returning recipients, attempts,
                (select coalesce(max(recipient), 0) from deliveries where campaign_id = $1) as sent`,
    [id],
  );
  return rows[0] || null;
}

// Sends recipients (sent, total] in batches. Each batch is one statement, so
// the recorded deliveries are always recipients 1..sent and a rerun resumes
// exactly where the last one stopped.
async function sendBatches(id, sent, total, lease) {
  while (sent < total) {
    if (lease.lost) return 'lease-lost';
    if (Date.now() >= state.stopDeadline) return 'hand-back';
    const last = Math.min(sent + settings.batchSize, total);
    await sleep(settings.batchDelayMs);
    await db.query(
      `with batch as (
         insert into deliveries (campaign_id, recipient, address)
         select $1, r, 'recipient-' || r || '@example.test' from generate_series($2::int, $3::int) as r
         on conflict do nothing)
       update campaigns set sent = $3 where id = $1`,
      [id, sent + 1, last],
    );
    sent = last;
    publish(progressMessage(id, 'running', sent, total));
  }
  return lease.lost ? 'lease-lost' : 'sent';
}

async function finish(id, holder, startedAt) {
  const { rows } = await db.query(
    `update campaigns c
        set status = 'done', finished_at = now(), sent = d.delivered,
            result = jsonb_build_object('delivered', d.delivered, 'worker', $2::text, 'duration_ms', $3::int)
       from (select count(*)::int as delivered from deliveries where campaign_id = $1) d
      where c.id = $1
      returning c.sent, c.recipients`,
    [id, holder, Date.now() - startedAt],
  );
  publish(progressMessage(id, 'done', rows[0].sent, rows[0].recipients));
  return rows[0].sent;
}

async function fail(id, reason) {
  const { rows } = await db.query(
    `update campaigns set status = 'failed', finished_at = now(), result = jsonb_build_object('error', $2::text)
      where id = $1 returning sent, recipients`,
    [id, reason],
  );
  if (rows[0]) publish(progressMessage(id, 'failed', rows[0].sent, rows[0].recipients));
}

// Gives the job back for another worker; a hand-back is not a failed
// attempt. The row is reset first: once the id is back in the queue another
// worker may already be running it.
async function handBack(id, holder) {
  await db
    .query(`update campaigns set status = 'queued', attempts = attempts - 1 where id = $1`, [id])
    .catch((err) => log.warn('campaign status not reset', { campaign: Number(id), ...log.errorFields(err) }));
  await queue.handBack(id, holder);
}

async function runJob(id, holder) {
  const startedAt = Date.now();
  const lease = holdLease(id, holder);
  try {
    const job = await start(id);
    if (!job) {
      log.warn('job skipped: campaign missing or finished', { campaign: Number(id) });
      await queue.ack(id, holder);
      return;
    }
    if (job.attempts > settings.maxAttempts) {
      await fail(id, `gave up after ${settings.maxAttempts} attempts`);
      await queue.ack(id, holder);
      log.error('job failed: too many attempts', { campaign: Number(id), attempts: job.attempts });
      return;
    }
    log.info('job started', { campaign: Number(id), recipients: job.recipients, resume_from: job.sent, attempt: job.attempts });
    publish(progressMessage(id, 'running', job.sent, job.recipients));
    const outcome = await sendBatches(id, job.sent, job.recipients, lease);
    if (outcome === 'lease-lost') {
      log.warn('job abandoned: lease lost to another worker', { campaign: Number(id) });
    } else if (outcome === 'hand-back') {
      await handBack(id, holder);
      log.info('job handed back', { campaign: Number(id) });
    } else {
      const delivered = await finish(id, holder, startedAt);
      await queue.ack(id, holder);
      log.info('job done', { campaign: Number(id), delivered, ms: Date.now() - startedAt });
    }
  } catch (err) {
    // Database or Redis trouble: give the job back to be retried; if even
    // that fails, its lease expires and a reaper requeues it.
    log.error('job error', { campaign: Number(id), ...log.errorFields(err) });
    if (!lease.lost) await handBack(id, holder).catch(() => {});
    await sleep(1000);
  } finally {
    lease.release();
  }
}

async function workSlot(slot) {
  const holder = `${log.hostname}:${process.pid}:${slot}`;
  const blocking = redisClients.connect(`worker-take-${slot}`);
  while (!state.stopping) {
    let id;
    try {
      id = await queue.take(blocking, holder, 1); // 1 s timeout so a stop is noticed quickly
    } catch {
      await sleep(1000); // Redis unavailable: redis.js logs the outage once
      continue;
    }
    if (id !== null) await runJob(id, holder);
  }
  blocking.disconnect();
}

function startReaper() {
  return setInterval(async () => {
    try {
      for (const id of await queue.reap(reapIntervalMs)) {
        log.warn('job requeued: its worker stopped renewing the lease', { campaign: Number(id) });
      }
      if (legacy) {
        for (const id of await queue.adoptFrom(legacy, reapIntervalMs)) {
          log.info('job moved to the queue instance', { campaign: Number(id) });
        }
      }
    } catch {
      // Redis unavailable; the next round retries.
    }
  }, reapIntervalMs);
}

function onStopSignal(signal) {
  if (!state.stopping) {
    state.stopping = true;
    state.stopDeadline = Date.now() + settings.stopGraceMs;
    log.info('stopping: finishing jobs in hand', { signal, grace_ms: settings.stopGraceMs });
  } else {
    state.stopDeadline = Date.now(); // a second signal: hand back now
  }
}

async function main() {
  process.on('SIGTERM', onStopSignal);
  process.on('SIGINT', onStopSignal);
  log.info('worker started', {
    release: config.release,
    postgres: config.describePostgres(),
    queue: config.describeQueue(),
    ...settings,
  });
  const reaper = startReaper();
  await Promise.all(Array.from({ length: settings.concurrency }, (_, slot) => workSlot(slot)));
  clearInterval(reaper);
  await Promise.allSettled([db.end(), redis.quit(), ...(legacy ? [legacy.client.quit()] : [])]);
  log.info('worker stopped');
}

main().then(
  () => process.exit(0),
  (err) => {
    log.error('worker crashed', log.errorFields(err));
    process.exit(1);
  },
);
