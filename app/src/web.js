'use strict';
// The web server: a page, a small JSON API that starts campaigns, /health
// for the load balancer, and /ws where browsers follow a campaign's progress
// (relayed from the workers' Redis pub/sub messages). Campaigns belong to the user who
// started them: the API and /ws need a session (sessions.js, users.js).
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
const users = require('./users');
const uploads = require('./uploads');
const { Sessions, csrfMatches, originAllowed } = require('./sessions');

const MAX_BODY_BYTES = 16 * 1024;
const MAX_RECIPIENTS = 100000;

const redis = redisClients.connect('web', { failFast: true });
const subscriber = redisClients.connect('web-subscriber');
const queue = new JobQueue(redis);
// Sessions and sign-in counts live in the cache instance, not the queue's.
const cache = redisClients.connect('web-sessions', { failFast: true, url: config.redisUrl });
const sessions = new Sessions(cache);

// Requests that change something: the ones a forged cross-site form or fetch could send.
const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

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

async function createCampaign(req, res, session) {
  const { name, recipients } = validateCampaign(await readJson(req));
  const { rows } = await db.query('insert into campaigns (name, recipients, user_id) values ($1, $2, $3) returning id', [
    name,
    recipients,
    session.user.id,
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

// Someone else's campaign answers as one that does not exist: ids are not secrets, but
// whose campaigns exist is nobody else's business.
async function showCampaign(res, id, session) {
  const row = await campaigns.find(db, id);
  if (!row || Number(row.user_id) !== session.user.id) throw new HttpError(404, `no campaign ${id}`);
  sendJson(res, 200, campaigns.view(row));
}

// --- private uploads (uploads.js) ---------------------------------------------------------

function uploadsEnabled() {
  if (!uploads.enabled()) throw new HttpError(503, 'uploads are not configured on this server (no MAHA_UPLOADS_BUCKET)');
}

// The upload `id` if it is the session user's: 404 when there is none, 403 when it is another's.
async function ownUpload(id, session) {
  const row = await uploads.find(db, id);
  if (!row) throw new HttpError(404, `no upload ${id}`);
  if (Number(row.user_id) !== session.user.id) throw new HttpError(403, 'this upload is not yours');
  return row;
}

async function createUpload(req, res, session) {
  uploadsEnabled();
  let input;
  try {
    input = uploads.declared(await readJson(req));
  } catch (err) {
    if (err instanceof uploads.InputError) throw new HttpError(err.status, err.message);
    throw err;
  }
  const key = uploads.newKey(session.user.id);
  const put = await uploads.putUrl(key, input); // signed before the row: no row without a URL
  const row = await uploads.insert(db, session.user.id, key, input);
  log.info('upload presigned', { upload: Number(row.id), user: session.user.id, size: input.size });
  sendJson(res, 201, { id: Number(row.id), ...put });
}

// The browser says its PUT finished: believed only once S3 has the object, with the size and
// type that were signed (a HEAD through this server's endpoint).
async function completeUpload(res, id, session) {
  uploadsEnabled();
  const row = await ownUpload(id, session);
  const found = await uploads.head(row.object_key);
  if (!found) throw new HttpError(409, 'the file has not been uploaded (no object yet)');
  if (found.size !== Number(row.size) || (found.type && found.type !== row.content_type)) {
    await uploads.remove(row.object_key); // not what was declared: gone, upload again
    log.warn('upload refused: not as declared', { upload: Number(row.id), size: found.size, declared: Number(row.size) });
    throw new HttpError(409, `the stored file (${found.size} bytes, ${found.type || 'no type'}) is not the declared one`);
  }
  const stored = await uploads.markStored(db, row.id);
  sendJson(res, 200, uploads.view(stored));
}

async function listUploads(res, session) {
  uploadsEnabled();
  const rows = await uploads.listStored(db, session.user.id);
  sendJson(res, 200, { uploads: rows.map(uploads.view) });
}

async function downloadUpload(res, id, session) {
  uploadsEnabled();
  const row = await ownUpload(id, session);
  if (row.status !== 'stored') throw new HttpError(409, 'the upload is not complete');
  const location = await uploads.downloadUrl(row);
  res.writeHead(302, { Location: location, 'Cache-Control': 'no-store', 'Content-Length': 0 });
  res.end();
}

async function deleteUpload(res, id, session) {
  uploadsEnabled();
  const row = await ownUpload(id, session);
  await uploads.remove(row.object_key); // S3 answers 204 for a key that is not there
  await uploads.deleteRow(db, row.id);
  log.info('upload deleted', { upload: Number(row.id), user: session.user.id });
  res.writeHead(204).end();
}

// --- users and sessions --------------------------------------------------------

// Only nginx reaches us over loopback in production (HOST=127.0.0.1): believe its X-Real-IP
// there (the client behind the load balancer), and the peer's address otherwise.
const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);

function clientIp(req) {
  const peer = req.socket.remoteAddress || '';
  const forwarded = req.headers['x-real-ip'];
  return LOOPBACK.has(peer) && typeof forwarded === 'string' && forwarded ? forwarded : peer;
}

async function startSession(req, res, status, user, previous) {
  if (previous) await sessions.destroy(req, previous); // a fresh id on every sign-in
  const { session, setCookie } = await sessions.create(req, user);
  res.setHeader('Set-Cookie', setCookie);
  sendJson(res, status, { user: session.user, csrf: session.csrf });
}

async function signUp(req, res) {
  let input;
  try {
    input = users.credentials(await readJson(req));
  } catch (err) {
    if (err instanceof users.InputError) throw new HttpError(400, err.message);
    throw err;
  }
  const user = await users.create(db, input);
  if (!user) throw new HttpError(409, 'an account with this email exists');
  log.info('user signed up', { user: Number(user.id) });
  return startSession(req, res, 201, user, await sessions.find(req));
}

async function signIn(req, res) {
  const body = await readJson(req);
  const email = typeof body?.email === 'string' ? body.email.trim() : '';
  const password = typeof body?.password === 'string' ? body.password : '';
  if (!email || !password || email.length > 254) throw new HttpError(400, 'email and password are required');
  const ip = clientIp(req);
  // Refused before the password is looked at: once blocked, guessing right gains nothing.
  const wait = await users.attempt(cache, email, ip);
  if (wait > 0) {
    res.setHeader('Retry-After', String(wait));
    throw new HttpError(429, 'too many failed sign-ins, try again later');
  }
  const user = await users.authenticate(db, { email, password });
  if (!user) {
    log.warn('sign-in refused', { ip }); // not the address: logs are no list of accounts
    throw new HttpError(401, 'wrong email or password');
  }
  await users.recordSuccess(cache, email, ip);
  return startSession(req, res, 200, user, await sessions.find(req));
}

async function signOut(req, res, session) {
  res.setHeader('Set-Cookie', await sessions.destroy(req, session));
  closeSessionSockets(new Set([session.id])); // this server's at once, the others' at their recheck
  res.writeHead(204).end();
}

function me(req, res, session) {
  sendJson(res, 200, { user: session.user, csrf: session.csrf });
}

// The API routes that need a signed-in user: the handler, or null.
function userRoute(method, pathname) {
  if (pathname === '/api/me' && method === 'GET') return me;
  if (pathname === '/api/signout' && method === 'POST') return signOut;
  if (pathname === '/api/campaigns' && method === 'POST') return createCampaign;
  const match = /^\/api\/campaigns\/(\d{1,18})$/.exec(pathname);
  if (match && method === 'GET') return (req, res, session) => showCampaign(res, match[1], session);
  if (pathname === '/api/uploads' && method === 'POST') return createUpload;
  if (pathname === '/api/uploads' && method === 'GET') return (req, res, session) => listUploads(res, session);
  const upload = /^\/api\/uploads\/(\d{1,18})(\/complete|\/download)?$/.exec(pathname);
  if (upload) {
    const [, id, action] = upload;
    if (action === '/complete' && method === 'POST') return (req, res, session) => completeUpload(res, id, session);
    if (action === '/download' && method === 'GET') {
      // Nobody signed in gets 403 for a file, as another user does (not 401).
      return Object.assign((req, res, session) => downloadUpload(res, id, session), { anonymous: 403 });
    }
    if (!action && method === 'DELETE') return (req, res, session) => deleteUpload(res, id, session);
  }
  return null;
}

// --- routing -----------------------------------------------------------------

async function route(req, res) {
  const { pathname } = new URL(req.url, 'http://localhost');
  const method = req.method;
  if (pathname === '/health' && (method === 'GET' || method === 'HEAD')) return health(req, res);
  if (pathname === '/' && method === 'GET') return page.render(res);
  if (pathname.startsWith('/static/') && config.serveStatic && (method === 'GET' || method === 'HEAD')) {
    if (await staticFiles.serve(res, pathname.slice('/static/'.length))) return undefined;
  }
  // CSRF, first line: a browser names the site a request came from.
  if (STATE_CHANGING.has(method) && !originAllowed(req)) throw new HttpError(403, 'request from another site refused');
  // No session yet, so no token to ask for: Origin and SameSite cookies guard these two.
  if (pathname === '/api/signup' && method === 'POST') return signUp(req, res);
  if (pathname === '/api/signin' && method === 'POST') return signIn(req, res);
  const handler = userRoute(method, pathname);
  if (!handler) throw new HttpError(404, 'not found');
  const session = await sessions.find(req);
  if (!session) throw new HttpError(handler.anonymous || 401, 'sign in first');
  res.setHeader('Set-Cookie', sessions.renewed(req, session)); // the cookie lasts as the session
  // CSRF, second line: the session's token, which another site's page cannot read.
  if (STATE_CHANGING.has(method) && !csrfMatches(session, req.headers['x-csrf-token'])) {
    throw new HttpError(403, 'missing or wrong X-CSRF-Token');
  }
  return handler(req, res, session);
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

// Sockets following one campaign (its owner's, checked at the upgrade), and sockets
// following every campaign of their user.
const byCampaign = new Map(); // campaign id -> Set of sockets
const byUser = new Map(); // user id -> Set of sockets
const SESSION_ENDED = 4401; // close code: signed out or expired, sign in again
let webSockets = null; // the server's WebSocketServer, once attached

// Sockets whose session id is in `ended` are closed: their user signed out (or the
// session expired), so nothing more of theirs may reach that socket.
function closeSessionSockets(ended) {
  for (const ws of webSockets ? webSockets.clients : []) {
    if (ended.has(ws.sessionId)) ws.close(SESSION_ENDED, 'session ended');
  }
}

async function recheckSessions() {
  if (!webSockets || webSockets.clients.size === 0) return;
  const ids = [...new Set([...webSockets.clients].map((ws) => ws.sessionId))];
  const alive = await sessions.alive(ids);
  closeSessionSockets(new Set(ids.filter((id) => !alive.has(id))));
}

function follow(map, key, ws) {
  if (!map.has(key)) map.set(key, new Set());
  map.get(key).add(ws);
  ws.on('close', () => {
    const set = map.get(key);
    set.delete(ws);
    if (set.size === 0) map.delete(key);
  });
}

// Campaign id -> promise of its owner's id (null: none, from a release before users). An
// owner never changes, so it is looked up once; holding the promise keeps a campaign's
// messages in order while the first lookup is still under way.
const owners = new Map();
const OWNERS_CACHED = 10000;

function ownerOf(campaign) {
  const id = String(campaign);
  if (!owners.has(id)) {
    if (owners.size >= OWNERS_CACHED) owners.delete(owners.keys().next().value); // the oldest
    const lookup = db.query('select user_id from campaigns where id = $1', [id]).then(
      ({ rows }) => {
        // No such campaign yet: not remembered, or asking for an id before it exists
        // would hide the campaign from its owner for good.
        if (!rows[0]) owners.delete(id);
        return rows[0] && rows[0].user_id !== null ? Number(rows[0].user_id) : null;
      },
      (err) => {
        owners.delete(id); // not known: ask again next time
        throw err;
      },
    );
    owners.set(id, lookup);
  }
  return owners.get(id);
}

function sendTo(sockets, text) {
  for (const ws of sockets || []) {
    if (ws.readyState === ws.OPEN) ws.send(text);
  }
}

function relay(channel, text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return log.warn('ignored malformed progress message', { channel });
  }
  sendTo(byCampaign.get(String(message.campaign)), text);
  if (byUser.size === 0) return undefined; // no owner to look up
  return ownerOf(message.campaign).then(
    (owner) => owner !== null && sendTo(byUser.get(owner), text),
    (err) => log.warn('progress not relayed: owner unknown', { campaign: message.campaign, ...log.errorFields(err) }),
  );
}

async function onConnection(ws, campaign, user, sessionId) {
  ws.isAlive = true;
  ws.sessionId = sessionId;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('error', (err) => log.warn('websocket error', log.errorFields(err)));
  if (campaign) follow(byCampaign, campaign, ws);
  else follow(byUser, user, ws);
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
  async function upgrade(req, socket, head) {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname !== '/ws') return rejectUpgrade(socket, 404, 'Not Found');
    const campaign = url.searchParams.get('campaign');
    if (campaign !== null && !/^\d{1,18}$/.test(campaign)) return rejectUpgrade(socket, 400, 'Bad Request');
    // Browsers send cookies on cross-site WebSocket upgrades: Origin tells them apart.
    if (!originAllowed(req)) return rejectUpgrade(socket, 403, 'Forbidden');
    const session = await sessions.find(req);
    if (!session) return rejectUpgrade(socket, 401, 'Unauthorized');
    if (campaign !== null && (await ownerOf(campaign)) !== session.user.id) {
      return rejectUpgrade(socket, 404, 'Not Found');
    }
    return wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, campaign, session.user.id, session.id));
  }
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy()); // a client gone while its session is read
    upgrade(req, socket, head).catch((err) => {
      log.warn('websocket upgrade failed', log.errorFields(err));
      if (socket.writable) rejectUpgrade(socket, 503, 'Service Unavailable');
    });
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
  // Redis unreachable: sockets stay open (the session cannot be read either way) and the
  // next round asks again.
  const recheck = setInterval(() => {
    recheckSessions().catch((err) => log.warn('sessions not rechecked', log.errorFields(err)));
  }, config.sessionRecheckMs);
  recheck.unref();
  webSockets = wss;
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
      await Promise.allSettled([db.end(), redis.quit(), cache.quit(), subscriber.quit()]);
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
  const ready = (client) => (client.status === 'ready' ? Promise.resolve() : new Promise((resolve) => client.once('ready', resolve)));
  const redisReady = Promise.all([ready(redis), ready(cache)]);
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
      uploads: uploads.describe(),
    });
  });
}

main().catch((err) => {
  log.error('web server failed to start', log.errorFields(err));
  process.exit(1);
});
