// Single sign-on from the web UI, for crates/warden/tests/oidc.rs: the
// login page's connector button, the test identity provider's own login
// and consent forms, and back to the web UI logged in. Inputs: WARDEN_URL,
// SHOTS, CONNECTOR, ACCOUNT (a login the provider knows). Prints what it
// saw as one JSON line.
'use strict';
const { chromium } = require('playwright-core');
const { env, launch, main, pageAtFailure } = require('./lib');

const url = env('WARDEN_URL');
const shots = env('SHOTS');
const connector = env('CONNECTOR');

main(async () => {
  const browser = await launch(chromium);
  const out = {};
  let page;
  try {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    page = await ctx.newPage();
    await page.goto(url);
    const button = `#sso-list a:has-text("Log in with ${connector}")`;
    await page.waitForSelector(button);
    out.buttons = await page.$$eval('#sso-list a', (a) => a.map((x) => x.textContent));
    await page.screenshot({ path: `${shots}/login-sso.png`, fullPage: true });
    // The link the provider's round trip ends on (its completion value).
    let doneUrl = null;
    page.on('request', (r) => { if (r.url().includes('/web/sso/done?')) doneUrl = r.url(); });
    await page.click(button);
    // The provider's forms (oidc-provider's development interactions).
    await page.waitForSelector('input[name="login"]');
    out.provider_page = new URL(page.url()).origin;
    await page.fill('input[name="login"]', env('ACCOUNT'));
    await page.fill('input[name="password"]', 'any password');
    await page.click('button[type="submit"]');
    await page.waitForSelector('button:has-text("Continue")');
    await page.click('button:has-text("Continue")');
    await page.waitForFunction(() => {
      const w = document.getElementById('whoami');
      return w && w.textContent !== '';
    }, null, { timeout: 30000 });
    out.back_at = page.url();
    out.whoami = await page.textContent('#whoami');
    out.servers_shown = await page.isVisible('#servers');
    await page.screenshot({ path: `${shots}/after-sso.png`, fullPage: true });

    // The return link in another browser (a forwarded link): refused,
    // with or without a login of its own waiting.
    out.done_url_seen = doneUrl !== null;
    const other = await browser.newContext({ ignoreHTTPSErrors: true });
    const resp = await other.request.get(doneUrl);
    out.other_browser = resp.status();
    out.other_browser_text = await resp.text();
    // The other browser logs in too, but is held back from its own return
    // link: the first browser's link finishes nothing there, and its own
    // still does afterwards.
    const otherPage = await other.newPage();
    let ownDone = null;
    // (It arrives by redirect, which page.route cannot stop; DevTools'
    // Fetch domain can.)
    const cdp = await other.newCDPSession(otherPage);
    await cdp.send('Fetch.enable', { patterns: [{ urlPattern: '*/web/sso/done?*', requestStage: 'Request' }] });
    cdp.on('Fetch.requestPaused', async (e) => {
      ownDone = e.request.url;
      await cdp.send('Fetch.failRequest', { requestId: e.requestId, errorReason: 'Aborted' });
    });
    await otherPage.goto(url);
    await otherPage.click(button);
    await otherPage.waitForSelector('input[name="login"]');
    await otherPage.fill('input[name="login"]', env('ACCOUNT'));
    await otherPage.fill('input[name="password"]', 'any password');
    await otherPage.click('button[type="submit"]');
    await otherPage.waitForSelector('button:has-text("Continue")');
    await otherPage.click('button:has-text("Continue")').catch(() => {});
    const held = Date.now();
    while (!ownDone && Date.now() - held < 15000) await new Promise((r) => setTimeout(r, 100));
    if (!ownDone) throw new Error(`the other browser's login did not come back: at ${otherPage.url()}: ${await otherPage.textContent('body').catch(() => '')}`);
    await cdp.send('Fetch.disable');
    const replay = await otherPage.goto(doneUrl);
    out.replay_status = replay.status();
    out.replay_text = await otherPage.textContent('body');
    await otherPage.goto(ownDone);
    await otherPage.waitForFunction(() => {
      const w = document.getElementById('whoami');
      return w && w.textContent !== '';
    }, null, { timeout: 15000 });
    out.other_whoami = await otherPage.textContent('#whoami');
    await other.close();
  } catch (e) {
    await pageAtFailure(page, shots, 'sso-failure.png', e);
    throw e;
  } finally {
    await browser.close();
  }
  return out;
});
