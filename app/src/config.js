'use strict';
// All configuration comes from environment variables (see README.md); the
// systemd unit loads them from an env file, tests pass them directly.

const os = require('os');

function int(name, fallback, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

// pg reads PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE itself when no
// connection string is given.
function postgres() {
  const options = {
    connectionTimeoutMillis: int('PG_CONNECT_TIMEOUT_MS', 3000),
    statement_timeout: int('PG_STATEMENT_TIMEOUT_MS', 30000),
    max: int('PG_POOL_MAX', 10, { min: 1 }),
    application_name: `maha-${require('path').basename(process.argv[1] || 'app', '.js')}`,
  };
  if (process.env.DATABASE_URL) options.connectionString = process.env.DATABASE_URL;
  return options;
}

// Where a URL points, without user or password: safe to log.
function describeUrl(raw) {
  try {
    const url = new URL(raw);
    return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
  } catch {
    return '(unparsable url)';
  }
}

function describePostgres() {
  if (process.env.DATABASE_URL) return describeUrl(process.env.DATABASE_URL);
  const host = process.env.PGHOST || 'localhost';
  return `postgres://${host}:${process.env.PGPORT || 5432}/${process.env.PGDATABASE || process.env.PGUSER || ''}`;
}

const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
// The job queue (and progress pub/sub) has its own Redis instance that never evicts; one
// Redis serves both where QUEUE_URL is unset (a developer's machine).
const queueUrl = process.env.QUEUE_URL || redisUrl;
// rediss:// URLs: the CA that Redis servers' certificates must chain to (the platform's own);
// unset, Node's public roots, which no internal certificate chains to.
const redisCaFile = process.env.REDIS_CA_FILE || '';

// Private uploads (issue 15): S3 (or the storage role's S3 API locally). Without a bucket,
// uploads are disabled and their API answers 503.
const trimmed = (name) => (process.env[name] || '').trim().replace(/\/+$/, '');

function uploads() {
  const cdnUrl = trimmed('MAHA_UPLOADS_CDN_URL');
  return {
    bucket: (process.env.MAHA_UPLOADS_BUCKET || '').trim(),
    region: (process.env.MAHA_S3_REGION || '').trim() || 'us-east-1',
    endpoint: trimmed('MAHA_S3_ENDPOINT'), // what this server connects to; '' = S3's own
    publicEndpoint: trimmed('MAHA_S3_PUBLIC_ENDPOINT'), // what presigned URLs name; '' = as endpoint
    forcePathStyle: process.env.MAHA_S3_FORCE_PATH_STYLE === '1',
    accessKeyId: process.env.MAHA_S3_ACCESS_KEY_ID || '', // '' = the SDK's provider chain
    secretAccessKey: process.env.MAHA_S3_SECRET_ACCESS_KEY || '', // never logged
    caFile: process.env.MAHA_S3_CA_FILE || '', // trust for an https endpoint's certificate
    maxBytes: int('MAHA_UPLOAD_MAX_BYTES', 10 * 1024 * 1024, { min: 1, max: 5 * 1024 ** 3 }),
    urlSeconds: int('MAHA_UPLOAD_URL_SECONDS', 300, { min: 1, max: 7 * 24 * 3600 }),
    cdnUrl, // downloads through CloudFront signed URLs when set
    cloudfrontKeyId: (process.env.MAHA_CLOUDFRONT_KEY_ID || '').trim(),
    cloudfrontPrivateKeyFile: process.env.MAHA_CLOUDFRONT_PRIVATE_KEY_FILE || '',
  };
}

module.exports = {
  int,
  release: process.env.MAHA_RELEASE || 'dev',
  serverName: process.env.MAHA_SERVER_NAME || os.hostname(),
  port: int('PORT', 3000, { max: 65535 }),
  host: process.env.HOST || '127.0.0.1', // nginx on the same host proxies to us
  serveStatic: process.env.MAHA_SERVE_STATIC !== '0',
  // Where pages load /static/ from: '' = this app (through nginx), else the CDN's origin.
  assetBase: (process.env.MAHA_ASSET_BASE_URL || '').replace(/\/+$/, ''),
  postgres,
  describePostgres,
  redisUrl,
  describeUrl,
  describeRedis: () => describeUrl(redisUrl),
  queueUrl,
  redisCaFile,
  describeQueue: () => describeUrl(queueUrl),
  // Users and sessions (issue 15): the cache Redis (REDIS_URL) holds sessions and sign-in counts.
  // A session ends after this long unused (each request renews it), and at the latest
  // SESSION_MAX_AGE_SECONDS after sign-in, used or not.
  sessionTtlSeconds: int('SESSION_TTL_SECONDS', 12 * 3600, { min: 60 }),
  sessionMaxAgeSeconds: int('SESSION_MAX_AGE_SECONDS', 7 * 24 * 3600, { min: 60 }),
  // How often open WebSockets' sessions are checked: one signed out or expired (on any
  // web server) has its sockets closed within this long.
  sessionRecheckMs: int('SESSION_RECHECK_MS', 15000, { min: 100 }),
  bcryptCost: int('BCRYPT_COST', 10, { min: 4, max: 15 }),
  signinMaxFailures: int('SIGNIN_MAX_FAILURES', 5, { min: 1 }),
  signinMaxFailuresPerIp: int('SIGNIN_MAX_FAILURES_PER_IP', 20, { min: 1 }),
  signinWindowSeconds: int('SIGNIN_WINDOW_SECONDS', 900, { min: 1 }),
  uploads: uploads(),
};

