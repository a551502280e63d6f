'use strict';
const { Pool } = require('pg');
const config = require('./config');
const log = require('./log');

function connect() {
  const pool = new Pool(config.postgres());
  // An idle client losing its connection (database restart) must not crash
  // the process; the pool replaces it on the next query.
  pool.on('error', (err) => log.warn('postgres idle client error', log.errorFields(err)));
  return pool;
}

module.exports = { connect };
