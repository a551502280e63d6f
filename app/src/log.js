'use strict';
// One JSON line per event on stdout (info) or stderr (warn/error): journald
// stores each line as one entry and keeps the fields greppable. Callers pass
// only fields that are safe to print; config.js describes connection targets
// without their passwords.

const os = require('os');

const component = process.env.MAHA_LOG_COMPONENT || require('path').basename(process.argv[1] || 'maha', '.js');

function write(level, msg, fields) {
  const line = JSON.stringify({ level, component, msg, pid: process.pid, ...fields });
  (level === 'info' ? process.stdout : process.stderr).write(line + '\n');
}

function errorFields(err) {
  if (!err) return {};
  return { error: err.message || String(err), code: err.code };
}

module.exports = {
  info: (msg, fields = {}) => write('info', msg, fields),
  warn: (msg, fields = {}) => write('warn', msg, fields),
  error: (msg, fields = {}) => write('error', msg, fields),
  errorFields,
  hostname: os.hostname(),
};
