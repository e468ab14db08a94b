// A real OpenID Connect provider for the edge's authentication tests: panva's `oidc-provider` (npm,
// pinned in xtask/src/prereq.rs, installed by `cargo xtask test` into target/tools/oidc-provider), with
// the client-credentials grant, resource indicators and JWT access tokens signed with RS256. The tests
// (tests/src/harness/oidc.rs) start one per test binary and get tokens from its /token endpoint like any
// OAuth client does; this script only configures the provider and adds what a test must steer or count.
//
// Settings (environment): OIDC_PORT, OIDC_AUDIENCE (the resource indicator, and the tokens' `aud`),
// OIDC_CLIENTS (JSON: [{"client_id", "client_secret", "scope", "ttl"?}]), OIDC_JWKS_MAX_AGE (seconds,
// the JWKS's cache-control max-age), OIDC_KEYS (JSON: private JWKs to start with; generated when absent).
//
// Test routes, beside the provider's own (only on this test process, never in a real provider):
//   GET  /_test/stats          {"jwks": n, "discovery": n}: requests the JWKS and discovery answered
//   POST /_test/keys           {"add": true} a new signing key first (it signs), the old ones still published;
//                              {"retire": true} only the signing key left; answers {"kids": [...]}
//   POST /_test/mode           {"jwks": "ok" | "garbage" | "error"}: what the JWKS endpoint answers
//   GET  /_test/keys           the private keys (to restart the provider with the same ones)
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const audience = process.env.OIDC_AUDIENCE;
const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]');
let jwksMaxAge = Number(process.env.OIDC_JWKS_MAX_AGE || '300');
const SCOPES = ['profiles:read', 'profiles:write', 'profiles:admin'];

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = process.env.OIDC_KEYS ? JSON.parse(process.env.OIDC_KEYS) : [newKey()];
let jwksMode = 'ok';
const stats = { jwks: 0, discovery: 0 };

function build() {
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: c.scope,
    })),
    scopes: SCOPES,
    jwks: { keys },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource, client) => {
          if (resource !== audience) throw new errors.InvalidTarget();
          const own = clients.find((c) => c.client_id === client.clientId);
          return {
            scope: SCOPES.join(' '),
            audience,
            accessTokenTTL: own?.ttl ?? 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc: server_error', err));
  return provider.callback();
}

let handler = build();

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readJson(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
  return text ? JSON.parse(text) : {};
}

const server = createServer(async (req, res) => {
  const path = req.url.split('?')[0];
  try {
    if (path === '/_test/stats') return json(res, 200, stats);
    if (path === '/_test/keys' && req.method === 'GET') return json(res, 200, { keys });
    if (path === '/_test/keys' && req.method === 'POST') {
      const body = await readJson(req);
      if (body.add) keys = [newKey(), ...keys];
      if (body.retire) keys = keys.slice(0, 1);
      handler = build();
      return json(res, 200, { kids: keys.map((k) => k.kid) });
    }
    if (path === '/_test/mode' && req.method === 'POST') {
      const body = await readJson(req);
      if (body.jwks) jwksMode = body.jwks;
      if (body.jwks_max_age !== undefined) jwksMaxAge = Number(body.jwks_max_age);
      return json(res, 200, { jwks: jwksMode, jwks_max_age: jwksMaxAge });
    }
    if (path === '/.well-known/openid-configuration') stats.discovery += 1;
    if (path === '/jwks') {
      stats.jwks += 1;
      if (jwksMode === 'garbage') {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': `max-age=${jwksMaxAge}` });
        return res.end('{"keys": "this is not a key set"');
      }
      if (jwksMode === 'error') return json(res, 500, { error: 'server_error' });
      // The provider's own JWKS answer, with the max-age a provider publishes for its keys.
      const writeHead = res.writeHead.bind(res);
      res.writeHead = (status, ...rest) => {
        res.setHeader('cache-control', `public, max-age=${jwksMaxAge}`);
        return writeHead(status, ...rest);
      };
    }
    return handler(req, res);
  } catch (err) {
    console.error('oidc: test route failed', err);
    return json(res, 400, { error: String(err) });
  }
});

server.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
