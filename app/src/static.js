'use strict';
// Serves public/ at /static/ for development and tests; in production nginx
// serves the same directory itself with long cache headers.

const fs = require('fs');
const path = require('path');

const PUBLIC_DIR = path.resolve(__dirname, '..', 'public');
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
    'Cache-Control': 'public, max-age=300',
  });
  await new Promise((resolve, reject) => {
    fs.createReadStream(file).on('error', reject).on('end', resolve).pipe(res);
  });
  return true;
}

module.exports = { serve, PUBLIC_DIR };
