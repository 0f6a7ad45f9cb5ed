// Warden's web UI. Plain DOM, no libraries; every value shown goes in
// through textContent (never as HTML). The proxy and auth decide what the
// user may see and do: this page only asks.
'use strict';

const state = { session: null, page: 0, total: 0, perPage: 50 };
const $ = (id) => document.getElementById(id);

/** Calls the proxy's web API; a change carries the anti-forgery token. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && state.session) headers['x-csrf-token'] = state.session.csrf;
  const resp = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    const err = new Error((data && data.message) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function show(id) {
  for (const s of ['login', 'servers', 'audit', 'requests', 'sessions', 'recordings']) $(s).hidden = s !== id;
  $('nav').hidden = !state.session;
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function signedIn(session) {
  state.session = session;
  $('whoami').textContent = `${session.user} (${session.roles.join(', ')})`;
  route();
}

function signedOut(message) {
  state.session = null;
  // Nothing of this session stays on the page for the next user.
  for (const t of ['server-table', 'audit-table', 'requests-table', 'sessions-table', 'recordings-table']) {
    $(t).querySelector('tbody').replaceChildren();
  }
  for (const f of ['q', 'audit-type', 'audit-user', 'request-roles', 'request-reason', 'review-reason',
    'rec-user', 'rec-node']) {
    $(f).value = '';
  }
  for (const m of ['whoami', 'server-count', 'page', 'servers-error', 'audit-error', 'requests-error',
    'request-created', 'sessions-error', 'recordings-error', 'transcript']) {
    $(m).textContent = '';
  }
  state.page = 0;
  // The next user starts on the servers page.
  history.replaceState(null, '', location.pathname);
  $('login-error').textContent = message || '';
  show('login');
}

/** A call failed: a lost session sends the user back to the login form. */
function failed(e, where) {
  if (e.status === 401) return signedOut(e.message);
  $(where).textContent = e.message;
}

async function loadServers() {
  $('servers-error').textContent = '';
  $('server-table').querySelector('tbody').replaceChildren();
  const q = encodeURIComponent($('q').value.trim());
  let data;
  try {
    data = await api(`/web/api/nodes?q=${q}&page=${state.page}&per_page=${state.perPage}`);
  } catch (e) { return failed(e, 'servers-error'); }
  state.total = data.total;
  const body = $('server-table').querySelector('tbody');
  body.replaceChildren();
  for (const n of data.nodes) {
    const row = document.createElement('tr');
    cell(row, n.name);
    const labels = cell(row, '');
    labels.className = 'labels';
    for (const [k, v] of Object.entries(n.labels)) {
      const code = document.createElement('code');
      code.textContent = `${k}=${v}`;
      labels.appendChild(code);
    }
    cell(row, n.online ? 'online' : 'offline');
    body.appendChild(row);
  }
  const pages = Math.max(1, Math.ceil(data.total / data.per_page));
  $('server-count').textContent = `${data.total} server${data.total === 1 ? '' : 's'}`;
  $('page').textContent = `page ${data.page + 1} of ${pages}`;
  $('prev').disabled = data.page === 0;
  $('next').disabled = data.page + 1 >= pages;
}

/** An RFC 3339 time as `YYYY-MM-DD hh:mm:ss`. */
function time(rfc3339) {
  return String(rfc3339).replace('T', ' ').replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, '');
}

async function loadAudit() {
  $('audit-error').textContent = '';
  $('audit-table').querySelector('tbody').replaceChildren();
  const params = new URLSearchParams({ limit: '200' });
  if ($('audit-type').value.trim()) params.set('type', $('audit-type').value.trim());
  if ($('audit-user').value.trim()) params.set('user', $('audit-user').value.trim());
  const exported = new URLSearchParams(params);
  exported.delete('limit');
  $('audit-export').href = `/web/api/audit/export?${exported}`;
  let data;
  try { data = await api(`/web/api/audit?${params}`); } catch (e) { return failed(e, 'audit-error'); }
  const body = $('audit-table').querySelector('tbody');
  body.replaceChildren();
  for (const ev of data.events || []) {
    const row = document.createElement('tr');
    cell(row, time(ev.time));
    cell(row, ev.type);
    cell(row, ev.user || '');
    cell(row, ev.message || '');
    cell(row, ev.success ? 'ok' : 'failed');
    // The whole event, on demand.
    const more = cell(row, '');
    const details = document.createElement('details');
    const summary = document.createElement('summary');
    summary.textContent = 'JSON';
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(ev, null, 2);
    details.append(summary, pre);
    more.appendChild(details);
    body.appendChild(row);
  }
}

/** Requests; with `only`, just that one (the page a chat bot links to). */
async function loadRequests(only) {
  $('requests-error').textContent = '';
  const body = $('requests-table').querySelector('tbody');
  body.replaceChildren();
  let list;
  try { list = await api('/web/api/requests'); } catch (e) { return failed(e, 'requests-error'); }
  for (const r of list) {
    const id = r.metadata.name;
    if (only && id !== only) continue;
    const spec = r.spec;
    const row = document.createElement('tr');
    row.dataset.id = id;
    cell(row, id);
    cell(row, spec.user);
    cell(row, (spec.roles || []).join(', '));
    cell(row, spec.reason);
    cell(row, spec.state);
    const actions = cell(row, '');
    if (spec.state === 'pending' && spec.user !== state.session.user) {
      for (const [label, approve] of [['Approve', true], ['Deny', false]]) {
        const b = document.createElement('button');
        b.type = 'button';
        b.textContent = label;
        b.setAttribute('aria-label', `${label} request ${id}`);
        b.addEventListener('click', () => review(id, approve));
        actions.appendChild(b);
      }
    } else {
      actions.textContent = (spec.reviews || [])
        .map((v) => `${v.reviewer}: ${v.approve ? 'approved' : 'denied'} (${v.reason})`).join('; ');
    }
    body.appendChild(row);
  }
}

async function review(id, approve) {
  try {
    await api(`/web/api/requests/${encodeURIComponent(id)}/review`, {
      method: 'POST',
      body: { approve, reason: $('review-reason').value },
    });
  } catch (e) { return failed(e, 'requests-error'); }
  route();
}

async function loadSessions() {
  $('sessions-error').textContent = '';
  const body = $('sessions-table').querySelector('tbody');
  body.replaceChildren();
  let list;
  try { list = await api('/web/api/sessions'); } catch (e) { return failed(e, 'sessions-error'); }
  for (const a of list) {
    const row = document.createElement('tr');
    row.dataset.id = a.session_id;
    cell(row, a.user);
    cell(row, a.login);
    cell(row, a.node_name || a.node);
    cell(row, time(new Date(a.started * 1000).toISOString()));
    cell(row, a.session_id);
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = 'End';
    b.setAttribute('aria-label', `End ${a.user}'s session on ${a.node_name || a.node}`);
    b.addEventListener('click', async () => {
      try {
        await api('/web/api/sessions/end', {
          method: 'POST',
          body: { user: a.user, node: a.node, login: a.login },
        });
      } catch (e) { return failed(e, 'sessions-error'); }
      loadSessions();
    });
    cell(row, '').appendChild(b);
    body.appendChild(row);
  }
}

async function loadRecordings() {
  $('recordings-error').textContent = '';
  const body = $('recordings-table').querySelector('tbody');
  body.replaceChildren();
  const params = new URLSearchParams();
  if ($('rec-user').value.trim()) params.set('user', $('rec-user').value.trim());
  if ($('rec-node').value.trim()) params.set('node', $('rec-node').value.trim());
  let list;
  try { list = await api(`/web/api/recordings?${params}`); } catch (e) { return failed(e, 'recordings-error'); }
  list.sort((a, b) => b.start - a.start);
  for (const r of list) {
    const row = document.createElement('tr');
    row.dataset.id = r.session_id;
    cell(row, time(new Date(r.start * 1000).toISOString()));
    cell(row, r.user);
    cell(row, r.login);
    cell(row, r.node_name || r.node);
    cell(row, r.command || '(shell)');
    cell(row, `${(r.duration_ms / 1000).toFixed(1)} s${r.truncated ? ' (cut short)' : ''}`);
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = 'Show';
    b.setAttribute('aria-label', `Show the transcript of ${r.user}'s session on ${r.node_name || r.node}`);
    b.addEventListener('click', async () => {
      $('transcript').textContent = '';
      const resp = await fetch(`/web/api/recordings/${encodeURIComponent(r.session_id)}/text`, {
        credentials: 'same-origin',
      });
      const text = await resp.text();
      if (!resp.ok) {
        let message = text;
        try { message = JSON.parse(text).message; } catch (_) { /* plain text */ }
        $('recordings-error').textContent = message;
        return;
      }
      $('transcript').textContent = text;
    });
    cell(row, '').appendChild(b);
    body.appendChild(row);
  }
}

function route() {
  if (!state.session) return show('login');
  if (location.hash === '#recordings') {
    show('recordings');
    loadRecordings();
  } else if (location.hash === '#sessions') {
    show('sessions');
    loadSessions();
  } else if (location.hash.startsWith('#requests')) {
    show('requests');
    let only = '';
    try { only = decodeURIComponent(location.hash.slice('#requests/'.length)); } catch (_) { only = ''; }
    loadRequests(only);
  } else if (location.hash === '#audit') {
    show('audit');
    loadAudit();
  } else {
    show('servers');
    loadServers();
  }
}

document.addEventListener('DOMContentLoaded', async () => {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('login-error').textContent = '';
    $('login-submit').disabled = true;
    try {
      const session = await api('/web/api/login', {
        method: 'POST',
        body: { user: $('user').value, password: $('password').value, otp: $('otp').value },
      });
      $('password').value = '';
      $('otp').value = '';
      signedIn(session);
    } catch (e) {
      $('login-error').textContent = e.message;
    } finally {
      $('login-submit').disabled = false;
    }
  });
  $('logout').addEventListener('click', async () => {
    try { await api('/web/api/logout', { method: 'POST' }); } catch (_) { /* ended anyway */ }
    signedOut('You are logged out.');
  });
  $('server-search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.page = 0;
    loadServers();
  });
  $('prev').addEventListener('click', () => { state.page = Math.max(0, state.page - 1); loadServers(); });
  $('next').addEventListener('click', () => { state.page += 1; loadServers(); });
  $('audit-search').addEventListener('submit', (ev) => { ev.preventDefault(); loadAudit(); });
  $('recording-search').addEventListener('submit', (ev) => { ev.preventDefault(); loadRecordings(); });
  $('request-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('request-created').textContent = '';
    const roles = $('request-roles').value.split(',').map((r) => r.trim()).filter(Boolean);
    try {
      const r = await api('/web/api/requests', {
        method: 'POST',
        body: { roles, reason: $('request-reason').value },
      });
      $('request-created').textContent = `Request ${r.metadata.name} sent: ${r.spec.state}.`;
      $('request-created').dataset.id = r.metadata.name;
    } catch (e) { return failed(e, 'requests-error'); }
    loadRequests();
  });
  window.addEventListener('hashchange', route);
  try {
    signedIn(await api('/web/api/session'));
  } catch (_) {
    signedOut('');
  }
});
