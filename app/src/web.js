'use strict';
// The web server: a page, a small JSON API that starts campaigns, /health
// for the load balancer, and /ws where browsers follow a campaign's progress
// (relayed from the workers' Redis pub/sub messages).
//
// In production nginx serves public/ at /static/ and proxies the rest here.

const http = require('http');
const { setTimeout: sleep } = require('timers/promises');
const { WebSocketServer } = require('ws');
const config = require('./config');
const log = require('./log');
const db = require('./db').connect();
const redisClients = require('./redis');
const { JobQueue } = require('./queue');
const campaigns = require('./campaigns');
const staticFiles = require('./static');
const page = require('./page');

const MAX_BODY_BYTES = 16 * 1024;
const MAX_RECIPIENTS = 100000;

const redis = redisClients.connect('web', { failFast: true });
const subscriber = redisClients.connect('web-subscriber');
const queue = new JobQueue(redis);

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(JSON.stringify(body));
}

// --- health ------------------------------------------------------------------

// Resolves to 'ok' or a short reason; never waits longer than `ms`.
async function probe(check, ms) {
  const done = new AbortController();
  const timeout = sleep(ms, undefined, { signal: done.signal }).then(() => {
    throw new Error(`no answer within ${ms} ms`);
  });
  try {
    await Promise.race([check(), timeout]);
    return 'ok';
  } catch (err) {
    return err.message || String(err);
  } finally {
    done.abort(); // cancel the timer; race() already handles its rejection
  }
}

async function health(req, res) {
  const [postgres, redisState] = await Promise.all([
    probe(() => db.query('select 1'), 2000),
    probe(() => redis.ping(), 1000),
  ]);
  const checks = { postgres, redis: redisState };
  const down = Object.keys(checks).filter((name) => checks[name] !== 'ok');
  const body = { status: down.length ? 'unavailable' : 'ok', release: config.release, server: config.serverName, checks };
  if (down.length) {
    body.down = down;
    log.warn('health check failed', { down, checks });
  }
  sendJson(res, down.length ? 503 : 200, body);
}

// --- campaigns API -----------------------------------------------------------

async function readJson(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
}

function validateCampaign(body) {
  const name = typeof body?.name === 'string' ? body.name.trim() : '';
  if (name.length < 1 || name.length > 200) throw new HttpError(400, 'name must be 1 to 200 characters');
  const recipients = body.recipients;
  if (!Number.isInteger(recipients) || recipients < 1 || recipients > MAX_RECIPIENTS) {
    throw new HttpError(400, `recipients must be an integer from 1 to ${MAX_RECIPIENTS}`);
  }
  return { name, recipients };
}

async function createCampaign(req, res) {
  const { name, recipients } = validateCampaign(await readJson(req));
  const { rows } = await db.query('insert into campaigns (name, recipients) values ($1, $2) returning id', [
    name,
    recipients,
  ]);
  const id = Number(rows[0].id);
  // The row is committed before the job exists, so a worker never sees an
  // id it cannot find; if the queue is down the campaign is marked failed.
  try {
    await queue.enqueue(id);
  } catch {
    await db.query(
      `update campaigns set status = 'failed', result = '{"error": "queue unavailable"}' where id = $1`,
      [id],
    );
    throw new HttpError(503, 'job queue unavailable, campaign not started');
  }
  log.info('campaign created', { campaign: id, recipients });
  sendJson(res, 202, { id });
}

async function showCampaign(res, id) {
  const row = await campaigns.find(db, id);
  if (!row) throw new HttpError(404, `no campaign ${id}`);
  sendJson(res, 200, campaigns.view(row));
}

// --- routing -----------------------------------------------------------------

async function route(req, res) {
  const { pathname } = new URL(req.url, 'http://localhost');
  const method = req.method;
  if (pathname === '/health' && (method === 'GET' || method === 'HEAD')) return health(req, res);
  if (pathname === '/' && method === 'GET') return page.render(res);
  if (pathname === '/api/campaigns' && method === 'POST') return createCampaign(req, res);
  const match = /^\/api\/campaigns\/(\d{1,18})$/.exec(pathname);
  if (match && method === 'GET') return showCampaign(res, match[1]);
  if (pathname.startsWith('/static/') && config.serveStatic && (method === 'GET' || method === 'HEAD')) {
    if (await staticFiles.serve(res, pathname.slice('/static/'.length))) return undefined;
  }
  throw new HttpError(404, 'not found');
}

// Errors meaning a dependency is unreachable (the client may retry), not a bug.
const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', '57P01', '57P03', '53300']);
const UNAVAILABLE_MESSAGES = /timeout exceeded when trying to connect|Connection terminated|isn't writeable|Connection is closed/;

function isUnavailable(err) {
  return UNAVAILABLE_CODES.has(err.code) || UNAVAILABLE_MESSAGES.test(err.message || '');
}

let stopping = false; // set on SIGTERM: answers close their connection (see shutdown)

async function handle(req, res) {
  // A keep-alive connection (nginx's pool) must not carry another request to a process
  // that is going away: the next one opens a new connection, to the new process.
  if (stopping) res.setHeader('Connection', 'close');
  // Which app server and release answered: visible through the load balancer.
  res.setHeader('X-Maha-Server', config.serverName);
  res.setHeader('X-Maha-Release', config.release);
  try {
    await route(req, res);
  } catch (err) {
    if (res.headersSent) return res.destroy();
    if (err instanceof HttpError) return sendJson(res, err.status, { error: err.message });
    log.error('request failed', { method: req.method, path: req.url.split('?')[0], ...log.errorFields(err) });
    const unavailable = isUnavailable(err);
    return sendJson(res, unavailable ? 503 : 500, { error: unavailable ? 'service unavailable' : 'internal error' });
  }
  return undefined;
}

// --- WebSocket progress relay -------------------------------------------------

const followers = new Map(); // campaign id -> Set of sockets; '*' follows every campaign

function follow(key, ws) {
  if (!followers.has(key)) followers.set(key, new Set());
  followers.get(key).add(ws);
  ws.on('close', () => {
    const set = followers.get(key);
    set.delete(ws);
    if (set.size === 0) followers.delete(key);
  });
}

function relay(channel, text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return log.warn('ignored malformed progress message', { channel });
  }
  for (const key of [String(message.campaign), '*']) {
    for (const ws of followers.get(key) || []) {
      if (ws.readyState === ws.OPEN) ws.send(text);
    }
  }
  return undefined;
}

async function onConnection(ws, campaign) {
  ws.isAlive = true;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('error', (err) => log.warn('websocket error', log.errorFields(err)));
  follow(campaign || '*', ws);
  ws.send(JSON.stringify({ type: 'hello', server: config.serverName, release: config.release, campaign }));
  if (!campaign) return;
  // A snapshot first, so a client that connects late still sees where it is.
  try {
    const row = await campaigns.find(db, campaign);
    const snapshot = row ? { type: 'snapshot', ...campaigns.view(row) } : { type: 'error', error: 'no such campaign' };
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(snapshot));
  } catch (err) {
    log.warn('websocket snapshot failed', { campaign, ...log.errorFields(err) });
  }
}

function rejectUpgrade(socket, status, reason) {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

function attachWebSockets(server) {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4096 });
  wss.on('headers', (headers) => {
    headers.push(`X-Maha-Server: ${config.serverName}`, `X-Maha-Release: ${config.release}`);
  });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname !== '/ws') return rejectUpgrade(socket, 404, 'Not Found');
    const campaign = url.searchParams.get('campaign');
    if (campaign !== null && !/^\d{1,18}$/.test(campaign)) return rejectUpgrade(socket, 400, 'Bad Request');
    return wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, campaign));
  });
  // Drop browsers that vanished without closing (sleeping laptops, dead NAT entries).
  const heartbeat = setInterval(() => {
    for (const ws of wss.clients) {
      if (!ws.isAlive) ws.terminate();
      else {
        ws.isAlive = false;
        ws.ping();
      }
    }
  }, 30000);
  heartbeat.unref();
  return wss;
}

// --- process ---------------------------------------------------------------------

// A graceful stop: no new connections (systemd's socket keeps queueing them for the next
// process), requests in flight finish, keep-alive connections close as soon as they are
// idle, WebSocket clients are told to reconnect.
function shutdown(server, wss) {
  let started = false;
  return (signal) => {
    if (started) return;
    started = true;
    stopping = true;
    log.info('stopping', { signal });
    setTimeout(() => process.exit(0), 5000).unref(); // never outlive systemd's stop timeout
    for (const ws of wss.clients) ws.close(1001, 'server restarting');
    server.close(async () => {
      await Promise.allSettled([db.end(), redis.quit(), subscriber.quit()]);
      log.info('stopped');
      process.exit(0);
    });
    // Node 18 leaves idle keep-alive connections open on close(): close them now and as
    // each request in flight ends.
    if (server.closeIdleConnections) {
      server.closeIdleConnections();
      setInterval(() => server.closeIdleConnections(), 50).unref();
    }
  };
}

// The listening socket systemd passes (maha-web.socket, fd 3), if any: systemd keeps it
// open while the service restarts, so connections wait for the new process instead of
// being refused. Without one (tests, a developer's machine) the server binds itself.
function listenOn() {
  const fromSystemd = process.env.LISTEN_FDS === '1' && Number(process.env.LISTEN_PID) === process.pid;
  return fromSystemd ? { fd: 3 } : { port: config.port, host: config.host };
}

// Until Redis is connected and the PostgreSQL pool holds its connections (at most
// STARTUP_WAIT_MS): requests that queued on systemd's socket during a restart then meet a
// process able to answer them at once, not 503s while connections are still being made.
const STARTUP_WAIT_MS = 5000;

async function dependenciesReady() {
  const redisReady = redis.status === 'ready' ? Promise.resolve() : new Promise((resolve) => redis.once('ready', resolve));
  const warm = Array.from({ length: db.options.max || 1 }, () => db.query('select 1'));
  const postgres = Promise.all(warm).catch(() => undefined);
  const timer = new AbortController();
  await Promise.race([
    Promise.all([redisReady, postgres]),
    sleep(STARTUP_WAIT_MS, undefined, { signal: timer.signal }).catch(() => undefined),
  ]);
  timer.abort();
}

async function main() {
  subscriber.subscribe(redisClients.PROGRESS_CHANNEL).catch((err) => log.warn('subscribe failed', log.errorFields(err)));
  subscriber.on('message', relay);
  const server = http.createServer((req, res) => {
    handle(req, res);
  });
  server.keepAliveTimeout = 65000; // longer than the load balancer's idle timeout (60 s on an ELB)
  const wss = attachWebSockets(server);
  const stop = shutdown(server, wss);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await dependenciesReady();
  const where = listenOn();
  server.listen(where, () => {
    log.info('web listening', {
      host: config.host,
      port: server.address().port,
      socket: where.fd === undefined ? 'own' : 'systemd',
      release: config.release,
      server: config.serverName,
      postgres: config.describePostgres(),
      redis: config.describeRedis(),
    });
  });
}

main().catch((err) => {
  log.error('web server failed to start', log.errorFields(err));
  process.exit(1);
});
