'use strict';
// Accounts: bcrypt password hashes (bcryptjs: pure JS, so release builds need no compiler)
// and the sign-in rate limit, counted in the cache Redis per account and per client address.

const bcrypt = require('bcryptjs');
const config = require('./config');

const EMAIL = /^[^\s@]+@[^\s@]+$/;
const MIN_PASSWORD = 8;
const MAX_PASSWORD_BYTES = 72; // bcrypt ignores whatever comes after the 72nd byte

// Compared against when the address is unknown, so an unknown address takes as long to
// refuse as a wrong password (no telling which addresses have accounts by timing).
const DUMMY_HASH = bcrypt.hashSync('not a password of anyone', config.bcryptCost);

class InputError extends Error {}

function credentials(body) {
  const email = typeof body?.email === 'string' ? body.email.trim() : '';
  const password = typeof body?.password === 'string' ? body.password : '';
  if (email.length > 254 || !EMAIL.test(email)) throw new InputError('email must be an address');
  if (password.length < MIN_PASSWORD || Buffer.byteLength(password) > MAX_PASSWORD_BYTES) {
    throw new InputError(`password must be ${MIN_PASSWORD} characters to ${MAX_PASSWORD_BYTES} bytes`);
  }
  return { email, password };
}

// The new user, or null when the address has an account already.
async function create(db, { email, password }) {
  const hash = await bcrypt.hash(password, config.bcryptCost); // async: yields to other requests
  const { rows } = await db.query(
    `insert into users (email, password_hash) values ($1, $2)
     on conflict ((lower(email))) do nothing returning id, email`,
    [email, hash],
  );
  return rows[0] || null;
}

// The user whose password this is, or null.
async function authenticate(db, { email, password }) {
  const { rows } = await db.query('select id, email, password_hash from users where lower(email) = lower($1)', [email]);
  const matches = await bcrypt.compare(password, rows[0] ? rows[0].password_hash : DUMMY_HASH);
  return rows[0] && matches ? { id: rows[0].id, email: rows[0].email } : null;
}

// -- rate limit: SIGNIN_MAX_FAILURES failed sign-ins per account, SIGNIN_MAX_FAILURES_PER_IP per
// client address, in a window of SIGNIN_WINDOW_SECONDS from the first attempt -----------------

function limitKeys(email, ip) {
  return [
    [`rl:signin:account:${email.toLowerCase()}`, config.signinMaxFailures],
    [`rl:signin:ip:${ip}`, config.signinMaxFailuresPerIp],
  ];
}

// Counts this attempt before the password is checked, so guesses sent in parallel cannot all
// slip in under the limit; a success takes its count back (recordSuccess). The seconds until
// sign-in is allowed again, 0 when this attempt may go on.
async function attempt(redis, email, ip) {
  const keys = limitKeys(email, ip);
  const pipeline = redis.multi();
  // The window starts at the first attempt (NX) and INCR keeps the key's TTL.
  for (const [key] of keys) pipeline.set(key, 0, 'EX', config.signinWindowSeconds, 'NX').incr(key).ttl(key);
  const replies = (await pipeline.exec()).map(([err, value]) => {
    if (err) throw err;
    return value;
  });
  let wait = 0;
  keys.forEach(([, max], i) => {
    const [count, ttl] = [replies[3 * i + 1], replies[3 * i + 2]];
    if (count > max) wait = Math.max(wait, ttl > 0 ? ttl : 1);
  });
  return wait;
}

// Never recreates an expired counter (a DECR would, with no TTL: a key kept for good).
const UNCOUNT = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('decr', KEYS[1]) end return 0";

// A success forgives the account's failures, and the address's count loses only this
// attempt: one account an attacker owns must not reset the count for guesses at others.
async function recordSuccess(redis, email, ip) {
  const [[account], [address]] = limitKeys(email, ip);
  await Promise.all([redis.del(account), redis.eval(UNCOUNT, 1, address)]);
}

module.exports = { InputError, credentials, create, authenticate, attempt, recordSuccess };
