'use strict';
// Signs up or in, starts a campaign through the API and follows its progress over
// WebSocket; uploads files straight to storage with the presigned PUT the API hands out,
// lists them and links their downloads. Every change sends the session's CSRF token
// (from /api/me or the sign-in).
(function () {
  const accountForm = document.getElementById('account-form');
  const account = document.getElementById('account');
  const accountEmail = document.getElementById('account-email');
  const accountError = document.getElementById('account-error');
  const form = document.getElementById('campaign-form');
  const section = document.getElementById('progress');
  const label = document.getElementById('progress-label');
  const bar = document.getElementById('progress-bar');
  const uploads = document.getElementById('uploads');
  const uploadForm = document.getElementById('upload-form');
  const uploadStatus = document.getElementById('upload-status');
  const uploadList = document.getElementById('upload-list');
  let csrf = null;

  function post(path, body) {
    return fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf || '' },
      body: JSON.stringify(body || {}),
    });
  }

  // Signed in (`me` is {user, csrf}) or not (null): which forms show.
  function signedIn(me) {
    csrf = me ? me.csrf : null;
    accountForm.hidden = Boolean(me);
    account.hidden = form.hidden = !me;
    accountEmail.textContent = me ? me.user.email : '';
    accountError.textContent = '';
    uploads.hidden = !me;
    uploadStatus.textContent = '';
    uploadList.replaceChildren();
    if (me) listUploads();
  }

  // --- private uploads: the file goes to storage, never through the app ----------------------

  async function listUploads() {
    const response = await fetch('/api/uploads');
    if (response.status === 503) {
      uploads.hidden = true; // uploads are not configured on this platform
      return;
    }
    if (!response.ok) return;
    const body = await response.json();
    uploadList.replaceChildren(
      ...body.uploads.map((item) => {
        const li = document.createElement('li');
        const link = document.createElement('a');
        link.href = `/api/uploads/${item.id}/download`; // a 302 to a short-lived signed URL
        link.textContent = item.name;
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.textContent = 'Delete';
        remove.addEventListener('click', async () => {
          await fetch(`/api/uploads/${item.id}`, { method: 'DELETE', headers: { 'X-CSRF-Token': csrf || '' } });
          listUploads();
        });
        li.append(link, ` (${item.size} bytes) `, remove);
        return li;
      }),
    );
  }

  uploadForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const file = uploadForm.elements.file.files[0];
    if (!file) return;
    uploadStatus.textContent = `Uploading ${file.name}…`;
    const type = file.type || 'application/octet-stream';
    const response = await post('/api/uploads', { name: file.name, type, size: file.size });
    const given = await response.json();
    if (!response.ok) {
      uploadStatus.textContent = given.error || `Request failed (${response.status})`;
      return;
    }
    // Exactly the headers that were signed; the browser adds the Content-Length itself.
    const put = await fetch(given.url, { method: given.method, headers: given.headers, body: file }).catch(() => null);
    if (!put || !put.ok) {
      uploadStatus.textContent = `The storage refused the file (${put ? put.status : 'unreachable'})`;
      return;
    }
    const done = await post(`/api/uploads/${given.id}/complete`);
    uploadStatus.textContent = done.ok ? `${file.name} uploaded` : (await done.json()).error;
    uploadForm.reset();
    listUploads();
  });

  accountForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(accountForm);
    const action = event.submitter && event.submitter.value === 'signup' ? 'signup' : 'signin';
    const response = await post(`/api/${action}`, { email: data.get('email'), password: data.get('password') });
    const body = await response.json();
    if (response.ok) signedIn(body);
    else accountError.textContent = body.error || `Request failed (${response.status})`;
  });

  document.getElementById('signout').addEventListener('click', async () => {
    await post('/api/signout');
    signedIn(null);
    section.hidden = true;
  });

  function show(message) {
    if (typeof message.percent !== 'number') return;
    bar.value = message.percent;
    label.textContent = `Campaign ${message.id || message.campaign}: ${message.status}, ${message.sent} sent (${message.percent}%)`;
  }

  function follow(id) {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws?campaign=${id}`);
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      show(message);
      if (message.status === 'done' || message.status === 'failed') socket.close();
    };
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const response = await post('/api/campaigns', { name: data.get('name'), recipients: Number(data.get('recipients')) });
    const body = await response.json();
    section.hidden = false;
    if (response.status === 401) signedIn(null); // the session expired
    if (!response.ok) {
      label.textContent = body.error || `Request failed (${response.status})`;
      return;
    }
    bar.value = 0;
    label.textContent = `Campaign ${body.id} queued`;
    follow(body.id);
  });

  fetch('/api/me').then(
    async (response) => signedIn(response.ok ? await response.json() : null),
    () => signedIn(null),
  );
})();
