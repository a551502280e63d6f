'use strict';
// The campaign worker: takes campaign ids from the Redis queue, sends the
// campaign (one message per recipient over SMTP, see mailer.js; without
// SMTP_HOST a simulation writing one deliveries row per recipient in batches),
// records progress and the result in PostgreSQL and publishes progress on
// Redis pub/sub for the web servers to relay over WebSocket.
//
// Safe to kill at any moment: each recipient is claimed (mail_sends) before
// its message is handed to SMTP and marked once accepted, so a rerun never
// sends a recipient marked sent; a delivery's primary key makes reruns add
// nothing; and a job whose worker died is requeued by the other workers'
// reapers (see queue.js). What a kill in the middle of one SMTP transaction
// can do is in README.md ("Mail: what is guaranteed").
// SIGTERM: stop taking jobs, keep working on jobs in hand for at most
// WORKER_STOP_GRACE_MS, hand the rest back to the queue, exit 0.

const { setTimeout: sleep } = require('timers/promises');
const config = require('./config');
const log = require('./log');
const db = require('./db').connect();
const redisClients = require('./redis');
const { JobQueue } = require('./queue');
const { progressMessage } = require('./campaigns');
const mailer = require('./mailer');

const settings = {
  concurrency: config.int('WORKER_CONCURRENCY', 2, { min: 1, max: 64 }),
  leaseMs: config.int('WORKER_LEASE_MS', 15000, { min: 1000 }),
  batchSize: config.int('WORKER_BATCH_SIZE', 500, { min: 1, max: 10000 }),
  batchDelayMs: config.int('WORKER_BATCH_DELAY_MS', 100), // simulated mail-provider latency per batch
  stopGraceMs: config.int('WORKER_STOP_GRACE_MS', 5000),
  maxAttempts: config.int('WORKER_MAX_ATTEMPTS', 5, { min: 1 }),
};
const mail = mailer.settings();
const smtp = mail.host ? mailer.transport(mail) : null;
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
      returning name, recipients, attempts,
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

// -- real mail --------------------------------------------------------------------------
// Per recipient: claimed -> sending (only if still ours) -> sent | failed, or
// retry when the server refused for now. A worker that stops gracefully lets
// every message it handed to SMTP finish and records it before it hands the
// job back, so a restart sends nobody twice and skips nobody.

const ROW = 'recipient, address, message_id';
const halted = (lease, failure) =>
  failure.error ? 'error' : lease.lost ? 'lease-lost' : Date.now() >= state.stopDeadline ? 'hand-back' : null;

// Rows claimed or owed a retry, whoever claimed them: none was handed to SMTP,
// and the compare-and-set in sendOne keeps a former holder from sending them.
async function owed(id, holder) {
  const { rows } = await db.query(
    `update mail_sends set holder = $2, state = 'claimed', claimed_at = now()
      where campaign_id = $1 and recipient in (
        select recipient from mail_sends where campaign_id = $1 and state in ('claimed', 'retry')
         order by recipient limit $3)
      returning ${ROW}`,
    [id, holder, settings.batchSize],
  );
  return rows;
}

// The next recipients after the highest one claimed (or recorded by an older
// release's simulation); a concurrent claim of the same ones gets none of them.
async function claimNext(id, holder, total) {
  const { rows } = await db.query(
    `with start as (
       select greatest(
         (select coalesce(max(recipient), 0) from mail_sends where campaign_id = $1),
         (select coalesce(max(recipient), 0) from deliveries where campaign_id = $1 and message_id is null)
       ) + 1 as first)
     insert into mail_sends (campaign_id, recipient, address, message_id, holder)
     select $1, r, 'recipient-' || r || '@example.test', '<maha.c' || $1 || '.r' || r || '@' || $5 || '>', $2
       from start, generate_series(start.first, least(start.first + $3 - 1, $4)) as r
     on conflict do nothing
     returning ${ROW}`,
    [id, holder, settings.batchSize, total, mail.messageIdDomain],
  );
  return rows;
}

// Messages handed to SMTP by a worker that never recorded the outcome (it
// died mid-send): sent again once stale. The receiver may get them twice,
// with the same Message-ID; see README.md.
async function reclaimStale(id, holder) {
  const { rows } = await db.query(
    `update mail_sends set holder = $2, state = 'claimed', claimed_at = now()
      where campaign_id = $1 and state = 'sending' and sending_at < now() - $3 * interval '1 millisecond'
      returning ${ROW}`,
    [id, holder, mail.staleMs],
  );
  if (rows.length) {
    log.warn('resending messages whose outcome was never recorded', { campaign: Number(id), messages: rows.length });
  }
  return rows;
}

async function unfinished(id) {
  const { rows } = await db.query(
    `select count(*)::int as n from mail_sends where campaign_id = $1 and state in ('claimed', 'sending', 'retry')`,
    [id],
  );
  return rows[0].n;
}

async function toSending(id, row, holder, from) {
  const { rowCount } = await db.query(
    `update mail_sends set state = 'sending', sending_at = now(), tries = tries + 1
      where campaign_id = $1 and recipient = $2 and holder = $3 and state = $4`,
    [id, row.recipient, holder, from],
  );
  return rowCount === 1;
}

async function markSent(id, row, holder, response) {
  const { rows } = await db.query(
    `with s as (
       update mail_sends set state = 'sent', sent_at = now(), smtp_response = left($4, 200), last_error = null
        where campaign_id = $1 and recipient = $2 and holder = $3 and state = 'sending'
        returning campaign_id, recipient, address, message_id),
     d as (
       insert into deliveries (campaign_id, recipient, address, message_id)
       select campaign_id, recipient, address, message_id from s on conflict do nothing)
     select count(*)::int as marked from s`,
    [id, row.recipient, holder, response || ''],
  );
  if (rows[0].marked !== 1) {
    log.warn('message sent after another worker took it over', { campaign: Number(id), recipient: row.recipient });
  }
}

async function markUnsent(id, row, holder, newState, err) {
  await db.query(
    `update mail_sends set state = $4, last_error = left($5, 200), smtp_response = left($6, 200)
      where campaign_id = $1 and recipient = $2 and holder = $3 and state = 'sending'`,
    [id, row.recipient, holder, newState, err.message || String(err), err.response || null],
  );
}

async function pause(ms, stopped) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (stopped()) return false;
    await sleep(Math.min(200, until - Date.now()));
  }
  return !stopped();
}

// Thrown when every message is refused for good: the job fails, it is not retried.
class RefusedAll extends Error {}

// One recipient: sent, failed for good, or left claimed/retry for a later run.
async function sendOne(campaign, row, holder, stopped) {
  let from = 'claimed';
  for (let tries = 1; ; tries++) {
    if (!(await toSending(campaign.id, row, holder, from))) return; // taken over: not ours to send
    let info;
    try {
      info = await smtp.sendMail(mailer.compose(mail, campaign, row));
    } catch (err) {
      const kind = mailer.classify(err);
      if (kind === 'permanent') {
        await markUnsent(campaign.id, row, holder, 'failed', err);
        log.warn('recipient refused', { campaign: campaign.id, recipient: row.recipient, smtp: err.responseCode });
        campaign.refusedInARow += 1;
        if (campaign.refusedInARow >= mail.refusedInARow) {
          const reason = String(err.response || err.message).slice(0, 200);
          throw new RefusedAll(`every message refused (${campaign.refusedInARow} in a row): ${reason}`);
        }
        return;
      }
      await markUnsent(campaign.id, row, holder, 'retry', err); // refused or never reached: not sent
      if (kind === 'job' || tries >= mail.maxTries) {
        const failure = new Error(`mail not sent after ${tries} tries: ${err.message}`);
        failure.code = err.code;
        throw failure;
      }
      if (!(await pause(mailer.backoffMs(mail, tries), stopped))) return; // stopping: retried by the next run
      from = 'retry';
      continue;
    }
    await markSent(campaign.id, row, holder, info.response);
    campaign.refusedInARow = 0;
    return;
  }
}

// Up to MAIL_CONNECTIONS messages of the batch at once, throttled; stops
// taking new ones when the job must stop, and waits for those in hand.
async function sendRows(campaign, rows, holder, lease, throttle) {
  const failure = { error: null };
  const stopped = () => halted(lease, failure);
  let next = 0;
  async function lane() {
    while (next < rows.length && !stopped()) {
      const row = rows[next++];
      await throttle.take();
      if (stopped()) return;
      try {
        await sendOne(campaign, row, holder, stopped);
      } catch (err) {
        failure.error = failure.error || err;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(mail.connections, rows.length) }, lane));
  if (failure.error) throw failure.error;
  return stopped() || 'ok';
}

async function sendMail(id, job, holder, lease) {
  const campaign = { id: Number(id), name: job.name, refusedInARow: 0 };
  const throttle = new mailer.Throttle(mail.ratePerCampaign);
  for (;;) {
    const stop = halted(lease, { error: null });
    if (stop) return stop;
    let rows = await owed(id, holder);
    if (!rows.length) rows = await claimNext(id, holder, job.recipients);
    if (!rows.length) rows = await reclaimStale(id, holder);
    if (!rows.length) {
      if (!(await unfinished(id))) return 'sent';
      // Messages another worker handed to SMTP: recorded soon, or stale later.
      await sleep(Math.min(1000, Math.ceil(mail.staleMs / 4)));
      continue;
    }
    const outcome = await sendRows(campaign, rows, holder, lease, throttle);
    const { rows: done } = await db.query(
      `update campaigns set sent = (select count(*) from deliveries where campaign_id = $1) where id = $1 returning sent`,
      [id],
    );
    publish(progressMessage(id, 'running', done[0].sent, job.recipients));
    if (outcome !== 'ok') return outcome;
  }
}

async function finish(id, holder, startedAt) {
  const { rows } = await db.query(
    `update campaigns c
        set status = 'done', finished_at = now(), sent = d.delivered,
            result = jsonb_build_object('delivered', d.delivered, 'failed', d.failed,
                                        'worker', $2::text, 'duration_ms', $3::int)
       from (select (select count(*)::int from deliveries where campaign_id = $1) as delivered,
                    (select count(*)::int from mail_sends where campaign_id = $1 and state = 'failed') as failed) d
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
    const outcome = smtp
      ? await sendMail(id, job, holder, lease)
      : await sendBatches(id, job.sent, job.recipients, lease);
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
    if (err instanceof RefusedAll && !lease.lost) {
      // Another worker would meet the same refusals: the campaign fails with the reason.
      try {
        await fail(id, err.message);
        await queue.ack(id, holder);
        log.error('job failed: every message refused', { campaign: Number(id), error: err.message });
        return;
      } catch (recordErr) {
        err = recordErr; // not recorded: handed back below like any other error
      }
    }
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
    mail: mailer.describe(mail),
    mail_rate_per_campaign: mail.ratePerCampaign,
    ...settings,
  });
  const reaper = startReaper();
  await Promise.all(Array.from({ length: settings.concurrency }, (_, slot) => workSlot(slot)));
  clearInterval(reaper);
  if (smtp) smtp.close();
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
