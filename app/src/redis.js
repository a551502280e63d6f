'use strict';
// Redis connections. ioredis reconnects by itself; we log each outage once
// (not every retry) and its recovery, and never the URL's password.

const fs = require('fs');
const Redis = require('ioredis');
const config = require('./config');
const log = require('./log');

const PROGRESS_CHANNEL = 'maha:progress';

// `role` names the connection in logs and in CLIENT LIST.
// `failFast`: commands fail at once while disconnected instead of queueing,
// so HTTP requests answer 503 rather than hang.
// `url`: the job queue's instance by default (all the app keeps in Redis today is the
// queue and its progress channel); the cache instance is config.redisUrl.
function connect(role, { failFast = false, url = config.queueUrl } = {}) {
  const client = new Redis(url, {
    ...tlsOptions(url),
    connectionName: `maha-${role}`,
    connectTimeout: 3000,
    enableOfflineQueue: !failFast,
    maxRetriesPerRequest: failFast ? 1 : null,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  let down = false;
  client.on('error', (err) => {
    if (down) return;
    down = true;
    log.warn('redis unavailable', { role, redis: config.describeUrl(url), ...log.errorFields(err) });
  });
  client.on('ready', () => {
    if (down) log.info('redis available again', { role });
    down = false;
  });
  return client;
}

// rediss:// verifies the server's certificate (chain and address) against the platform's CA.
function tlsOptions(url) {
  if (!url.startsWith('rediss://')) return {};
  return { tls: config.redisCaFile ? { ca: fs.readFileSync(config.redisCaFile) } : {} };
}

module.exports = { connect, tlsOptions, PROGRESS_CHANNEL };
