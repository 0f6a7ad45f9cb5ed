// Drives Debian's Chromium (headless, through playwright-core) through the
// web UI for crates/warden/tests/web.rs, and prints what it saw as one JSON
// line; the Rust test decides pass or fail. Inputs from the environment:
// WARDEN_URL, SHOTS (a directory for screenshots), ALICE, BOB, CAROL (who
// may request the role dba), DAVE (who may review it) and FRANK (who may
// end sessions) as "user:password:totp-secret", NODE (a server alice may
// reach), END_FILE (appears when the session Frank ends has ended).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const { chromium } = require('playwright-core');

/** RFC 4648 base32, as TOTP secrets are written. */
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const out = [];
  let bits = 0;
  let value = 0;
  for (const c of text.replace(/=+$/, '').toUpperCase()) {
    value = ((value << 5) | alphabet.indexOf(c)) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The RFC 6238 code (SHA-1, 6 digits, 30 s) for 30 s from now, made
 * just before it is typed (as the tests' oathtool helper does). */
function totp(secret) {
  const step = Math.floor((Date.now() / 1000 + 30) / 30);
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const h = crypto.createHmac('sha1', base32(secret)).update(msg).digest();
  const o = h[h.length - 1] & 15;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, '0');
}

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const url = env('WARDEN_URL');
const shots = env('SHOTS');
const [aliceUser, alicePass, aliceSecret] = env('ALICE').split(':');
const [bobUser, bobPass, bobSecret] = env('BOB').split(':');
const node = env('NODE');
const [carolUser, carolPass, carolSecret] = env('CAROL').split(':');
const [daveUser, davePass, daveSecret] = env('DAVE').split(':');
const [frankUser, frankPass, frankSecret] = env('FRANK').split(':');
const endFile = env('END_FILE');

async function logIn(page, user, password, otp) {
  await page.waitForSelector('#login-form', { state: 'visible' });
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.fill('#otp', otp);
  await page.click('#login-submit');
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
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

    // The audit log, newest first, then filtered to logins.
    await page.click('#nav-audit');
    await page.waitForSelector('#audit-table tbody tr');
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

    // Logging out forgets the session.
    await page.click('#logout');
    await page.waitForSelector('#login-form', { state: 'visible' });
    out.session_after_logout = await page.evaluate(() => fetch('/web/api/session').then((r) => r.status));
    out.nodes_after_logout = await page.evaluate(() => fetch('/web/api/nodes').then((r) => r.status));

    // Bob may reach servers but not read the audit log: auth says no.
    await logIn(page, bobUser, bobPass, totp(bobSecret));
    await page.waitForSelector('#server-table tbody tr');
    out.bob_audit_status = await page.evaluate(() => fetch('/web/api/audit').then((r) => r.status));
    out.bob_recordings_status = await page.evaluate(() => fetch('/web/api/recordings').then((r) => r.status));
    await page.click('#nav-audit');
    await page.waitForFunction(() => document.getElementById('audit-error').textContent !== '');
    out.bob_audit_error = await page.textContent('#audit-error');
    out.bob_audit_rows = await page.$$eval('#audit-table tbody tr', (r) => r.length);
    await page.screenshot({ path: `${shots}/audit-denied.png`, fullPage: true });
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

    // Frank (an editor and auditor) sees Erin's live session and ends it.
    await logIn(page, frankUser, frankPass, totp(frankSecret));
    await page.waitForSelector('#servers', { state: 'visible' });
    await page.click('#nav-sessions');
    await page.waitForSelector('#sessions-table tbody tr');
    out.sessions = await page.$$eval('#sessions-table tbody tr', (rows) =>
      rows.map((r) => Array.from(r.cells).map((c) => c.textContent)));
    await page.screenshot({ path: `${shots}/sessions.png`, fullPage: true });
    await page.click('#sessions-table tbody tr:first-child button');
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
    }
  } catch (e) {
    // What the page showed when it went wrong, for the test's message.
    if (page) {
      await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
      const text = await page.evaluate(() => document.body.innerText).catch(() => '');
      e.message += `\npage text:\n${text}`;
    }
    throw e;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
