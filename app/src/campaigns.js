'use strict';
// Campaign rows and progress messages, shared by the web server and the worker.

const PUBLIC_COLUMNS = `id, name, recipients, status, sent, attempts, result, created_at, started_at, finished_at`;

// The row with its owner (user_id), which view() leaves out.
async function find(db, id) {
  const { rows } = await db.query(`select ${PUBLIC_COLUMNS}, user_id from campaigns where id = $1`, [id]);
  return rows[0] || null;
}

function percent(sent, total) {
  return total > 0 ? Math.floor((sent * 100) / total) : 0;
}

// The JSON a client sees, over HTTP and WebSocket alike.
function view(row) {
  return {
    id: Number(row.id),
    name: row.name,
    recipients: row.recipients,
    status: row.status,
    sent: row.sent,
    percent: percent(row.sent, row.recipients),
    attempts: row.attempts,
    result: row.result,
    created_at: row.created_at,
    started_at: row.started_at,
    finished_at: row.finished_at,
  };
}

function progressMessage(id, status, sent, total) {
  return { type: 'progress', campaign: Number(id), status, sent, total, percent: percent(sent, total) };
}

module.exports = { find, view, progressMessage };
