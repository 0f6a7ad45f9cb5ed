// Security keys in the browser, for crates/warden/tests/web.rs: Chromium's
// virtual authenticator (the DevTools WebAuthn domain) stands in for a
// USB key. The user logs in with a one-time code, adds the key on the
// Security keys page, logs out and logs in with password and key alone.
// Inputs: WARDEN_URL (its host must be under the cluster name, the
// relying party), HOST_RULES (Chromium's --host-resolver-rules), SHOTS,
// USER as "user:password:totp-secret", NODE (a server whose sessions need
// a second factor for her). Prints what it saw as one JSON line.
'use strict';
const { chromium } = require('playwright-core');
const { env, launch, logIn, main, pageAtFailure, totp } = require('./lib');

const url = env('WARDEN_URL');
const shots = env('SHOTS');
const [user, password, secret] = env('USER').split(':');

main(async () => {
  const browser = await launch(chromium, [`--host-resolver-rules=${env('HOST_RULES')}`]);
  const out = {};
  let page;
  try {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    page = await ctx.newPage();
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2', transport: 'usb', hasResidentKey: false,
        hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
      },
    });
    await page.goto(url);

    // No key yet: an empty code is answered with what to do.
    await logIn(page, user, password, '');
    await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
    out.no_key = await page.textContent('#login-error');

    // A code to log in; the next step's to prove it is her (each code
    // works once, and signing up used the current one).
    await logIn(page, user, password, totp(secret));
    await page.waitForSelector('#servers', { state: 'visible' });
    await page.click('#nav-account');
    await page.fill('#enrol-name', 'desk-key');
    await new Promise((r) => setTimeout(r, (30 - ((Date.now() / 1000) % 30) + 1) * 1000));
    await page.fill('#enrol-otp', totp(secret));
    await page.click('#enrol-submit');
    await page.waitForFunction(() => document.getElementById('enrolled').textContent.startsWith('Security key')
      || document.getElementById('account-error').textContent !== '');
    out.enrolled = await page.textContent('#enrolled');
    out.enrol_error = await page.textContent('#account-error');
    await page.waitForSelector('#devices-table tbody tr:has(td:text-is("desk-key"))');
    out.devices = await page.$$eval('#devices-table tbody tr', (rows) =>
      rows.map((r) => Array.from(r.cells).slice(0, 2).map((c) => c.textContent)));
    await page.screenshot({ path: `${shots}/security-keys.png`, fullPage: true });
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    out.credentials = credentials.length;

    await page.click('#logout');
    // Password and key, no code.
    await logIn(page, user, password, '');
    await page.waitForSelector('#servers', { state: 'visible' });
    out.whoami = await page.textContent('#whoami');
    const after = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    out.sign_count = after.credentials[0].signCount;

    // Her role asks for a second factor per session: the terminal asks,
    // the key answers, and the node accepts the one-minute certificate.
    await page.fill('#q', env('NODE'));
    await page.press('#q', 'Enter');
    await page.click(`#server-table tbody tr:has(td:text-is("${env('NODE')}")) button:has-text("Connect")`);
    await page.waitForSelector('#terminal-mfa', { state: 'visible' });
    out.mfa_why = await page.textContent('#terminal-mfa-why');
    await page.screenshot({ path: `${shots}/terminal-mfa.png`, fullPage: true });
    await page.click('#terminal-key');
    await page.waitForFunction(() => /^(Connected|Not connected)/.test(
      document.getElementById('terminal-status').textContent));
    out.mfa_terminal = await page.textContent('#terminal-status');
    await page.click('#terminal-screen');
    await page.keyboard.type('echo mfa-$((20+22))');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#terminal-screen .xterm-rows').innerText.includes('\nmfa-42'));
    await page.click('#terminal-close');
    await page.click('#logout');

    // A wrong password never reaches the key.
    await logIn(page, user, 'not the password', '');
    await page.waitForFunction(() => document.getElementById('login-error').textContent !== ''
      && !document.getElementById('login-error').textContent.startsWith('Touch'));
    out.wrong_password = await page.textContent('#login-error');
  } catch (e) {
    await pageAtFailure(page, shots, 'keys-failure.png', e);
    throw e;
  } finally {
    await browser.close();
  }
  return out;
});
