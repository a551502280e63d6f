'use strict';
// Redis connections. ioredis reconnects by itself; we log each outage once
// (not every retry) and its recovery, and never the URL's password.

const Redis = require('ioredis');
const config = require('./config');
const log = require('./log');

const PROGRESS_CHANNEL = 'maha:progress';

// `role` names the connection in logs and in CLIENT LIST.
// `failFast`: commands fail at once while disconnected instead of queueing,
// so HTTP requests answer 503 rather than hang.
function connect(role, { failFast = false } = {}) {
  const client = new Redis(config.redisUrl, {
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
    log.warn('redis unavailable', { role, redis: config.describeRedis(), ...log.errorFields(err) });
  });
  client.on('ready', () => {
    if (down) log.info('redis available again', { role });
    down = false;
  });
  return client;
}

module.exports = { connect, PROGRESS_CHANNEL };
