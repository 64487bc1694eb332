// The test FHIR server's store: @medplum/fhir-router's MemoryRepository (in memory, no disk or
// network I/O) plus the checks a real R4 server makes on every write, which the bare repository
// skips: validation (see validation.mjs), validation against stored profiles named in
// meta.profile, existence and type of referenced resources, server-assigned ids on create, and
// all-or-nothing transactions (a failed transaction restores the state from before it).

import { deepClone, parseSearchRequest, validateResource, OperationOutcomeError } from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import {
  error,
  hasErrors,
  jsonShapeIssues,
  loadDefinitions,
  loadTerminology,
  makeExpander,
  outcomeIssues,
  typedChecks,
} from './validation.mjs';

const CONDITIONAL_REFERENCE = /^[A-Z][A-Za-z]+\?./;

export class ValidatingRepository extends MemoryRepository {
  constructor() {
    super();
    loadDefinitions();
    this.expand = makeExpander(loadTerminology());
    this.transactionDepth = 0;
    this.pendingReferenceChecks = [];
    this.storingUpdate = false;
    // identifier "system|value" -> ids, per resource type; only grows (candidates are re-checked)
    this.identifierIndex = new Map();
    // resource object -> what its validation's typed walk found (see relativeReferences)
    this.checkedReferences = new WeakMap();
  }

  /**
   * Searches by one exact identifier ``system|value`` (what conditional writes and our tests ask; not
   * ``system|``, every value of a system) look at the resources holding that identifier only,
   * instead of evaluating the search on every stored resource of the type. The index may hold
   * stale ids (older versions, rolled-back writes). A candidate whose stored version holds an
   * identifier with exactly that system and value matches (the router's matcher says so too:
   * that is what the token means); any other candidate is left to the router's matcher, so
   * results are exactly the same. Evaluating the router's generic search parameter on a large
   * resource costs milliseconds; this check costs microseconds. Sorting goes to the router.
   */
  search(request) {
    const filter = request.filters?.length === 1 ? request.filters[0] : undefined;
    const exact =
      filter?.code === 'identifier' &&
      filter.operator === 'eq' &&
      typeof filter.value === 'string' &&
      filter.value.includes('|') &&
      !filter.value.endsWith('|') && // "system|" means any value of the system: not one key
      !filter.value.includes(',');
    if (!exact) {
      return super.search(request);
    }
    const ids = this.identifierIndex.get(request.resourceType)?.get(filter.value) ?? new Set();
    const byId = this.resources.get(request.resourceType) ?? new Map();
    const separator = filter.value.indexOf('|');
    const system = filter.value.slice(0, separator);
    const value = filter.value.slice(separator + 1);
    const held = (resource) =>
      [resource.identifier ?? []]
        .flat()
        .some((i) => (i.system ?? '') === system && i.value === value);
    const matched = [];
    const unsure = new Map();
    for (const id of ids) {
      const resource = byId.get(id);
      if (resource && system && held(resource)) {
        matched.push(resource);
      } else if (resource) {
        unsure.set(id, resource);
      }
    }
    if (unsure.size === 0 && !request.sortRules?.length) {
      return this.searchset(matched, request);
    }
    const all = this.resources;
    this.resources = new Map([[request.resourceType, new Map([...matched.map((r) => [r.id, r]), ...unsure])]]);
    try {
      return super.search(request); // reads this.resources before its first await
    } finally {
      this.resources = all;
    }
  }

  /** The router's searchset answer for these matches (copies, as the router hands out). */
  async searchset(matches, request) {
    let entries = matches.map((resource) => ({ resource: deepClone(resource) }));
    if (request.offset !== undefined) {
      entries = entries.slice(request.offset);
    }
    if (request.count !== undefined) {
      entries = entries.slice(0, request.count);
    }
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: entries.length ? entries : undefined,
      total: matches.length,
    };
  }

  indexIdentifiers(resource) {
    let byKey = this.identifierIndex.get(resource.resourceType);
    if (!byKey) {
      byKey = new Map();
      this.identifierIndex.set(resource.resourceType, byKey);
    }
    // Bundle (like a few other types) has one identifier, not a list.
    for (const identifier of [resource.identifier ?? []].flat()) {
      const key = `${identifier.system ?? ''}|${identifier.value ?? ''}`;
      if (!byKey.has(key)) {
        byKey.set(key, new Set());
      }
      byKey.get(key).add(resource.id);
    }
  }

  async store(resource) {
    const stored = await super.createResource(resource);
    this.indexIdentifiers(stored);
    return stored;
  }

  createResource(resource, options) {
    if (this.storingUpdate) {
      // MemoryRepository.updateResource stores through createResource; already validated.
      return this.store(resource);
    }
    return this.createValidated(resource, options);
  }

  async createValidated(resource, options) {
    // R4 create: the server assigns the id. The router pre-assigns ids to transaction entries.
    const { id, ...rest } = resource;
    const toStore = await this.resolveConditionalReferences(
      options?.assignedId && id ? resource : rest,
    );
    await this.validate(toStore);
    await this.checkReferences(toStore);
    return this.store(toStore);
  }

  async updateResource(given, options) {
    const resource = await this.resolveConditionalReferences(given);
    await this.validate(resource);
    await this.checkReferences(resource);
    let stored;
    this.storingUpdate = true;
    try {
      stored = super.updateResource(resource, options);
    } finally {
      this.storingUpdate = false;
    }
    return stored;
  }

  async validate(resource) {
    const issues = [...jsonShapeIssues(resource)];
    // validateResource throws on structural errors (unknown elements, cardinality, types,
    // primitive formats, invariants) and returns warnings otherwise; collect both kinds.
    issues.push(...outcomeIssues(() => validateResource(resource)));
    const structurallyValid = !hasErrors(issues);
    try {
      const checked = typedChecks(resource, this.expand);
      issues.push(...checked.issues);
      // kept for the reference check of this same content (a transaction's end, or just after)
      this.checkedReferences.set(resource, { json: JSON.stringify(resource), ...checked });
    } catch (err) {
      if (structurallyValid) {
        throw err;
      }
    }
    for (const profileUrl of resource.meta?.profile ?? []) {
      const profile = await this.storedProfile(profileUrl);
      if (!profile) {
        continue; // a profile the server does not hold is not checked (as in most servers)
      }
      if (!profile.snapshot?.element?.length) {
        const text = `Profile ${profileUrl} has no snapshot`;
        issues.push(error('not-supported', text, 'meta.profile'));
        continue;
      }
      issues.push(...outcomeIssues(() => validateResource(resource, { profile })));
    }
    if (hasErrors(issues)) {
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
    // The in-memory search matches uri parameters by prefix; a canonical URL must match exactly
    // (cm-goal must not find cm-goal-qualitative-reason).
    return found.find((sd) => sd.url === url && (!version || sd.version === version));
  }

  /** A copy of the resource whose conditional references ("Type?search") point to Type/id. */
  async resolveConditionalReferences(resource) {
    const copy = structuredClone(resource);
    const issues = [];
    const walk = async (value, path) => {
      if (Array.isArray(value)) {
        for (const [i, item] of value.entries()) {
          await walk(item, `${path}[${i}]`);
        }
      } else if (value !== null && typeof value === 'object') {
        if (typeof value.reference === 'string' && CONDITIONAL_REFERENCE.test(value.reference)) {
          const matches = await this.searchResources(parseSearchRequest(value.reference));
          if (matches.length === 1) {
            value.reference = `${matches[0].resourceType}/${matches[0].id}`;
          } else {
            const text = `Conditional reference matched ${matches.length} resources`;
            issues.push(error(matches.length ? 'multiple-matches' : 'not-found', text, path));
          }
        }
        for (const [key, child] of Object.entries(value)) {
          await walk(child, `${path}.${key}`);
        }
      }
    };
    await walk(copy, resource.resourceType);
    if (hasErrors(issues)) {
      throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
    }
    return copy;
  }

  /** Inside a transaction the targets may come later in the bundle: check at its end. */
  async checkReferences(resource) {
    if (this.transactionDepth > 0) {
      this.pendingReferenceChecks.push(resource);
      return;
    }
    const issues = await this.referenceIssues([resource]);
    if (hasErrors(issues)) {
      throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
    }
  }

  /** The references ``typedChecks`` found when this resource was validated, when its content is
   * still the same; else found again. */
  relativeReferences(resource) {
    const known = this.checkedReferences.get(resource);
    if (known && known.json === JSON.stringify(resource)) {
      return known.references;
    }
    return typedChecks(resource, this.expand).references;
  }

  async referenceIssues(resources) {
    const issues = [];
    for (const resource of resources) {
      for (const ref of this.relativeReferences(resource)) {
        if (ref.allowed && !ref.allowed.has(ref.resourceType)) {
          issues.push(error('invalid', `Reference to ${ref.resourceType} not allowed`, ref.path));
          continue;
        }
        const self = ref.resourceType === resource.resourceType && ref.id === resource.id;
        if (!self && !this.resources.get(ref.resourceType)?.has(ref.id)) {
          issues.push(error('not-found', 'Referenced resource not found', ref.path));
        }
      }
    }
    return issues;
  }

  /**
   * The store as it is now, for a rollback. Stored resources are never changed in place (every
   * write stores a new object, reads hand out copies), so copying the maps, and the history
   * arrays the store appends to, is enough: far cheaper than a deep copy of every resource.
   */
  snapshot() {
    const copyMaps = (byType, copyValue) =>
      new Map([...byType].map(([type, byId]) => [type, new Map([...byId].map(([id, v]) => [id, copyValue(v)]))]));
    return [copyMaps(this.resources, (r) => r), copyMaps(this.history, (versions) => [...versions])];
  }

  async withTransaction(callback) {
    if (this.transactionDepth > 0) {
      return callback(undefined);
    }
    const saved = this.snapshot();
    this.transactionDepth++;
    this.pendingReferenceChecks = [];
    try {
      const result = await callback(undefined);
      const issues = await this.referenceIssues(this.pendingReferenceChecks);
      if (hasErrors(issues)) {
        throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
      }
      return result;
    } catch (err) {
      [this.resources, this.history] = saved;
      throw err;
    } finally {
      this.transactionDepth--;
      this.pendingReferenceChecks = [];
    }
  }
}
