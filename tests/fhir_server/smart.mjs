// SMART Backend Services for the test FHIR server: a token endpoint that checks a client's signed
// assertion (private_key_jwt, RS384 or ES384) against the JWKS registered for it, or its client
// secret (HTTP Basic), and FHIR requests that then need one of its bearer tokens. Off until a test
// registers a client:
//   POST   /$test-auth          {"client_id", "jwks"?, "client_secret"?, "token_lifetime"?: 300}
//   POST   /$test-auth/revoke   forget every token issued (the next FHIR request gets 401)
//   DELETE /$test-auth          off again
//   GET    /fhir/.well-known/smart-configuration   token_endpoint and what it supports
//   POST   /auth/token          client_credentials -> {access_token, token_type, expires_in, scope}

import crypto from 'node:crypto';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const ALGORITHMS = { RS384: 'RSA', ES384: 'EC' };
const MAX_LIFETIME_SECONDS = 300;

function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

export class SmartAuth {
  constructor() {
    this.client = undefined;
    this.tokens = new Map(); // token -> expiry (ms)
    this.seenJti = new Set();
  }

  get enabled() {
    return this.client !== undefined;
  }

  register(options) {
    if (typeof options?.client_id !== 'string' || !(options.jwks || options.client_secret)) {
      return 'client_id and jwks or client_secret are required';
    }
    this.client = { token_lifetime: 300, ...options };
    this.tokens.clear();
    this.seenJti.clear();
    return undefined;
  }

  disable() {
    this.client = undefined;
    this.tokens.clear();
  }

  revoke() {
    this.tokens.clear();
  }

  configuration(origin) {
    return {
      token_endpoint: `${origin}/auth/token`,
      token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_basic'],
      token_endpoint_auth_signing_alg_values_supported: Object.keys(ALGORITHMS),
      grant_types_supported: ['client_credentials'],
      scopes_supported: ['system/*.rs', 'system/*.cu', 'system/Task.cu', 'system/Patient.rs'],
      capabilities: ['client-confidential-asymmetric', 'client-confidential-symmetric'],
    };
  }

  /** Whether the Authorization header carries a live token. */
  authorised(header) {
    const token = /^Bearer (.+)$/.exec(header ?? '')?.[1];
    const expiry = token ? this.tokens.get(token) : undefined;
    return expiry !== undefined && expiry > Date.now();
  }

  /** [status, body] for a token request; `form` is URLSearchParams, `tokenUrl` our own URL. */
  token(form, authorization, tokenUrl) {
    const refuse = (error, description) => [400, { error, error_description: description }];
    if (!this.enabled) {
      return refuse('invalid_client', 'no client is registered');
    }
    if (form.get('grant_type') !== 'client_credentials') {
      return refuse('unsupported_grant_type', 'only client_credentials');
    }
    const problem = form.get('client_assertion')
      ? this.checkAssertion(form, tokenUrl)
      : this.checkSecret(authorization);
    if (problem) {
      return [401, { error: 'invalid_client', error_description: problem }];
    }
    const token = crypto.randomBytes(24).toString('base64url');
    const lifetime = Number(this.client.token_lifetime);
    this.tokens.set(token, Date.now() + lifetime * 1000);
    return [200, { access_token: token, token_type: 'bearer', expires_in: lifetime, scope: form.get('scope') ?? '' }];
  }

  checkSecret(authorization) {
    const encoded = /^Basic (.+)$/.exec(authorization ?? '')?.[1];
    if (!encoded || !this.client.client_secret) {
      return 'no client authentication';
    }
    const [id, secret] = Buffer.from(encoded, 'base64').toString('utf8').split(':').map(decodeURIComponent);
    return id === this.client.client_id && secret === this.client.client_secret
      ? undefined
      : 'wrong client id or secret';
  }

  checkAssertion(form, tokenUrl) {
    if (form.get('client_assertion_type') !== ASSERTION_TYPE) {
      return 'client_assertion_type must be jwt-bearer';
    }
    const parts = form.get('client_assertion').split('.');
    if (parts.length !== 3) {
      return 'the assertion is not a JWS';
    }
    let header;
    let claims;
    try {
      header = decodePart(parts[0]);
      claims = decodePart(parts[1]);
    } catch {
      return 'the assertion cannot be decoded';
    }
    if (!(header.alg in ALGORITHMS)) {
      return `alg ${header.alg} is not accepted`;
    }
    const jwk = (this.client.jwks?.keys ?? []).find((k) => k.kid === header.kid);
    if (!jwk || jwk.kty !== ALGORITHMS[header.alg]) {
      return 'no registered key has that kid and type';
    }
    const { alg, use, key_ops: ops, kid, ...material } = jwk;
    const key = crypto.createPublicKey({ key: material, format: 'jwk' });
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    const signature = Buffer.from(parts[2], 'base64url');
    const options = header.alg === 'ES384' ? { key, dsaEncoding: 'ieee-p1363' } : key;
    if (!crypto.verify('sha384', signed, options, signature)) {
      return 'bad signature';
    }
    const now = Math.floor(Date.now() / 1000);
    if (claims.iss !== this.client.client_id || claims.sub !== this.client.client_id) {
      return 'iss and sub must be the client id';
    }
    if (claims.aud !== tokenUrl) {
      return 'aud must be the token endpoint';
    }
    if (typeof claims.exp !== 'number' || claims.exp <= now || claims.exp > now + MAX_LIFETIME_SECONDS + 5) {
      return 'exp must be in the future and at most five minutes away';
    }
    if (typeof claims.jti !== 'string' || this.seenJti.has(claims.jti)) {
      return 'jti missing or used before';
    }
    this.seenJti.add(claims.jti);
    return undefined;
  }
}
