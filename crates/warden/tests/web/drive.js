// Drives Debian's Chromium (headless, through playwright-core) through the
// web UI for crates/warden/tests/web.rs, and prints what it saw as one JSON
// line; the Rust test decides pass or fail. Inputs from the environment:
// WARDEN_URL, SHOTS (a directory for screenshots), ALICE, BOB, CAROL (who
// may request the role dba), DAVE (who may review it) and FRANK (who may
// end sessions) and GINA (who holds a web terminal Frank ends) as
// "user:password:totp-secret", NODE (a server alice may reach), END_FILE
// (appears when the session Frank ends has ended).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const { chromium } = require('playwright-core');
const { env, launch, logIn, main, pageAtFailure, totp } = require('./lib');

const url = env('WARDEN_URL');
const shots = env('SHOTS');
const [aliceUser, alicePass, aliceSecret] = env('ALICE').split(':');
const [bobUser, bobPass, bobSecret] = env('BOB').split(':');
const node = env('NODE');
const [carolUser, carolPass, carolSecret] = env('CAROL').split(':');
const [daveUser, davePass, daveSecret] = env('DAVE').split(':');
const [frankUser, frankPass, frankSecret] = env('FRANK').split(':');
const endFile = env('END_FILE');
const [ginaUser, ginaPass, ginaSecret] = env('GINA').split(':');

/** What the page's terminal shows, row by row. */
const screenText = (page, id) => page.$eval(`#${id} .xterm-rows`, (r) => r.innerText);

/** Waits until the terminal `id` shows `text`. */
async function waitForScreen(page, id, text, timeout = 20000) {
  await page.waitForFunction(([i, t]) => {
    const rows = document.querySelector(`#${i} .xterm-rows`);
    return rows && rows.innerText.includes(t);
  }, [id, text], { timeout });
}

/** Types a line into the page's terminal. */
async function typeLine(page, line) {
  await page.click('#terminal-screen');
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

/** A WebSocket handshake to the terminal with `headers`, not yet sent. */
function wsRequest(base, headers) {
  const u = new URL('web/api/terminal?node=x&login=y', base);
  return https.request({
    host: u.hostname, port: u.port, path: u.pathname + u.search, rejectUnauthorized: false,
    headers: {
      connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13',
      'sec-websocket-key': crypto.randomBytes(16).toString('base64'), ...headers,
    },
  });
}

/** The status of a WebSocket handshake to the terminal with `headers`. */
function upgrade(base, headers) {
  return new Promise((resolve, reject) => {
    const req = wsRequest(base, headers);
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', reject);
    req.end();
  });
}

/** Upgrades to the terminal's WebSocket with `headers`, sends `text` as
 * the first frame (masked, as a browser does) and resolves to the text of
 * the proxy's first frame. */
function firstFrame(base, headers, text) {
  return new Promise((resolve, reject) => {
    const req = wsRequest(base, headers);
    req.on('upgrade', (res, socket) => {
      const payload = Buffer.from(text);
      const mask = crypto.randomBytes(4);
      const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
      socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      let buf = Buffer.alloc(0);
      socket.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2) return;
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) { len = buf.readUInt16BE(2); at = 4; }
        if (buf.length < at + len) return;
        socket.destroy();
        resolve(buf.subarray(at, at + len).toString());
      });
    });
    req.on('response', (res) => { res.resume(); reject(new Error(`no upgrade: ${res.statusCode}`)); });
    req.on('error', reject);
    req.end();
  });
}

/** Opens a terminal from the servers page and waits until it is live. */
async function connect(page, server) {
  await page.fill('#q', server);
  await page.press('#q', 'Enter');
  await page.waitForFunction(() => document.getElementById('server-count').textContent.startsWith('1 '));
  await page.click(`#server-table tbody tr:has(td:text-is("${server}")) button:has-text("Connect")`);
  await page.waitForFunction(() => /^(Connected|Not connected)/.test(
    document.getElementById('terminal-status').textContent));
  return page.textContent('#terminal-status');
}

main(async () => {
  const browser = await launch(chromium);
  const out = {};
  let page;
  try {
    // The cluster's certificate is not one a browser trusts (--web-cert is
    // the operator's answer); the test accepts it.
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    page = await ctx.newPage();
    const first = await page.goto(url);
    out.csp = first.headers()['content-security-policy'] || '';
    out.frame_options = first.headers()['x-frame-options'] || '';

    // A wrong code: the form says why and stays.
    await logIn(page, aliceUser, alicePass, '000000');
    await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
    out.bad_login = await page.textContent('#login-error');
    await page.screenshot({ path: `${shots}/login-failed.png`, fullPage: true });

    await logIn(page, aliceUser, alicePass, totp(aliceSecret));
    await page.waitForSelector('#server-table tbody tr');
    out.servers = await page.$$eval('#server-table tbody tr', (rows) =>
      rows.map((r) => Array.from(r.cells).map((c) => c.textContent)));
    out.whoami = await page.textContent('#whoami');
    await page.screenshot({ path: `${shots}/servers.png`, fullPage: true });

    // Search: a label that no server has, then the node's name.
    await page.fill('#q', 'env=no-such-env');
    await page.press('#q', 'Enter');
    await page.waitForFunction(() => document.getElementById('server-count').textContent.startsWith('0 '));
    out.no_match = await page.textContent('#server-count');
    await page.fill('#q', 'env=demo');
    await page.press('#q', 'Enter');
    await page.waitForFunction(() => document.getElementById('server-count').textContent.startsWith('1 '));
    out.by_label = await page.$$eval('#server-table tbody tr td:first-child', (c) => c.map((x) => x.textContent));
    await page.fill('#q', 'env=no-such-env');
    await page.press('#q', 'Enter');
    await page.waitForFunction(() => document.getElementById('server-count').textContent.startsWith('0 '));
    await page.fill('#q', node);
    await page.press('#q', 'Enter');
    await page.waitForFunction(() => document.getElementById('server-count').textContent.startsWith('1 '));
    out.by_name = await page.$$eval('#server-table tbody tr td:first-child', (c) => c.map((x) => x.textContent));

    // A terminal on the node: a command's output, Unicode, colour, resize.
    out.terminal_status = await connect(page, node);
    await typeLine(page, 'echo web-$((6*7)) ünï→✓');
    await waitForScreen(page, 'terminal-screen', 'web-42 ünï→✓');
    await typeLine(page, "printf '\\033[31mred-text\\033[0m\\n'");
    await waitForScreen(page, 'terminal-screen', 'red-text\n');
    out.red = await page.$$eval('#terminal-screen .xterm-rows span', (spans) =>
      spans.filter((s) => s.textContent === 'red-text').map((s) => s.className).join(' '));
    await page.screenshot({ path: `${shots}/terminal.png`, fullPage: true });
    await typeLine(page, 'stty size');
    await page.waitForFunction(() => /\n\d+ \d+\s*\n/.test(document.querySelector('#terminal-screen .xterm-rows').innerText));
    out.size_before = (await screenText(page, 'terminal-screen')).match(/\n(\d+ \d+)\s*\n/)[1];
    await page.setViewportSize({ width: 900, height: 700 });
    await page.waitForTimeout(300);
    // No `clear`: the first output stays on the screen, so the player can
    // be checked for it once it has played to the end, not in the moment
    // it would have been on screen (a race at 16x).
    await typeLine(page, 'stty size');
    await page.waitForFunction((before) => {
      const m = document.querySelector('#terminal-screen .xterm-rows').innerText.match(/\n?(\d+ \d+)\s*\n/g);
      return m && m.some((x) => x.trim() !== before);
    }, out.size_before);
    out.size_after = (await screenText(page, 'terminal-screen')).match(/\d+ \d+(?=\s*\n)/g).pop();
    await typeLine(page, 'exit 3');
    await page.waitForFunction(() => document.getElementById('terminal-status').textContent.includes('ended'));
    out.terminal_end = await page.textContent('#terminal-status');
    // A login the roles do not allow: the node says no, the page says why.
    // Reached by a link, it asks first (opening one is an action).
    await page.goto(`${url}#terminal/${encodeURIComponent(node)}/nobody-here`);
    await page.waitForSelector('#terminal-status button:has-text("Connect")');
    out.link_asks = await page.textContent('#terminal-status');
    await page.click('#terminal-status button');
    await page.waitForFunction(() => /ended|Not connected|closed/.test(document.getElementById('terminal-status').textContent));
    await page.waitForTimeout(500);
    out.denied_login = `${await page.textContent('#terminal-status')} ${await screenText(page, 'terminal-screen')}`;
    // The terminal's handshake: from another site it is refused, as it is
    // without the session cookie; from the page's own origin it upgrades.
    const cookieHeader = (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
    const origin = new URL(url).origin;
    out.ws_cross_site = await upgrade(url, { origin: 'https://attacker.example', cookie: cookieHeader });
    out.ws_no_cookie = await upgrade(url, { origin });
    out.ws_same_site = await upgrade(url, { origin, cookie: cookieHeader });
    // The session's cookie but not the page's token: told so, nothing dialled.
    out.ws_wrong_token = await firstFrame(url, { origin, cookie: cookieHeader },
      JSON.stringify({ csrf: 'not-the-token', cols: 80, rows: 24 }));
    await page.goto(`${url}#servers`);
    await page.setViewportSize({ width: 1280, height: 720 });

    // The audit log, newest first: this node's events of the last hour
    // (alice's terminal), then logins only.
    await page.click('#nav-audit');
    await page.waitForSelector('#audit-table tbody tr');
    await page.fill('#audit-node', node);
    await page.selectOption('#audit-since', '3600');
    await page.press('#audit-node', 'Enter');
    await page.waitForFunction(() => {
      const types = Array.from(document.querySelectorAll('#audit-table tbody tr td:nth-child(2)'));
      return types.some((c) => c.textContent === 'session.start');
    });
    out.audit_by_node = await page.$$eval('#audit-table tbody tr', (rows) =>
      rows.map((r) => [r.cells[1].textContent, r.cells[2].textContent]));
    out.audit_count = await page.textContent('#audit-count');
    await page.fill('#audit-node', '');
    await page.fill('#audit-type', 'user.login');
    await page.press('#audit-type', 'Enter');
    await page.waitForFunction(() => {
      const types = Array.from(document.querySelectorAll('#audit-table tbody tr td:nth-child(2)'));
      return types.length > 0 && types.every((c) => c.textContent === 'user.login');
    });
    out.audit = await page.$$eval('#audit-table tbody tr', (rows) =>
      rows.map((r) => Array.from(r.cells).map((c) => c.textContent)));
    await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });
    // One event's JSON, and the same search as a download.
    await page.click('#audit-table tbody tr:first-child summary');
    out.event_json = JSON.parse(await page.textContent('#audit-table tbody tr:first-child pre'));
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#audit-export')]);
    const lines = fs.readFileSync(await download.path(), 'utf8').trim().split('\n');
    out.export_types = [...new Set(lines.map((l) => JSON.parse(l).type))];
    out.export_count = lines.length;

    const cookie = (await ctx.cookies()).find((c) => c.name === '__Host-warden-web') || {};
    out.cookie = { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite };
    // Same page, same cookie, but no anti-forgery token: refused.
    out.logout_without_token = await page.evaluate(() =>
      fetch('/web/api/logout', { method: 'POST' }).then((r) => r.status));
    // A login posted from another site: refused.
    const cross = await ctx.request.post(`${url}web/api/login`, {
      headers: { origin: 'https://attacker.example', 'content-type': 'application/json' },
      data: { user: aliceUser, password: alicePass, otp: '000000' },
    });
    out.cross_site_login = cross.status();
    out.session_still = await page.evaluate(() => fetch('/web/api/session').then((r) => r.status));

    // Logging out forgets the session, and ends its terminals in every
    // tab: one is open in a second tab.
    const tab = await ctx.newPage();
    await tab.goto(url);
    await tab.waitForSelector('#server-table tbody tr');
    out.tab_terminal = await connect(tab, node);
    await page.click('#logout');
    await page.waitForSelector('#login-form', { state: 'visible' });
    await tab.waitForFunction(() => /ended|closed/.test(document.getElementById('terminal-status').textContent),
      null, { timeout: 15000 }).catch(() => {});
    out.tab_after_logout = await tab.textContent('#terminal-status');
    await tab.close();
    out.session_after_logout = await page.evaluate(() => fetch('/web/api/session').then((r) => r.status));
    out.nodes_after_logout = await page.evaluate(() => fetch('/web/api/nodes').then((r) => r.status));

    // Bob may reach servers but not read the audit log: auth says no.
    await logIn(page, bobUser, bobPass, totp(bobSecret));
    await page.waitForSelector('#server-table tbody tr');
    out.bob_audit_status = await page.evaluate(() => fetch('/web/api/audit').then((r) => r.status));
    out.bob_recordings_status = await page.evaluate(() => fetch('/web/api/recordings').then((r) => r.status));
    out.bob_player_status = await page.evaluate(() =>
      fetch('/web/api/recordings/01a25247-e990-7090-acc1-bacc613fd430/events').then((r) => r.status));
    await page.click('#nav-audit');
    await page.waitForFunction(() => document.getElementById('audit-error').textContent !== '');
    out.bob_audit_error = await page.textContent('#audit-error');
    out.bob_audit_rows = await page.$$eval('#audit-table tbody tr', (r) => r.length);
    await page.screenshot({ path: `${shots}/audit-denied.png`, fullPage: true });
    await page.click('#nav-servers');
    out.bob_terminal = await connect(page, node);
    await page.click('#logout');

    // Carol asks for dba; Dave approves it from the request's own link.
    await logIn(page, carolUser, carolPass, totp(carolSecret));
    await page.waitForSelector('#servers', { state: 'visible' });
    await page.click('#nav-requests');
    await page.fill('#request-roles', 'dba');
    await page.fill('#request-reason', 'INC-7 disk full');
    await page.click('#request-submit');
    await page.waitForFunction(() => document.getElementById('request-created').textContent !== ''
      || document.getElementById('requests-error').textContent !== '');
    out.request_created = await page.textContent('#request-created');
    out.request_error = await page.textContent('#requests-error');
    const id = await page.getAttribute('#request-created', 'data-id');
    out.request_id = id;
    await page.waitForSelector(`#requests-table tbody tr[data-id="${id}"]`);
    out.carol_sees = await page.$$eval(`#requests-table tbody tr[data-id="${id}"] td`, (c) => c.map((x) => x.textContent));
    await page.screenshot({ path: `${shots}/request-created.png`, fullPage: true });
    await page.click('#logout');

    await logIn(page, daveUser, davePass, totp(daveSecret));
    await page.waitForSelector('#servers', { state: 'visible' });
    await page.goto(`${url}#requests/${id}`);
    await page.waitForSelector(`#requests-table tbody tr[data-id="${id}"] button`);
    out.dave_rows = await page.$$eval('#requests-table tbody tr', (r) => r.length);
    await page.fill('#review-reason', 'ok for INC-7');
    await page.click(`#requests-table tbody tr[data-id="${id}"] button:has-text("Approve")`);
    await page.waitForFunction((rid) => {
      const row = document.querySelector(`#requests-table tbody tr[data-id="${rid}"]`);
      return row && row.cells[4].textContent === 'approved';
    }, id);
    out.dave_sees = await page.$$eval(`#requests-table tbody tr[data-id="${id}"] td`, (c) => c.map((x) => x.textContent));
    await page.screenshot({ path: `${shots}/request-approved.png`, fullPage: true });
    await page.click('#logout');

    // Gina holds a terminal open in a browser of her own.
    const ginaCtx = await browser.newContext({ ignoreHTTPSErrors: true });
    const gina = await ginaCtx.newPage();
    await gina.goto(url);
    await logIn(gina, ginaUser, ginaPass, totp(ginaSecret));
    await gina.waitForSelector('#server-table tbody tr');
    out.gina_terminal = await connect(gina, node);
    await typeLine(gina, 'echo gina-$((40+2))');
    await waitForScreen(gina, 'terminal-screen', 'gina-42');

    // Frank (an editor and auditor) sees Erin's and Gina's live sessions
    // and ends them.
    await logIn(page, frankUser, frankPass, totp(frankSecret));
    await page.waitForSelector('#servers', { state: 'visible' });
    await page.click('#nav-sessions');
    await page.waitForSelector('#sessions-table tbody tr');
    out.sessions = await page.$$eval('#sessions-table tbody tr', (rows) =>
      rows.map((r) => Array.from(r.cells).map((c) => c.textContent)));
    await page.screenshot({ path: `${shots}/sessions.png`, fullPage: true });
    await page.click(`#sessions-table tbody tr:has(td:first-child:text-is("${ginaUser}")) button`);
    const ginaBegan = Date.now();
    await gina.waitForFunction(() => document.getElementById('terminal-status').textContent.includes('ended'),
      null, { timeout: 30000 });
    out.gina_ended_after_ms = Date.now() - ginaBegan;
    out.gina_screen = await screenText(gina, 'terminal-screen');
    out.gina_status = await gina.textContent('#terminal-status');
    await gina.screenshot({ path: `${shots}/terminal-ended.png`, fullPage: true });
    await ginaCtx.close();
    await page.click('#nav-sessions');
    await page.waitForSelector(`#sessions-table tbody tr:has(td:first-child:text-is("erin"))`);
    await page.click('#sessions-table tbody tr:has(td:first-child:text-is("erin")) button');
    // The Rust side notes when the ssh client ended.
    const began = Date.now();
    while (!fs.existsSync(endFile) && Date.now() - began < 30000) {
      await new Promise((r) => setTimeout(r, 100));
    }
    out.ended_after_ms = fs.existsSync(endFile) ? Date.now() - began : null;
    out.sessions_error = await page.textContent('#sessions-error');

    // Erin's earlier command, recorded: its transcript, as Frank (an
    // auditor) reads it. The node uploads it when the session ends.
    await page.click('#nav-recordings');
    await page.fill('#rec-user', 'erin');
    await page.selectOption('#rec-since', '3600');
    let found = false;
    for (let i = 0; i < 60 && !found; i++) {
      await page.click('#recording-search button');
      await page.waitForTimeout(500);
      found = await page.$$eval('#recordings-table tbody tr td:nth-child(5)', (c) =>
        c.some((x) => x.textContent.includes('web-recorded')));
    }
    out.recording_listed = found;
    if (found) {
      await page.click('#recordings-table tbody tr:has(td:text("echo web-recorded")) button');
      await page.waitForFunction(() => document.getElementById('transcript').textContent !== ''
        || document.getElementById('recordings-error').textContent !== '');
      out.transcript = await page.textContent('#transcript');
      out.recordings_error = await page.textContent('#recordings-error');
      await page.screenshot({ path: `${shots}/recordings.png`, fullPage: true });
      // The same session in the player: its output and its command marker.
      await page.click('#recordings-table tbody tr:has(td:text("echo web-recorded")) a:has-text("Play")');
      // Fast: a root shell's profile may have taken a while to start.
      await page.selectOption('#play-speed', '16');
      await waitForScreen(page, 'player-screen', 'web-recorded', 30000);
      await page.waitForSelector('#play-markers li');
      out.erin_markers = await page.$$eval('#play-markers li', (l) => l.map((x) => x.textContent));
    }
    // Alice's web terminal, recorded like any session: played at 16x,
    // paused, sought back to the start and forward again.
    await page.click('#nav-recordings');
    await page.fill('#rec-user', aliceUser);
    let played = false;
    for (let i = 0; i < 60 && !played; i++) {
      await page.click('#recording-search button');
      await page.waitForTimeout(500);
      played = await page.$$eval('#recordings-table tbody tr td:nth-child(5)', (c) =>
        c.some((x) => x.textContent === 'shell'));
    }
    out.alice_recording_listed = played;
    if (played) {
      // Newest first: her first terminal is the last shell (the second
      // tab's, ended by logout, came after it).
      await page.locator('#recordings-table tbody tr:has(td:text-is("shell"))').last()
        .locator('a:has-text("Play")').click();
      await page.selectOption('#play-speed', '16');
      await waitForScreen(page, 'player-screen', 'web-42 ünï→✓');
      await page.waitForFunction(() => document.getElementById('play-pause').textContent === 'Play',
        null, { timeout: 30000 });
      out.player_time = await page.textContent('#play-time');
      await page.screenshot({ path: `${shots}/player.png`, fullPage: true });
      await page.$eval('#play-seek', (s) => { s.value = '0'; s.dispatchEvent(new Event('input')); });
      await page.waitForTimeout(500);
      out.player_at_start = await screenText(page, 'player-screen');
      await page.$eval('#play-seek', (s) => { s.value = s.max; s.dispatchEvent(new Event('input')); });
      await waitForScreen(page, 'player-screen', 'exit 3', 5000).catch(() => {});
      out.player_at_end = await screenText(page, 'player-screen');
    }
  } catch (e) {
    await pageAtFailure(page, shots, 'failure.png', e);
    e.message += `\nso far: ${JSON.stringify(out)}`;
    throw e;
  } finally {
    await browser.close();
  }
  return out;
});
