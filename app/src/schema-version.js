'use strict';
// Prints the newest migration version applied to the database ("000" when none):
// what `invoke rollback` compares with the migrations a target release ships.
// Reads only; applies nothing.
//
//   node src/schema-version.js

const { Client } = require('pg');
const config = require('./config');

async function main() {
  const client = new Client(config.postgres());
  await client.connect();
  try {
    const { rows } = await client.query(
      "select coalesce(max(version), '000') as version from schema_migrations",
    ).catch((err) => {
      if (err.code === '42P01') return { rows: [{ version: '000' }] }; // never migrated
      throw err;
    });
    process.stdout.write(`${rows[0].version}\n`);
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  process.stderr.write(`schema version unreadable: ${err.message}\n`);
  process.exit(1);
});
