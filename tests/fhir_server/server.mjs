// In-memory FHIR R4 server for the cm-fhir test suite. It does network I/O: one HTTP listener on
// 127.0.0.1 only (FHIR_SERVER_HOST overrides it for the compose "ehr" profile). FHIR REST
// semantics (CRUD, search, history, batch/transaction, conditional
// create/update/delete, urn:uuid reference rewriting) come from @medplum/fhir-router; the store
// with the checks a real server makes on every write is in repository.mjs. README.md beside this
// file says what is and is not checked.
//
// Usage: node server.mjs [port] [max-transaction-entries]
//   port 0 or none: an ephemeral port (FHIR_SERVER_PORT also works); max-transaction-entries caps
//   every transaction Bundle like servers that limit their size (FHIR_SERVER_MAX_TRANSACTION_ENTRIES
//   also works; none or 0: no cap beyond the router's own).
// Prints "listening <port>" on stdout when ready. FHIR base: http://127.0.0.1:<port>/fhir
// Fault mode (faults.mjs): POST /$test-faults makes it fail, slow down, drop connections or hide
// transactions; GET /$test-requests counts what it received. SMART mode (smart.mjs): POST
// /$test-auth registers a client; then a token endpoint checks its signed assertions and every
// FHIR request needs a bearer token.

import http from 'node:http';
import { created, getStatus, isOk, normalizeOperationOutcome } from '@medplum/core';
import { FhirRouter } from '@medplum/fhir-router';
import { Faults, requestKind } from './faults.mjs';
import { ValidatingRepository } from './repository.mjs';
import { SmartAuth } from './smart.mjs';

const FHIR_BASE = '/fhir';
const MAX_BODY_BYTES = 50 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

// ---------------------------------------------------------------------------------------------
// Router adjustments

/**
 * PUT Type/id of an id that does not exist yet is an update-as-create: R4 answers 201 Created,
 * the bare router answers 200. Wraps that one route (first registered wins in the router).
 */
function answerUpdateAsCreateWith201(router) {
  const route = router.router.routes.find(
    (r) => r.method === 'PUT' && r.path.length === 2 && r.path.every((segment) => segment.param),
  );
  const update = route.handler;
  route.handler = async (req, repo, fhirRouter, options) => {
    const { resourceType, id } = req.params;
    const existed = await repo.readResource(resourceType, id).then(
      () => true,
      () => false,
    );
    const response = await update(req, repo, fhirRouter, options);
    return !existed && isOk(response[0]) ? [created, ...response.slice(1)] : response;
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

function capabilityStatement(faults) {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'cm-fhir test FHIR server (in-memory)' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [{ mode: 'server', interaction: faults.interactions() }],
  };
}

function outcome(status, code, text) {
  return [
    status,
    { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] },
  ];
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new Error('too large');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': FHIR_JSON }),
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function resourceHeaders(resource, status) {
  const headers = {};
  const versionId = resource?.meta?.versionId;
  if (resource?.id && versionId) {
    headers.ETag = `W/"${versionId}"`;
    if (status === 201) {
      const { resourceType, id } = resource;
      headers.Location = `${FHIR_BASE}/${resourceType}/${id}/_history/${versionId}`;
    }
  }
  if (resource?.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  return headers;
}

/**
 * Paging links: `self`, and `next` (`_offset` moved on by `_count`) when the page is full. The
 * router pages with `_count` and `_offset` but gives no links.
 */
function addPageLinks(bundle, req, url) {
  const base = `http://${req.headers.host}${url.pathname}`;
  const links = [{ relation: 'self', url: `${base}${url.search}` }];
  const count = Number(url.searchParams.get('_count'));
  if (count > 0 && (bundle.entry?.length ?? 0) >= count) {
    const next = new URLSearchParams(url.searchParams);
    next.set('_offset', String(Number(url.searchParams.get('_offset') ?? 0) + count));
    links.push({ relation: 'next', url: `${base}?${next}` });
  }
  bundle.link = links;
}

/** A transaction longer than the cap is refused whole, as a size-capped server does. */
function transactionTooLarge(body, maxEntries) {
  if (!maxEntries || body?.resourceType !== 'Bundle' || body.type !== 'transaction') {
    return undefined;
  }
  const count = body.entry?.length ?? 0;
  if (count <= maxEntries) {
    return undefined;
  }
  const text = `Transaction has ${count} entries; this server accepts at most ${maxEntries}`;
  return outcome(400, 'too-costly', text);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function readJson(req) {
  try {
    const value = JSON.parse((await readBody(req)) || '{}');
    return value !== null && typeof value === 'object' ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The SMART test endpoints (smart.mjs); true when `req` was one of them. */
async function authControl(auth, faults, req, res, pathname) {
  if (pathname === '/$test-auth' && req.method === 'POST') {
    const problem = auth.register((await readJson(req)) ?? {});
    send(res, ...(problem ? outcome(400, 'invalid', problem) : [200, { enabled: true }]));
    return true;
  }
  if (pathname === '/$test-auth' && req.method === 'DELETE') {
    auth.disable();
    send(res, 200, { enabled: false });
    return true;
  }
  if (pathname === '/$test-auth/revoke' && req.method === 'POST') {
    auth.revoke();
    send(res, 200, { enabled: auth.enabled });
    return true;
  }
  if (pathname === '/auth/token' && req.method === 'POST') {
    faults.count('POST', 'token');
    const form = new URLSearchParams(await readBody(req));
    const tokenUrl = `http://${req.headers.host}/auth/token`;
    const [status, body] = auth.token(form, req.headers.authorization, tokenUrl);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(JSON.stringify(body));
    return true;
  }
  if (pathname === `${FHIR_BASE}/.well-known/smart-configuration` && req.method === 'GET') {
    faults.count('GET', 'smart-configuration');
    if (!auth.enabled) {
      send(res, ...outcome(404, 'not-found', 'SMART auth is off'));
    } else {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(auth.configuration(`http://${req.headers.host}`)));
    }
    return true;
  }
  return false;
}

/** The fault-mode control endpoints (faults.mjs); true when `req` was one of them. */
async function control(faults, req, res, pathname) {
  if (pathname === '/$test-faults') {
    if (req.method === 'POST') {
      let options;
      try {
        options = JSON.parse((await readBody(req)) || '{}');
      } catch {
        send(res, ...outcome(400, 'structure', 'Faults must be a JSON object'));
        return true;
      }
      const problem = faults.set(options ?? {});
      send(res, ...(problem ? outcome(400, 'invalid', problem) : [200, faults.options]));
      return true;
    }
    if (req.method === 'DELETE') {
      faults.set({});
    }
    send(res, 200, faults.options);
    return true;
  }
  if (pathname === '/$test-requests') {
    if (req.method === 'DELETE') {
      faults.resetCounts();
    }
    send(res, 200, faults.counts);
    return true;
  }
  return false;
}

async function handle(router, repo, faults, auth, req, res, maxEntries) {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  if (await control(faults, req, res, url.pathname)) {
    return;
  }
  if (await authControl(auth, faults, req, res, url.pathname)) {
    return;
  }
  if (url.pathname !== FHIR_BASE && !url.pathname.startsWith(`${FHIR_BASE}/`)) {
    return send(res, ...outcome(404, 'not-found', `FHIR base is ${FHIR_BASE}`));
  }
  const path = url.pathname.slice(FHIR_BASE.length).replace(/^\/+/, '');
  if (req.method === 'GET' && path === 'metadata') {
    faults.count('GET', 'metadata');
    return send(res, 200, capabilityStatement(faults));
  }
  if (auth.enabled && !auth.authorised(req.headers.authorization)) {
    faults.count(req.method ?? 'GET', 'unauthorised');
    return send(res, ...outcome(401, 'login', 'A valid bearer token is required'), {
      'WWW-Authenticate': 'Bearer',
    });
  }
  let body;
  if (['POST', 'PUT', 'PATCH'].includes(req.method ?? '')) {
    const contentType = (req.headers['content-type'] ?? '').split(';')[0].trim();
    if (!/^application\/(fhir\+json|json|json-patch\+json)$/.test(contentType)) {
      return send(res, ...outcome(415, 'not-supported', 'Only JSON bodies are supported'));
    }
    let text;
    try {
      text = await readBody(req);
    } catch {
      return send(res, ...outcome(413, 'too-costly', 'Request body too large'));
    }
    if (!text.trim()) {
      return send(res, ...outcome(400, 'required', 'Request body is empty'));
    }
    try {
      body = JSON.parse(text);
    } catch {
      return send(res, ...outcome(400, 'structure', 'Request body is not valid JSON'));
    }
  }
  faults.count(req.method ?? 'GET', requestKind(path, body));
  const decision = faults.decide();
  if (decision.delayMs > 0) {
    await sleep(decision.delayMs);
  }
  if (decision.fail?.drop) {
    return req.socket.destroy();
  }
  if (decision.fail) {
    const { status, headers } = decision.fail;
    const code = status === 429 ? 'throttled' : 'transient';
    return send(res, ...outcome(status, code, `Injected fault ${status}`), headers);
  }
  if (path === '') {
    const refused = faults.refusesBundle(body);
    if (refused) {
      return send(res, ...outcome(400, 'not-supported', refused));
    }
    const tooLarge = transactionTooLarge(body, maxEntries);
    if (tooLarge) {
      return send(res, ...tooLarge);
    }
  }
  const [result, resource] = await router.handleRequest(
    {
      method: req.method,
      url: `${path}${url.search}`,
      pathname: '',
      body,
      params: {},
      query: {},
      headers: req.headers,
      // Without this flag the router treats a transaction like a batch (no all-or-nothing).
      config: { transactions: true },
    },
    repo,
  );
  const status = getStatus(result);
  if (decision.dropAfter) {
    return req.socket.destroy();
  }
  if (status >= 400 || !resource) {
    return send(res, status, normalizeOperationOutcome(result));
  }
  if (req.method === 'GET' && resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    addPageLinks(resource, req, url);
  }
  const prefer = String(req.headers.prefer ?? '');
  const headers = resourceHeaders(resource, status);
  if (prefer.includes('return=minimal')) {
    return send(res, status, undefined, headers);
  }
  if (prefer.includes('return=OperationOutcome')) {
    return send(res, status, result, headers);
  }
  return send(res, status, resource, headers);
}

function main() {
  const started = process.hrtime.bigint();
  const repo = new ValidatingRepository();
  const faults = new Faults();
  const auth = new SmartAuth();
  const router = new FhirRouter();
  answerUpdateAsCreateWith201(router);
  const maxEntries = Number(process.argv[3] ?? process.env.FHIR_SERVER_MAX_TRANSACTION_ENTRIES ?? 0);
  const server = http.createServer((req, res) => {
    handle(router, repo, faults, auth, req, res, maxEntries).catch((err) => {
      process.stderr.write(`internal error: ${err?.stack ?? err}\n`);
      if (!res.headersSent) {
        send(res, ...outcome(500, 'exception', 'Internal server error'));
      } else {
        res.destroy();
      }
    });
  });
  const port = Number(process.argv[2] ?? process.env.FHIR_SERVER_PORT ?? 0);
  server.listen(port, process.env.FHIR_SERVER_HOST ?? '127.0.0.1', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stderr.write(`definitions loaded and server up in ${ms.toFixed(0)} ms\n`);
    process.stdout.write(`listening ${server.address().port}\n`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
