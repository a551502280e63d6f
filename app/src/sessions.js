'use strict';
// Sessions: an opaque random id in an HttpOnly cookie, the session itself server-side in
// the cache Redis as `sess:<id>` with a TTL. Nothing is signed, so there is no secret to
// keep: an id is only good while its key exists. Each session carries its CSRF token.

const crypto = require('crypto');
const config = require('./config');

const COOKIE = 'maha_session';
const ID_PATTERN = /^[A-Za-z0-9_-]{43}$/; // 32 random bytes, base64url

const key = (id) => `sess:${id}`;
const randomToken = () => crypto.randomBytes(32).toString('base64url');

function parseCookies(header) {
  const cookies = {};
  for (const part of (header || '').split(';')) {
    const at = part.indexOf('=');
    if (at > 0) cookies[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return cookies;
}

// Secure only when the client reached the load balancer over HTTPS (nginx passes
// X-Forwarded-Proto on), so the cookie still works over plain http on a developer's machine.
function cookie(req, value, maxAge) {
  const secure = req.headers['x-forwarded-proto'] === 'https' ? '; Secure' : '';
  return `${COOKIE}=${value}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure}`;
}

class Sessions {
  constructor(redis) {
    this.redis = redis;
  }

  // A new session for `user`: the Set-Cookie value and the session.
  async create(req, user) {
    const id = randomToken();
    const session = {
      id,
      user: { id: Number(user.id), email: user.email },
      csrf: randomToken(),
      since: Date.now(),
    };
    await this.redis.set(key(id), JSON.stringify(session), 'EX', config.sessionTtlSeconds);
    return { session, setCookie: cookie(req, id, config.sessionTtlSeconds) };
  }

  // The request's session, or null (no cookie, a malformed one, expired, or past its
  // maximum age). Finding it renews it: GETEX moves its expiry to SESSION_TTL_SECONDS
  // from now, never past the maximum age.
  async find(req) {
    const id = parseCookies(req.headers.cookie)[COOKIE];
    if (!id || !ID_PATTERN.test(id)) return null;
    const text = await this.redis.getex(key(id), 'EX', config.sessionTtlSeconds);
    if (!text) return null;
    const session = JSON.parse(text);
    const left = Math.floor((session.since + config.sessionMaxAgeSeconds * 1000 - Date.now()) / 1000);
    if (!session.since || left <= 0) {
      await this.redis.del(key(id)); // too old (or from before the maximum age existed)
      return null;
    }
    if (left < config.sessionTtlSeconds) await this.redis.expire(key(id), left);
    return session;
  }

  // The Set-Cookie value that keeps the browser's cookie as long as the renewed session.
  renewed(req, session) {
    const left = Math.floor((session.since + config.sessionMaxAgeSeconds * 1000 - Date.now()) / 1000);
    return cookie(req, session.id, Math.max(0, Math.min(config.sessionTtlSeconds, left)));
  }

  // Which of these session ids still have their session (one EXISTS each, pipelined).
  async alive(ids) {
    if (ids.length === 0) return new Set();
    const answers = await this.redis.pipeline(ids.map((id) => ['exists', key(id)])).exec();
    return new Set(ids.filter((id, i) => !answers[i][0] && answers[i][1] === 1));
  }

  // The Set-Cookie value that clears the cookie.
  async destroy(req, session) {
    if (session) await this.redis.del(key(session.id));
    return cookie(req, '', 0);
  }
}

// Constant-time comparison of the X-CSRF-Token header with the session's token.
function csrfMatches(session, header) {
  if (!session || typeof header !== 'string') return false;
  const given = Buffer.from(header);
  const expected = Buffer.from(session.csrf);
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

// A browser names the page that sent a request in Origin; refuse one from another site.
// Hostnames only: nginx passes $host (no port) while Origin keeps the port the browser used.
function originAllowed(req) {
  const origin = req.headers.origin;
  if (origin === undefined) return true; // not a browser, or a same-origin GET
  try {
    const host = (req.headers.host || '').replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    return new URL(origin).hostname.replace(/^\[|\]$/g, '') === host;
  } catch {
    return false; // "null" (sandboxed frames, file:) and garbage
  }
}

module.exports = { Sessions, csrfMatches, originAllowed, COOKIE };
