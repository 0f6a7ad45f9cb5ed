// The web UI's benchmark, run by bench/web.sh (not by the tests): page
// loads and a terminal keystroke's echo, measured in Chromium. Inputs:
// WARDEN_URL, USER ("user:password:totp-secret"), NODE, LOGIN, RUNS
// (page loads), KEYS (keystrokes). Prints one JSON line of milliseconds.
'use strict';
const { chromium } = require('playwright-core');
const { env, launch, logIn, main, totp } = require('./lib');

const url = env('WARDEN_URL');
const [user, password, secret] = env('USER').split(':');
const runs = Number(process.env.RUNS || 20);
const keys = Number(process.env.KEYS || 200);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const summary = (xs) => ({ p50: pct(xs, 50), p99: pct(xs, 99), n: xs.length });

main(async () => {
  const browser = await launch(chromium);
  const out = {};
  try {
    // The login page, cold: a fresh profile each time (nothing cached).
    const cold = [];
    for (let i = 0; i < runs; i++) {
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
      const page = await ctx.newPage();
      const t0 = Date.now();
      await page.goto(url);
      await page.waitForSelector('#login-form', { state: 'visible' });
      cold.push(Date.now() - t0);
      await ctx.close();
    }
    out.login_page_cold_ms = summary(cold);
    // The baseline: a static page of the same proxy (the device-login
    // page: no script), loaded the same way.
    const plain = [];
    for (let i = 0; i < runs; i++) {
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
      const page = await ctx.newPage();
      const t0 = Date.now();
      await page.goto(`${url}web/device`);
      await page.waitForSelector('form', { state: 'visible' });
      plain.push(Date.now() - t0);
      await ctx.close();
    }
    out.static_page_cold_ms = summary(plain);

    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await ctx.newPage();
    await page.goto(url);
    // The CLI's login used this step's code: wait for the next.
    await new Promise((r) => setTimeout(r, (30 - ((Date.now() / 1000) % 30) + 1) * 1000));
    await logIn(page, user, password, totp(secret));
    await page.waitForSelector('#server-table tbody tr');
    // Logged in, warm cache: a reload until the servers are listed.
    const warm = [];
    for (let i = 0; i < runs; i++) {
      const t0 = Date.now();
      await page.reload();
      await page.waitForSelector('#server-table tbody tr');
      warm.push(Date.now() - t0);
    }
    out.servers_page_ms = summary(warm);

    // A keystroke's echo: from the key entering the terminal to its echo
    // arriving from the node (bytes), and to the frame that shows it.
    await page.goto(`${url}#terminal/${encodeURIComponent(env('NODE'))}/${encodeURIComponent(env('LOGIN'))}`);
    await page.waitForFunction(() => document.getElementById('terminal-status').textContent.startsWith('Connected'));
    await page.waitForTimeout(1000);
    const echo = await page.evaluate(async (n) => {
      const { term, ws } = state.terminal;
      const bytes = [];
      const shown = [];
      const once = (target, type) => new Promise((r) => target.addEventListener(type, r, { once: true }));
      for (let i = 0; i < n; i++) {
        if (i % 60 === 0) {
          term.input('\u0015'); // Ctrl-U: keep the line short
          await new Promise((r) => setTimeout(r, 50));
        }
        const rendered = new Promise((r) => { const d = term.onRender(() => { d.dispose(); r(); }); });
        const t0 = performance.now();
        const arrived = once(ws, 'message');
        term.input('x', true);
        await arrived;
        bytes.push(performance.now() - t0);
        await rendered;
        shown.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 5));
      }
      return { bytes, shown };
    }, keys);
    out.echo_bytes_ms = summary(echo.bytes);
    out.echo_shown_ms = summary(echo.shown);
  } finally {
    await browser.close();
  }
  return out;
});
