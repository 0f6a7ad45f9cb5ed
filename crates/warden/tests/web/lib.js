// What the browser tests share: TOTP codes, the login form, Chromium.
'use strict';
const crypto = require('crypto');

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

/** The RFC 6238 code (SHA-1, 6 digits, 30 s) for `ahead` seconds from
 * now (30 by default, as the tests' oathtool helper does), made just
 * before it is typed. */
function totp(secret, ahead = 30) {
  const step = Math.floor((Date.now() / 1000 + ahead) / 30);
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const h = crypto.createHmac('sha1', base32(secret)).update(msg).digest();
  const o = h[h.length - 1] & 15;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, '0');
}

async function logIn(page, user, password, otp) {
  await page.waitForSelector('#login-form', { state: 'visible' });
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.fill('#otp', otp);
  await page.click('#login-submit');
}

/** Debian's Chromium, headless; `args` added to the usual ones. */
function launch(chromium, args = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...args,
    ],
  });
}

/** An input from the environment; missing is an error. */
function env(k) {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
}

/** What the page showed when a step failed: a screenshot in `shots` as
 * `name`, and its URL and text added to the error. */
async function pageAtFailure(page, shots, name, e) {
  if (!page) return;
  await page.screenshot({ path: `${shots}/${name}`, fullPage: true }).catch(() => {});
  const text = await page.evaluate(() => document.body.innerText).catch(() => '');
  e.message += `\npage ${page.url()}:\n${text}`;
}

/** Runs a driver: its result as one JSON line, or the error and exit 1. */
function main(run) {
  run().then((out) => console.log(JSON.stringify(out))).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

module.exports = { totp, logIn, launch, env, pageAtFailure, main };
