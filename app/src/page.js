'use strict';
// The one HTML page: sign up or in, start a campaign and watch its progress live, upload
// private files and download them.

const config = require('./config');
const { assetUrl } = require('./static');

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

function render(res) {
  const html = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Maha campaigns</title>
  <link rel="stylesheet" href="${escape(assetUrl('app.css'))}">
</head>
<body>
  <main>
    <h1>Maha campaigns</h1>
    <form id="account-form" hidden>
      <label>Email <input name="email" type="email" required maxlength="254" autocomplete="username"></label>
      <label>Password <input name="password" type="password" required minlength="8" autocomplete="current-password"></label>
      <p><button type="submit" value="signin">Sign in</button> <button type="submit" value="signup">Sign up</button></p>
    </form>
    <p id="account" hidden>Signed in as <b id="account-email"></b> <button id="signout" type="button">Sign out</button></p>
    <p id="account-error" role="alert"></p>
    <form id="campaign-form" hidden>
      <label>Name <input name="name" required maxlength="200" value="Spring newsletter"></label>
      <label>Recipients <input name="recipients" type="number" min="1" max="100000" value="10000" required></label>
      <button type="submit">Send campaign</button>
    </form>
    <section id="progress" hidden>
      <p id="progress-label"></p>
      <progress id="progress-bar" max="100" value="0"></progress>
    </section>
    <section id="uploads" hidden>
      <h2>Your files</h2>
      <form id="upload-form">
        <label>File <input name="file" type="file" required></label>
        <button type="submit">Upload</button>
      </form>
      <p id="upload-status" role="status"></p>
      <ul id="upload-list"></ul>
    </section>
  </main>
  <footer>Served by <b>${escape(config.serverName)}</b>, release <code>${escape(config.release)}</code></footer>
  <script src="${escape(assetUrl('app.js'))}" defer></script>
</body>
</html>
`;
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(html);
}

module.exports = { render };
