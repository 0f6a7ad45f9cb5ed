// Warden's web UI. Plain DOM, no libraries; every value shown goes in
// through textContent (never as HTML). The proxy and auth decide what the
// user may see and do: this page only asks.
'use strict';

const state = { session: null, page: 0, total: 0, perPage: 50, recordings: new Map(), opened: 0 };
const $ = (id) => document.getElementById(id);

// The terminal emulator sizes its cells with <style> elements; the policy
// admits only those carrying this page's nonce (read back from the
// stylesheet link, where the proxy put it), so each gets it on creation.
(() => {
  const nonce = document.getElementById('app-css').nonce;
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function createElement(name, ...rest) {
    const el = create.call(this, name, ...rest);
    if (nonce && String(name).toLowerCase() === 'style') el.setAttribute('nonce', nonce);
    return el;
  };
})();

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
  for (const s of ['login', 'servers', 'terminal', 'audit', 'requests', 'sessions', 'recordings', 'player',
    'account']) {
    $(s).hidden = s !== id;
  }
  if (id !== 'terminal') closeTerminal();
  if (id !== 'player') stopPlayer();
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
  for (const t of ['server-table', 'audit-table', 'requests-table', 'sessions-table', 'recordings-table',
    'devices-table']) {
    $(t).querySelector('tbody').replaceChildren();
  }
  for (const f of ['q', 'audit-type', 'audit-user', 'audit-node', 'audit-session', 'audit-since',
    'request-roles', 'request-reason', 'review-reason', 'rec-user', 'rec-node', 'rec-since', 'enrol-name',
    'enrol-otp']) {
    $(f).value = '';
  }
  for (const m of ['whoami', 'server-count', 'page', 'servers-error', 'audit-error', 'requests-error',
    'request-created', 'sessions-error', 'recordings-error', 'transcript', 'terminal-status', 'play-status',
    'play-time', 'account-error', 'enrolled', 'audit-count']) {
    $(m).textContent = '';
  }
  state.page = 0;
  // The next user starts on the servers page.
  history.replaceState(null, '', location.pathname);
  $('login-error').textContent = message || '';
  show('login');
  loadConnectors();
}

/** A link per identity provider connector (none: no single sign-on). */
async function loadConnectors() {
  let names = [];
  try { names = await api('/web/api/sso/connectors'); } catch (_) { names = []; }
  const list = $('sso-list');
  list.replaceChildren();
  for (const name of names || []) {
    const a = document.createElement('a');
    a.href = `/web/sso/start?connector=${encodeURIComponent(name)}`;
    a.textContent = `Log in with ${name}`;
    const li = document.createElement('li');
    li.appendChild(a);
    list.appendChild(li);
  }
  $('sso').hidden = !list.children.length;
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
    cell(row, '').appendChild(connectControls(n.name));
    body.appendChild(row);
  }
  const pages = Math.max(1, Math.ceil(data.total / data.per_page));
  $('server-count').textContent = `${data.total} server${data.total === 1 ? '' : 's'}`;
  $('page').textContent = `page ${data.page + 1} of ${pages}`;
  $('prev').disabled = data.page === 0;
  $('next').disabled = data.page + 1 >= pages;
}

/** Unix seconds `ago` seconds before now. */
function since(ago) {
  return Math.floor(Date.now() / 1000) - Number(ago);
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
  if ($('audit-node').value.trim()) params.set('node', $('audit-node').value.trim());
  if ($('audit-session').value.trim()) params.set('session_id', $('audit-session').value.trim());
  if ($('audit-since').value) params.set('since', String(since($('audit-since').value)));
  const exported = new URLSearchParams(params);
  exported.delete('limit');
  $('audit-export').href = `/web/api/audit/export?${exported}`;
  let data;
  try { data = await api(`/web/api/audit?${params}`); } catch (e) { return failed(e, 'audit-error'); }
  const body = $('audit-table').querySelector('tbody');
  body.replaceChildren();
  const shown = (data.events || []).length;
  $('audit-count').textContent = data.total && data.total > shown
    ? `The newest ${shown} of ${data.total} events; narrow the search, or export it all.`
    : `${shown} event${shown === 1 ? '' : 's'}`;
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
  if ($('rec-since').value) params.set('since', String(since($('rec-since').value)));
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
    state.recordings.set(r.session_id, r);
    const play = document.createElement('a');
    play.href = `#play/${encodeURIComponent(r.session_id)}`;
    play.addEventListener('click', (ev) => { ev.preventDefault(); go(play.getAttribute('href')); });
    play.textContent = 'Play';
    play.setAttribute('aria-label', `Play ${r.user}'s session on ${r.node_name || r.node}`);
    cell(row, '').appendChild(play);
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

/** A login picker and a Connect button for one server. */
function connectControls(node) {
  const wrap = document.createElement('span');
  const logins = (state.session.logins || []).filter((l) => !l.includes('*'));
  if (!logins.length) {
    wrap.textContent = 'no logins';
    return wrap;
  }
  const pick = document.createElement('select');
  pick.setAttribute('aria-label', `Login on ${node}`);
  for (const l of logins) {
    const o = document.createElement('option');
    o.value = l;
    o.textContent = l;
    pick.appendChild(o);
  }
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = 'Connect';
  b.setAttribute('aria-label', `Connect to ${node}`);
  b.addEventListener('click', () => {
    go(`#terminal/${encodeURIComponent(node)}/${encodeURIComponent(pick.value)}`);
  });
  wrap.append(pick, b);
  return wrap;
}

/** `#NAME/a/b` as ['a', 'b'] (decoded), or null. */
function hashArgs(name) {
  if (!location.hash.startsWith(`#${name}/`)) return null;
  try {
    return location.hash.slice(name.length + 2).split('/').map(decodeURIComponent);
  } catch (_) { return null; }
}

function closeTerminal() {
  state.opened += 1;
  if (state.mfaPrompt) state.mfaPrompt.reject(new Error('cancelled'));
  const t = state.terminal;
  state.terminal = null;
  if (!t) return;
  window.removeEventListener('resize', t.onResize);
  try { t.ws.close(); } catch (_) { /* already closed */ }
  t.term.dispose();
}

/** The terminal emulator, loaded the first time a terminal or a
 * recording is opened (most pages never need it). */
const VENDOR = '/web/vendor/xterm-6.0.0';
function loadTerminalEmulator() {
  if (!state.emulator) {
    const add = (tag, attrs) => new Promise((resolve, reject) => {
      const el = document.createElement(tag);
      Object.assign(el, attrs);
      el.addEventListener('load', resolve);
      el.addEventListener('error', () => reject(new Error(`cannot load ${attrs.src || attrs.href}`)));
      document.head.appendChild(el);
    });
    state.emulator = Promise.all([
      add('link', { rel: 'stylesheet', href: `${VENDOR}/xterm.css` }),
      add('script', { src: `${VENDOR}/xterm.js` })
        .then(() => add('script', { src: `${VENDOR}/addon-fit.js` })),
    ]).catch((e) => { state.emulator = null; throw e; });
  }
  return state.emulator;
}

/** A fresh second factor for a session on `node`, when the user's roles
 * ask for one: a one-time code typed, or a security key's answer. Null
 * when none is needed. */
async function sessionProof(node) {
  const need = await api(`/web/api/mfa/required?node=${encodeURIComponent(node)}`);
  if (!need.required) return null;
  $('terminal-mfa-why').textContent =
    `Role ${need.roles.join(', ')} asks for a second factor before each session.`;
  $('terminal-otp').value = '';
  $('terminal-mfa').hidden = false;
  $('terminal-otp').focus();
  try {
    return await new Promise((resolve, reject) => {
      state.mfaPrompt = { resolve, reject };
    });
  } finally {
    state.mfaPrompt = null;
    $('terminal-mfa').hidden = true;
  }
}

/** A terminal on `node` as `login`: keys go to the node over a WebSocket
 * to the proxy, which logs in with this web session's certificate (or a
 * one-minute one for this node, when a second factor was asked for). */
async function openTerminal(node, login) {
  closeTerminal();
  // A later open (or leaving the page) supersedes this one at each wait.
  const ticket = ++state.opened;
  $('terminal-title').textContent = `${login}@${node}`;
  $('terminal-status').textContent = '';
  let mfa = null;
  try {
    mfa = await sessionProof(node);
  } catch (e) {
    if (e.message === 'cancelled') return;
    if (e.status === 401) return signedOut(e.message);
    $('terminal-status').textContent = `Not connected: ${e.message}`;
    return;
  }
  if (ticket !== state.opened) return;
  $('terminal-status').textContent = 'Connecting…';
  try { await loadTerminalEmulator(); } catch (e) {
    $('terminal-status').textContent = `Not connected: ${e.message}`;
    return;
  }
  if (ticket !== state.opened) return;
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($('terminal-screen'));
  fit.fit();
  const params = new URLSearchParams({ node, login });
  const ws = new WebSocket(`wss://${location.host}/web/api/terminal?${params}`);
  ws.binaryType = 'arraybuffer';
  const t = { term, ws, onResize: () => fit.fit() };
  state.terminal = t;
  const encoder = new TextEncoder();
  // Large pastes go in pieces (the proxy takes frames of up to 256 KiB).
  const send = (data) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    if (typeof data === 'string' || data.length <= 65536) return ws.send(data);
    for (let at = 0; at < data.length; at += 65536) ws.send(data.subarray(at, at + 65536));
  };
  ws.addEventListener('open', () => {
    const hello = { csrf: state.session.csrf, cols: term.cols, rows: term.rows };
    if (mfa) hello.mfa = mfa;
    ws.send(JSON.stringify(hello));
  });
  ws.addEventListener('message', (ev) => {
    if (typeof ev.data !== 'string') {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let m = {};
    try { m = JSON.parse(ev.data); } catch (_) { return; }
    if (m.connected) $('terminal-status').textContent = `Connected to ${m.connected} as ${login}.`;
    if (m.error) $('terminal-status').textContent = `Not connected: ${m.error}`;
    if ('exit' in m) {
      $('terminal-status').textContent = m.exit === null ? 'The session ended.'
        : `The session ended (exit status ${m.exit}).`;
    }
  });
  ws.addEventListener('close', () => {
    if (state.terminal === t && /^(Connecting|Connected)/.test($('terminal-status').textContent)) {
      $('terminal-status').textContent = 'The connection closed.';
    }
  });
  term.onData((d) => send(encoder.encode(d)));
  term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
  term.onResize(({ cols, rows }) => send(JSON.stringify({ resize: [cols, rows] })));
  window.addEventListener('resize', t.onResize);
  term.focus();
}

/** The player: events arrive as JSON lines while the recording downloads;
 * playing starts with the first of them. */
function stopPlayer() {
  state.opened += 1;
  const p = state.player;
  state.player = null;
  if (!p) return;
  p.stopped = true;
  clearTimeout(p.timer);
  try { p.abort.abort(); } catch (_) { /* done */ }
  p.term.dispose();
}

function fmt(seconds) {
  const s = Math.max(0, seconds);
  return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, '0')}`;
}

async function openPlayer(id) {
  stopPlayer();
  const ticket = ++state.opened;
  const known = state.recordings.get(id);
  $('player-title').textContent = known
    ? `Playback: ${known.user} as ${known.login} on ${known.node_name || known.node}` : 'Playback';
  $('play-status').textContent = 'Loading…';
  $('play-markers').replaceChildren();
  $('play-ticks').replaceChildren();
  try { await loadTerminalEmulator(); } catch (e) {
    $('play-status').textContent = e.message;
    return;
  }
  if (ticket !== state.opened) return;
  const term = new Terminal({ fontSize: 14, scrollback: 5000, disableStdin: true });
  term.open($('player-screen'));
  const p = {
    term, events: [], next: 0, pos: 0, playing: true, speed: Number($('play-speed').value),
    done: false, known: known ? known.duration_ms / 1000 : 0, size: null,
    abort: new AbortController(), timer: 0, last: performance.now(), stopped: false,
  };
  state.player = p;
  $('play-pause').textContent = 'Pause';
  let resp;
  try {
    resp = await fetch(`/web/api/recordings/${encodeURIComponent(id)}/events`, {
      credentials: 'same-origin', signal: p.abort.signal,
    });
  } catch (e) { if (!p.stopped) $('play-status').textContent = e.message; return; }
  if (!resp.ok) {
    let message = `${resp.status}`;
    try { message = (await resp.json()).message; } catch (_) { /* no body */ }
    if (resp.status === 401) return signedOut(message);
    $('play-status').textContent = message;
    return;
  }
  tick(p);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    let chunk;
    try { chunk = await reader.read(); } catch (_) { return; }
    if (p.stopped) return;
    if (chunk.done) break;
    buf += decoder.decode(chunk.value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      received(p, buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  }
  p.done = true;
  if ($('play-status').textContent === 'Loading…') $('play-status').textContent = '';
  timeline(p);
}

/** One line of the stream. */
function received(p, line) {
  if (!line) return;
  let v;
  try { v = JSON.parse(line); } catch (_) { return; }
  if (Array.isArray(v)) {
    const [t, code, data] = v;
    p.events.push([t, code, data]);
    if (code === 'm') marker(p, t, data);
  } else if (v.version) {
    p.size = [v.width, v.height];
    p.term.resize(v.width || 80, v.height || 24);
  } else if (v.error) {
    $('play-status').textContent = `The recording is damaged: ${v.error}`;
  } else if (v.end) {
    $('play-status').textContent = v.end.truncated ? 'The recording was cut short.' : '';
  }
}

function marker(p, t, text) {
  const li = document.createElement('li');
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = `${fmt(t)}  ${text}`;
  b.addEventListener('click', () => seek(p, t));
  li.appendChild(b);
  $('play-markers').appendChild(li);
  const o = document.createElement('option');
  o.value = String(t);
  $('play-ticks').appendChild(o);
}

function loadedUntil(p) {
  return p.events.length ? p.events[p.events.length - 1][0] : 0;
}

function length(p) {
  return Math.max(p.known, loadedUntil(p));
}

/** Writes events up to `p.pos`, output batched into one write. */
function apply(p) {
  let out = '';
  while (p.next < p.events.length && p.events[p.next][0] <= p.pos) {
    const [, code, data] = p.events[p.next];
    if (code === 'o') out += data;
    if (code === 'r') {
      if (out) { p.term.write(out); out = ''; }
      const [cols, rows] = String(data).split('x').map(Number);
      if (cols > 0 && rows > 0) p.term.resize(cols, rows);
    }
    p.next += 1;
  }
  if (out) p.term.write(out);
}

function timeline(p) {
  const seekbar = $('play-seek');
  seekbar.max = String(length(p));
  if (document.activeElement !== seekbar) seekbar.value = String(p.pos);
  const loading = p.done ? '' : ` (loaded ${fmt(loadedUntil(p))})`;
  $('play-time').textContent = `${fmt(p.pos)} / ${fmt(length(p))}${loading}`;
}

/** The clock: advances while playing, waits at the end of what arrived. */
function tick(p) {
  if (p.stopped) return;
  const now = performance.now();
  if (p.playing) {
    const limit = p.done ? length(p) : loadedUntil(p);
    p.pos = Math.min(p.pos + ((now - p.last) / 1000) * p.speed, limit);
    apply(p);
    if (p.done && p.pos >= length(p)) {
      p.playing = false;
      $('play-pause').textContent = 'Play';
    }
  }
  p.last = now;
  timeline(p);
  p.timer = setTimeout(() => tick(p), 50);
}

/** Jumps to `t`: the screen is rebuilt from the start, at once. */
function seek(p, t) {
  p.pos = Math.max(0, Math.min(t, loadedUntil(p)));
  p.term.reset();
  if (p.size) p.term.resize(p.size[0] || 80, p.size[1] || 24);
  p.next = 0;
  apply(p);
  timeline(p);
}

/** WebAuthn's binary fields travel as base64url in JSON. */
function fromB64(text) {
  const b = atob(String(text).replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
}

function toB64(buf) {
  let s = '';
  for (const byte of new Uint8Array(buf)) s += String.fromCharCode(byte);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Asks the user's security key to answer auth's challenge. */
async function keyAnswer(challenge) {
  const pk = challenge.request.publicKey;
  const options = {
    ...pk,
    challenge: fromB64(pk.challenge),
    allowCredentials: (pk.allowCredentials || []).map((c) => ({ ...c, id: fromB64(c.id) })),
  };
  const cred = await navigator.credentials.get({ publicKey: options });
  return {
    challenge_id: challenge.id,
    credential: {
      id: cred.id,
      rawId: toB64(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toB64(cred.response.authenticatorData),
        clientDataJSON: toB64(cred.response.clientDataJSON),
        signature: toB64(cred.response.signature),
        userHandle: cred.response.userHandle ? toB64(cred.response.userHandle) : null,
      },
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    },
  };
}

/** Enrols a new key: auth's creation options, the browser makes the key. */
async function keyEnrol(challenge) {
  const pk = challenge.request.publicKey;
  // Chromium refuses credProtect's "UV required" for a key that keeps no
  // resident credential unless UV is required too; auth's checks of the
  // answer do not depend on it.
  const extensions = { ...(pk.extensions || {}) };
  delete extensions.credentialProtectionPolicy;
  delete extensions.enforceCredentialProtectionPolicy;
  const options = {
    ...pk,
    extensions,
    challenge: fromB64(pk.challenge),
    user: { ...pk.user, id: fromB64(pk.user.id) },
    excludeCredentials: (pk.excludeCredentials || []).map((c) => ({ ...c, id: fromB64(c.id) })),
  };
  const cred = await navigator.credentials.create({ publicKey: options });
  return {
    challenge_id: challenge.id,
    credential: {
      id: cred.id,
      rawId: toB64(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64(cred.response.attestationObject),
        clientDataJSON: toB64(cred.response.clientDataJSON),
        transports: cred.response.getTransports ? cred.response.getTransports() : [],
      },
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    },
  };
}

/** Password and a one-time code, or password and a security key. */
async function logIn() {
  const user = $('user').value;
  const password = $('password').value;
  const otp = $('otp').value.trim();
  if (otp) return api('/web/api/login', { method: 'POST', body: { user, password, otp } });
  const challenge = await api('/web/api/login/challenge', { method: 'POST', body: { user, password } });
  if (!challenge.webauthn) throw new Error('enter the one-time code from your authenticator app');
  if (!window.PublicKeyCredential) throw new Error('this browser cannot use security keys; enter a one-time code');
  $('login-error').textContent = 'Touch your security key…';
  let webauthn;
  try {
    webauthn = await keyAnswer(challenge.webauthn);
  } catch (e) {
    // Users without a key get a decoy challenge (so nobody learns who has
    // one), which no key answers.
    throw new Error(`no security key answered (${e.name}); touch an enrolled key, or enter the one-time code from your authenticator app`);
  }
  return api('/web/api/login', { method: 'POST', body: { user, password, webauthn } });
}

async function loadDevices() {
  $('account-error').textContent = '';
  const body = $('devices-table').querySelector('tbody');
  body.replaceChildren();
  let list;
  try { list = await api('/web/api/mfa/devices'); } catch (e) { return failed(e, 'account-error'); }
  const when = (t) => (t ? time(new Date(t * 1000).toISOString()) : '');
  for (const d of list) {
    const row = document.createElement('tr');
    cell(row, d.name);
    cell(row, d.type === 'webauthn' ? 'security key' : 'authenticator app');
    cell(row, when(d.added));
    cell(row, when(d.last_used));
    body.appendChild(row);
  }
}

/** Navigates to `hash` on the user's own click: a terminal or a
 * playback opens at once only then. */
function go(hash) {
  state.intent = hash;
  if (location.hash === hash) route(); else location.hash = hash;
}

/** A terminal or a playback reached otherwise (a link from elsewhere, a
 * reload) waits for the user to say so: opening one is an action, audited
 * under their name. */
function confirmFirst(section, status, label, what) {
  if (state.intent === location.hash) return false;
  show(section);
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', () => go(location.hash));
  $(status).replaceChildren(`${what} `, b);
  return true;
}

function route() {
  if (!state.session) return show('login');
  const term = hashArgs('terminal');
  const play = hashArgs('play');
  if (term && term.length === 2) {
    if (confirmFirst('terminal', 'terminal-status', 'Connect', `Open a terminal on ${term[0]} as ${term[1]}?`)) {
      $('terminal-title').textContent = `${term[1]}@${term[0]}`;
      return;
    }
    state.intent = null;
    show('terminal');
    openTerminal(term[0], term[1]);
  } else if (play && play.length === 1) {
    if (confirmFirst('player', 'play-status', 'Play', 'Play this recording?')) return;
    state.intent = null;
    show('player');
    openPlayer(play[0]);
  } else if (location.hash === '#account') {
    show('account');
    loadDevices();
  } else if (location.hash === '#recordings') {
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
      const session = await logIn();
      $('login-error').textContent = '';
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
  $('enrol-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('enrolled').textContent = '';
    $('account-error').textContent = '';
    $('enrol-submit').disabled = true;
    try {
      const challenge = await api('/web/api/mfa/register', {
        method: 'POST',
        body: { name: $('enrol-name').value.trim(), otp: $('enrol-otp').value.trim() },
      });
      $('enrolled').textContent = 'Touch your security key…';
      const answer = await keyEnrol(challenge);
      const device = await api('/web/api/mfa/register/finish', { method: 'POST', body: { answer } });
      $('enrolled').textContent = `Security key ${device.name} added: log in with it next time.`;
      $('enrol-name').value = '';
      $('enrol-otp').value = '';
      loadDevices();
    } catch (e) {
      $('enrolled').textContent = '';
      failed(e, 'account-error');
    } finally {
      $('enrol-submit').disabled = false;
    }
  });
  $('terminal-mfa').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const code = $('terminal-otp').value.trim();
    if (state.mfaPrompt && code) state.mfaPrompt.resolve({ otp: code });
  });
  $('terminal-key').addEventListener('click', async () => {
    const prompt = state.mfaPrompt;
    if (!prompt) return;
    try {
      const challenge = await api('/web/api/mfa/challenge', { method: 'POST' });
      if (!challenge.webauthn) throw new Error('you have no security key; enter a one-time code');
      $('terminal-status').textContent = 'Touch your security key…';
      prompt.resolve({ webauthn: await keyAnswer(challenge.webauthn) });
    } catch (e) {
      $('terminal-status').textContent = e.message;
    }
  });
  $('terminal-close').addEventListener('click', () => { location.hash = '#servers'; });
  $('play-pause').addEventListener('click', () => {
    const p = state.player;
    if (!p) return;
    if (!p.playing && p.done && p.pos >= length(p)) seek(p, 0);
    p.playing = !p.playing;
    p.last = performance.now();
    $('play-pause').textContent = p.playing ? 'Pause' : 'Play';
  });
  $('play-speed').addEventListener('change', () => {
    if (state.player) state.player.speed = Number($('play-speed').value);
  });
  $('play-seek').addEventListener('input', () => {
    if (state.player) seek(state.player, Number($('play-seek').value));
  });
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
