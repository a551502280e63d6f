'use strict';
// Serves public/ at /static/ for development and tests; in production nginx
// serves the same directory itself with long cache headers, or the CDN does.
// A release build gives each asset a content-hashed name (public/manifest.json):
// pages name those, so a new release never meets a stale cached copy.

const fs = require('fs');
const path = require('path');
const config = require('./config');

const PUBLIC_DIR = path.resolve(__dirname, '..', 'public');
const HASHED = /\.[0-9a-f]{12}(\.[^./]+)?$/;

function readManifest() {
  try {
    return JSON.parse(fs.readFileSync(path.join(PUBLIC_DIR, 'manifest.json'), 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return {}; // a source checkout: names as they are
    throw err; // a release with a broken manifest must not start
  }
}
const manifest = readManifest();

// The URL a page uses for public/<name>: its hashed name, under the asset base.
function assetUrl(name) {
  return `${config.assetBase}/static/${manifest[name] || name}`;
}
const TYPES = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

// Resolves to true when the file was sent, false when there is none.
async function serve(res, relative) {
  let file;
  let stat;
  try {
    file = path.resolve(PUBLIC_DIR, decodeURIComponent(relative));
    if (!file.startsWith(PUBLIC_DIR + path.sep)) return false; // no ../ out of public/
    stat = await fs.promises.stat(file);
  } catch {
    return false; // malformed escapes, missing file
  }
  if (!stat.isFile()) return false;
  res.writeHead(200, {
    'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
    'Content-Length': stat.size,
    'Cache-Control': HASHED.test(file) ? 'public, max-age=31536000, immutable' : 'public, max-age=300',
  });
  await new Promise((resolve, reject) => {
    fs.createReadStream(file).on('error', reject).on('end', resolve).pipe(res);
  });
  return true;
}

module.exports = { serve, assetUrl, PUBLIC_DIR };
