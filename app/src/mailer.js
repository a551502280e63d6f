'use strict';
// Campaign mail over SMTP (nodemailer, pooled connections): one message per
// recipient, throttled per campaign, retried with backoff when the server
// answers 4xx or the connection fails, never resent once marked sent.
//
// Without SMTP_HOST the worker keeps its simulated sending (rows only, after
// WORKER_BATCH_DELAY_MS per batch): a developer's machine needs no mail server.
//
// Each recipient's Message-ID is derived from the campaign and the recipient
// (<maha.c<campaign>.r<recipient>@domain>), and the message carries
// X-Maha-Campaign / X-Maha-Recipient, so a receiver can tell a message sent
// twice from two messages (SES replaces the Message-ID; the headers stay).

const net = require('net');
const { setTimeout: sleep } = require('timers/promises');
const nodemailer = require('nodemailer');
const config = require('./config');

const SECURITY = ['none', 'starttls', 'tls'];

function settings() {
  const security = process.env.SMTP_SECURITY || 'none';
  if (!SECURITY.includes(security)) {
    throw new Error(`SMTP_SECURITY must be one of ${SECURITY.join(', ')}, got ${JSON.stringify(security)}`);
  }
  const from = process.env.MAIL_FROM || 'Maha <campaigns@maha.test>';
  const fromDomain = (from.match(/@([^>\s]+)/) || [])[1] || 'maha.test';
  return {
    host: process.env.SMTP_HOST || '',
    port: config.int('SMTP_PORT', security === 'tls' ? 465 : 25, { min: 1, max: 65535 }),
    security,
    user: process.env.SMTP_USER || '',
    password: process.env.SMTP_PASSWORD || '',
    from,
    messageIdDomain: process.env.MAIL_MESSAGE_ID_DOMAIN || fromDomain,
    connections: config.int('MAIL_CONNECTIONS', 4, { min: 1, max: 50 }),
    ratePerCampaign: config.int('MAIL_RATE_PER_CAMPAIGN', 0), // messages/s; 0 = as fast as SMTP takes them
    maxTries: config.int('MAIL_MAX_TRIES', 5, { min: 1, max: 50 }),
    // This many refusals for good in a row, none accepted between them, fail the campaign:
    // the sender is refused, not the recipients (an unverified SES identity, a suspension).
    refusedInARow: config.int('MAIL_REFUSED_IN_A_ROW', 50, { min: 1 }),
    retryBaseMs: config.int('MAIL_RETRY_BASE_MS', 1000, { min: 1 }),
    retryMaxMs: config.int('MAIL_RETRY_MAX_MS', 30000, { min: 1 }),
    timeoutMs: config.int('MAIL_TIMEOUT_MS', 30000, { min: 100 }),
    // A message handed to SMTP whose outcome was never recorded (its worker died mid-send)
    // is sent again after this long; see "Mail" in README.md.
    staleMs: config.int('MAIL_CLAIM_STALE_MS', 120000, { min: 100 }),
  };
}

// What may be logged: where mail goes, never the credentials.
function describe(s) {
  if (!s.host) return 'simulated (SMTP_HOST unset)';
  return `smtp://${s.host}:${s.port} (${s.security}${s.user ? ', authenticated' : ''})`;
}

function transport(s) {
  return nodemailer.createTransport({
    host: s.host,
    port: s.port,
    secure: s.security === 'tls',
    requireTLS: s.security === 'starttls',
    ignoreTLS: s.security === 'none',
    auth: s.user ? { user: s.user, pass: s.password } : undefined,
    pool: true,
    maxConnections: s.connections,
    maxMessages: Infinity,
    connectionTimeout: s.timeoutMs,
    greetingTimeout: s.timeoutMs,
    socketTimeout: s.timeoutMs,
    disableFileAccess: true,
    disableUrlAccess: true,
    // Plain and STARTTLS connections without Nagle's delay: the end of each message is a
    // small write that would otherwise wait for the server's delayed ACK (about 40 ms a
    // message: half the throughput on a local sink). Implicit TLS keeps nodemailer's own.
    getSocket:
      s.security === 'tls'
        ? undefined
        : (options, callback) => {
            let done = false;
            const finish = (err, result) => {
              if (!done) {
                done = true;
                socket.setTimeout(0);
                callback(err, result);
              }
            };
            const socket = net.connect({ host: s.host, port: s.port }, () => {
              socket.setNoDelay(true);
              finish(null, { connection: socket });
            });
            socket.setTimeout(s.timeoutMs, () => {
              const err = new Error(`connection to ${s.host}:${s.port} timed out`);
              err.code = 'ETIMEDOUT';
              socket.destroy();
              finish(err);
            });
            socket.once('error', (err) => {
              err.code = err.code === 'ECONNREFUSED' ? 'ECONNREFUSED' : err.code || 'ECONNECTION';
              finish(err);
            });
          },
  });
}

function messageId(s, campaign, recipient) {
  return `<maha.c${campaign}.r${recipient}@${s.messageIdDomain}>`;
}

// The server refused for now (4xx) or the connection failed: worth trying again.
// A 5xx refuses this recipient for good; anything else (bad credentials, a
// malformed message) is not the recipient's and ends the attempt at the job.
const CONNECTION_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ECONNRESET', 'ECONNREFUSED']);

function classify(err) {
  if (err.code === 'EAUTH' || err.code === 'ETLS' || err.code === 'ECONFIG') return 'job';
  const code = Number(err.responseCode);
  if (code >= 400 && code < 500) return 'temporary';
  if (code >= 500 && code < 600) return 'permanent';
  if (CONNECTION_CODES.has(err.code)) return 'temporary';
  return 'job';
}

function backoffMs(s, tries) {
  const exp = Math.min(s.retryMaxMs, s.retryBaseMs * 2 ** (tries - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2)); // jitter: retries of many messages spread out
}

// At most `rate` messages per second for one campaign (0: no limit). One
// campaign is held by one worker at a time (its lease), so this is per campaign.
class Throttle {
  constructor(rate) {
    this.interval = rate > 0 ? 1000 / rate : 0;
    this.next = 0;
  }

  async take() {
    if (!this.interval) return;
    const now = Date.now();
    const at = Math.max(now, this.next);
    this.next = at + this.interval;
    if (at > now) await sleep(at - now);
  }
}

function compose(s, campaign, row) {
  return {
    from: s.from,
    to: row.address,
    subject: campaign.name,
    messageId: row.message_id,
    headers: { 'X-Maha-Campaign': String(campaign.id), 'X-Maha-Recipient': String(row.recipient) },
    text: `Hello ${row.address},\n\nthis is "${campaign.name}" (campaign ${campaign.id}).\n`,
  };
}

module.exports = { settings, describe, transport, messageId, classify, backoffMs, Throttle, compose };
