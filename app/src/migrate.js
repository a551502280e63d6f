'use strict';
// Applies migrations/NNN_name.sql in order, each once, each in its own
// transaction together with its row in schema_migrations. Every app server
// may run this during a deploy: a PostgreSQL advisory lock lets one host
// apply while the others wait and then find nothing left to do.
//
//   node src/migrate.js        exit 0 when the schema is current

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Client } = require('pg');
const config = require('./config');
const log = require('./log');

const MIGRATIONS_DIR = path.join(__dirname, '..', 'migrations');
const FILE_PATTERN = /^(\d{3})_([a-z0-9_]+)\.sql$/;
const LOCK_KEY = 0x4d414841; // "MAHA": one lock for every host migrating this database
// A first line `-- maha: breaking` marks a migration the previous release cannot run
// against (a drop, a rename): refused unless MAHA_ALLOW_BREAKING=1 (see README.md).
const BREAKING = /^--\s*maha:\s*breaking\b/;

function readMigrations() {
  return fs
    .readdirSync(MIGRATIONS_DIR)
    .filter((file) => FILE_PATTERN.test(file))
    .sort()
    .map((file) => {
      const [, version, name] = FILE_PATTERN.exec(file);
      const sql = fs.readFileSync(path.join(MIGRATIONS_DIR, file), 'utf8');
      const checksum = crypto.createHash('sha256').update(sql).digest('hex');
      return { version, name, sql, checksum, breaking: BREAKING.test(sql) };
    });
}

async function appliedChecksums(client) {
  await client.query(`create table if not exists schema_migrations (
    version    text primary key,
    name       text not null,
    checksum   text not null,
    applied_at timestamptz not null default now())`);
  const { rows } = await client.query('select version, checksum from schema_migrations');
  return new Map(rows.map((row) => [row.version, row.checksum]));
}

async function apply(client, migration) {
  await client.query('begin');
  try {
    await client.query(migration.sql);
    await client.query('insert into schema_migrations (version, name, checksum) values ($1, $2, $3)', [
      migration.version,
      migration.name,
      migration.checksum,
    ]);
    await client.query('commit');
  } catch (err) {
    await client.query('rollback');
    throw err;
  }
}

async function migrate(client) {
  const applied = await appliedChecksums(client);
  const migrations = readMigrations();
  // Checked before any is applied: a refused release leaves the schema as it was.
  const breaking = migrations.filter((m) => m.breaking && !applied.has(m.version));
  if (breaking.length && process.env.MAHA_ALLOW_BREAKING !== '1') {
    const names = breaking.map((m) => `${m.version}_${m.name}`).join(', ');
    throw new Error(
      `migration ${names} is marked breaking: hosts still on the old release would fail during the roll; ` +
        'expand then contract (app/README.md), or release with --allow-breaking',
    );
  }
  let count = 0;
  for (const migration of migrations) {
    const known = applied.get(migration.version);
    if (known === migration.checksum) continue;
    // An applied migration is history: editing it would leave databases
    // that ran the old text silently different from new ones.
    if (known) throw new Error(`migration ${migration.version}_${migration.name} changed after it was applied`);
    const started = Date.now();
    await apply(client, migration);
    count += 1;
    log.info('migration applied', { version: migration.version, name: migration.name, ms: Date.now() - started });
  }
  return { applied: count, total: applied.size + count };
}

async function main() {
  // No statement timeout: a migration may rewrite a large table. The lock
  // timeout bounds how long we queue behind another host or a busy table.
  const client = new Client({ ...config.postgres(), statement_timeout: 0 });
  await client.connect();
  try {
    await client.query("set lock_timeout = '5min'");
    await client.query('select pg_advisory_lock($1)', [LOCK_KEY]);
    const result = await migrate(client);
    log.info('migrations complete', { database: config.describePostgres(), ...result });
  } finally {
    await client.end(); // ending the session also releases the advisory lock
  }
}

main().catch((err) => {
  log.error('migrations failed', log.errorFields(err));
  process.exit(1);
});
