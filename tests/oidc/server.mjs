// oidc-provider configured as a strict SMART Backend Services authorization
// server, for conformance tests of the operator's client side.
//
//   node server.mjs CONFIG.json
//
// CONFIG: {
//   "clients": [{ "client_id": "...", "scope": "system/Patient.rs ...",
//                 "jwks": {"keys": [...]}            // registered inline, or
//                 "jwks_uri": "https://..."           // fetched by the server, or
//                 "hosted_jwks": {"keys": [...]} }],  // served here at /client-jwks/<client_id>
//                                                     // and registered as that jwks_uri
//   "scopes": ["system/Patient.rs", ...],        // every scope the server knows
//   "token_ttl": 300,                            // access token lifetime, seconds
//   "signing_algs": ["ES384", "RS384"]           // published in smart-configuration ("omit": left out)
// }
//
// On start it prints one JSON line: {"issuer": ..., "port": ..., "fhir_base_url": ...}.
// GET /stats answers {"token_requests": n, "tokens_issued": n}.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';

import Provider, { errors } from 'oidc-provider';

// The quick-start notices (in-memory adapter, development keys) are expected
// here; keep the test log for what matters.
for (const level of ['info', 'warn']) {
  const original = console[level];
  console[level] = (...args) => {
    if (typeof args[0] === 'string' && /^oidc-provider (NOTICE|WARNING)/.test(args[0])) return;
    original(...args);
  };
}

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const stats = { token_requests: 0, tokens_issued: 0 };

// Listen first so the issuer (which includes the port) is known. With
// config.tls ({cert, key}: PEM file paths) it serves HTTPS.
const server = config.tls
  ? createTlsServer({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) })
  : createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `${config.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
const tokenEndpoint = `${issuer}/token`;

const clients = config.clients.map((c) => {
  const client = {
    client_id: c.client_id,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'private_key_jwt',
    scope: c.scope,
  };
  if (c.jwks) client.jwks = c.jwks;
  if (c.jwks_uri) client.jwks_uri = c.jwks_uri;
  if (c.hosted_jwks) client.jwks_uri = `${issuer}/client-jwks/${encodeURIComponent(c.client_id)}`;
  return client;
});

const provider = new Provider(issuer, {
  clients,
  clientAuthMethods: ['private_key_jwt'],
  enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384'] },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
  },
  scopes: config.scopes,
  ttl: { ClientCredentials: config.token_ttl ?? 300 },
  clockTolerance: 0,
  // oidc-provider refuses to fetch jwks_uri from loopback addresses (its SSRF
  // guard). Every JWKS in these tests is served on loopback, so the guard's
  // dispatcher is dropped here, and only here.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  // SMART is stricter than OAuth in general: the audience is the token
  // endpoint exactly, sub equals iss, and an assertion lives at most 5 minutes.
  async assertJwtClientAuthClaimsAndHeader(ctx, claims, header) {
    const { InvalidClientAuth } = errors;
    if (claims.aud !== tokenEndpoint) throw new InvalidClientAuth('aud must be the token endpoint URL');
    if (claims.sub !== claims.iss) throw new InvalidClientAuth('sub must equal iss');
    if (typeof claims.iat !== 'number' || claims.exp - claims.iat > 300) {
      throw new InvalidClientAuth('the assertion must expire within 300 seconds of iat');
    }
    if (header.typ !== 'JWT') throw new InvalidClientAuth('typ must be JWT');
    if (!header.kid) throw new InvalidClientAuth('kid is required');
  },
});

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/fhir/.well-known/smart-configuration') {
    const metadata = {
      issuer,
      token_endpoint: tokenEndpoint,
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: config.signing_algs ?? ['RS384', 'ES384'],
      grant_types_supported: ['client_credentials'],
      scopes_supported: config.scopes,
      capabilities: ['client-confidential-asymmetric'],
    };
    // "omit" leaves the algorithm list out, as some EHRs do.
    if (config.signing_algs === 'omit') delete metadata.token_endpoint_auth_signing_alg_values_supported;
    ctx.body = metadata;
    return;
  }
  if (ctx.method === 'GET' && ctx.path.startsWith('/client-jwks/')) {
    const id = decodeURIComponent(ctx.path.slice('/client-jwks/'.length));
    const entry = config.clients.find((c) => c.client_id === id && c.hosted_jwks);
    if (!entry) {
      ctx.status = 404;
      return;
    }
    ctx.body = entry.hosted_jwks;
    return;
  }
  if (ctx.method === 'GET' && ctx.path === '/stats') {
    ctx.body = stats;
    return;
  }
  // Both counts are taken when the answer is ready, so a request still in
  // flight never shows as received but not issued.
  const isToken = ctx.method === 'POST' && ctx.path === '/token';
  try {
    await next();
  } finally {
    if (isToken) {
      stats.token_requests += 1;
      if (ctx.status === 200) stats.tokens_issued += 1;
    }
  }
});

// Why a request was refused, on stderr, for the test log.
provider.on('grant.error', (ctx, err) => {
  const detail = [err.error_description, err.error_detail, err.cause?.message, err.cause?.cause?.message, err.cause?.cause?.cause?.message].filter(Boolean).join('; ');
  process.stderr.write(`grant.error: ${err.message}: ${detail}\n`);
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, port, fhir_base_url: `${issuer}/fhir` })}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
