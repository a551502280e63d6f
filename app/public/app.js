'use strict';
// Starts a campaign through the API and follows its progress over WebSocket.
(function () {
  const form = document.getElementById('campaign-form');
  const section = document.getElementById('progress');
  const label = document.getElementById('progress-label');
  const bar = document.getElementById('progress-bar');

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
    const response = await fetch('/api/campaigns', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: data.get('name'), recipients: Number(data.get('recipients')) }),
    });
    const body = await response.json();
    section.hidden = false;
    if (!response.ok) {
      label.textContent = body.error || `Request failed (${response.status})`;
      return;
    }
    bar.value = 0;
    label.textContent = `Campaign ${body.id} queued`;
    follow(body.id);
  });
})();
