// Test-only OpenID provider for Warden's OIDC end-to-end tests.
//
//   node provider.js
//
// Env:  OIDC_PORT           port on 127.0.0.1 (0/unset: pick a free one)
//       OIDC_REDIRECT_URIS  comma-separated redirect URIs of the client
//       OIDC_CLIENT_ID      default "warden"
//       OIDC_CLIENT_SECRET  default "warden-test-secret-0123456789"
//
// Prints exactly one line "READY <issuer>" on stdout once listening; all
// other output (including oidc-provider's own warnings) goes to stderr.
// Login uses oidc-provider's built-in devInteractions forms: the login name
// is the account id, any password is accepted.

import crypto from 'node:crypto';
import http from 'node:http';
import querystring from 'node:querystring';

import Provider from 'oidc-provider';

// oidc-provider prints its development warnings with console.*; keep stdout
// for the READY line only.
console.log = console.info = console.warn = console.error;

const CLIENT_ID = process.env.OIDC_CLIENT_ID || 'warden';
const CLIENT_SECRET = process.env.OIDC_CLIENT_SECRET || 'warden-test-secret-0123456789';
const REDIRECT_URIS = (process.env.OIDC_REDIRECT_URIS || '')
  .split(',').map((s) => s.trim()).filter(Boolean);
if (REDIRECT_URIS.length === 0) {
  console.error('OIDC_REDIRECT_URIS is required');
  process.exit(2);
}

const alice = { email_verified: true, name: 'Alice Example', groups: ['db-admins', 'dev'] };
const ACCOUNTS = {
  alice: { ...alice, email: 'alice@example.com' },
  bob: { email: 'bob@example.com', email_verified: true, groups: ['marketing'] },
  noemail: { groups: ['db-admins'] },
  'aud-other': { ...alice, email: 'aud-other@example.com' },
  'aud-broad': { ...alice, email: 'aud-broad@example.com' },
};
// Accounts whose ID token (from the token endpoint) gets a different `aud`.
const AUD_OVERRIDE = {
  'aud-other': 'another-app',
  'aud-broad': [CLIENT_ID, 'another-app'],
};

// Fresh RS256 signing key for every run.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const KID = `test-${crypto.randomBytes(4).toString('hex')}`;
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: KID, alg: 'RS256', use: 'sig' };

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function signJwt(payload) {
  const input = `${b64url({ alg: 'RS256', typ: 'JWT', kid: KID })}.${b64url(payload)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${sig}`;
}

// The issuer contains the port, so listen first and build the provider after.
const server = http.createServer();
server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: REDIRECT_URIS,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    claims: {
      acr: null, auth_time: null, sid: null, // oidc-provider defaults
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, id) {
      const claims = ACCOUNTS[id];
      if (!claims) return undefined;
      // oidc-provider filters these by the granted scopes/claims.
      return { accountId: id, claims: async () => ({ sub: id, preferred_username: id, ...claims }) };
    },
  });

  provider.on('server_error', (ctx, err) => console.error('server_error', err));

  provider.use(async (ctx, next) => {
    // Reject unknown login names on the dev login form: the authorization
    // request ends with error=access_denied at the redirect_uri (without this
    // the code would be issued and only the token request would fail).
    if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)
        && ctx.is('application/x-www-form-urlencoded')) {
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      const body = querystring.parse(Buffer.concat(chunks).toString());
      // The stream is consumed; oidc-provider's body parser falls back to
      // req.body (and logs a one-time warning about it).
      ctx.req.body = body;
      if (body.prompt === 'login' && !Object.hasOwn(ACCOUNTS, body.login)) {
        console.error(`login rejected: unknown account ${JSON.stringify(body.login)}`);
        ctx.status = 303;
        ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, {
          error: 'access_denied',
          error_description: 'unknown account',
        }, { mergeWithLastSubmission: false }));
        return;
      }
    }

    await next();

    // Re-sign the ID token with a different `aud` for the aud-* accounts.
    if (ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.id_token) {
      const payload = JSON.parse(Buffer.from(ctx.body.id_token.split('.')[1], 'base64url'));
      if (Object.hasOwn(AUD_OVERRIDE, payload.sub)) {
        payload.aud = AUD_OVERRIDE[payload.sub];
        ctx.body = { ...ctx.body, id_token: signJwt(payload) };
      }
    }
  });

  server.on('request', provider.callback());
  process.stdout.write(`READY ${issuer}\n`);
});

server.on('error', (err) => {
  console.error(err);
  process.exit(1);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
