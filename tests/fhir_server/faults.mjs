// Fault mode of the test FHIR server: make it fail, slow down, drop connections or hide
// transaction support on demand, and count the requests it receives. Control endpoints on the
// same port, outside the FHIR base:
//   POST   /$test-faults    JSON body (every key optional), replaces the current faults
//   GET    /$test-faults    the current faults
//   DELETE /$test-faults    no faults
//   GET    /$test-requests  request counts since the last DELETE /$test-requests
//   DELETE /$test-requests  reset the counts
// Faults apply to requests under the FHIR base except GET /fhir/metadata (read once by clients;
// hiding transactions changes its content instead). README.md lists the keys.

const DEFAULTS = Object.freeze({
  fail_ratio_503: 0, // share of requests answered 503 (nothing processed)
  fail_ratio_429: 0, // share of requests answered 429 (nothing processed)
  retry_after: null, // seconds sent with 429/503 answers (null: no header)
  retry_after_format: 'seconds', // 'seconds' | 'http-date' | 'ratelimit' (RateLimit headers)
  fail_first_n: 0, // the next n requests fail with fail_status, then none of them do
  fail_status: 503, // status for fail_first_n (503, 429, 500, ...)
  delay_ms: 0, // delay before answering
  delay_first_n: 0, // only the next n requests are delayed (0: every request)
  drop_ratio: 0, // share of connections closed without an answer
  drop_first_n: 0, // the next n connections are closed without an answer
  drop_after_processing: false, // drop after the request was processed (the answer is lost)
  no_transaction: false, // /metadata hides transaction; transaction Bundles are refused (400)
  no_batch: false, // /metadata hides batch; batch Bundles are refused (400)
  seed: 1, // seed of the pseudo-random ratios, so a run can be repeated
});

/** mulberry32: a small seeded PRNG, enough to make fault ratios repeatable. */
function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Faults {
  constructor() {
    this.set({});
    this.resetCounts();
  }

  set(options) {
    const unknown = Object.keys(options).filter((key) => !(key in DEFAULTS));
    if (unknown.length > 0) {
      return `unknown fault keys: ${unknown.join(', ')}`;
    }
    this.options = { ...DEFAULTS, ...options };
    this.random = generator(Number(this.options.seed) || 1);
    this.failLeft = Number(this.options.fail_first_n) || 0;
    this.delayLeft = Number(this.options.delay_first_n) || 0;
    this.dropLeft = Number(this.options.drop_first_n) || 0;
    return undefined;
  }

  resetCounts() {
    this.counts = { total: 0, by_method: {}, by_type: {}, by_request: {}, faults: {}, at_ms: [] };
    this.countedSince = performance.now();
  }

  count(method, kind) {
    const c = this.counts;
    c.total += 1;
    c.by_method[method] = (c.by_method[method] ?? 0) + 1;
    c.by_type[kind] = (c.by_type[kind] ?? 0) + 1;
    const key = `${method} ${kind}`;
    c.by_request[key] = (c.by_request[key] ?? 0) + 1;
    if (c.at_ms.length < 10000) {
      // arrival times (ms since the reset), for rate checks on the server side
      c.at_ms.push(Math.round(performance.now() - this.countedSince));
    }
  }

  countFault(name) {
    this.counts.faults[name] = (this.counts.faults[name] ?? 0) + 1;
  }

  /** The headers of a 429/503 answer that says when to come back. */
  retryHeaders() {
    const seconds = this.options.retry_after;
    if (seconds === null || seconds === undefined) {
      return {};
    }
    switch (this.options.retry_after_format) {
      case 'http-date':
        return { 'Retry-After': new Date(Date.now() + seconds * 1000).toUTCString() };
      case 'ratelimit':
        return {
          RateLimit: `limit=10, remaining=0, reset=${seconds}`,
          'RateLimit-Reset': String(seconds),
        };
      default:
        return { 'Retry-After': String(seconds) };
    }
  }

  /**
   * What to do with one FHIR request before it is processed: undefined (go on), or
   * { drop: true }, or { status, headers }; plus delayMs and dropAfter.
   */
  decide() {
    const o = this.options;
    const decision = { delayMs: 0, dropAfter: false, fail: undefined };
    if (o.delay_ms > 0 && (o.delay_first_n === 0 || this.delayLeft > 0)) {
      this.delayLeft = Math.max(0, this.delayLeft - 1);
      decision.delayMs = o.delay_ms;
      this.countFault('delayed');
    }
    if (this.dropLeft > 0 || (o.drop_ratio > 0 && this.random() < o.drop_ratio)) {
      this.dropLeft = Math.max(0, this.dropLeft - 1);
      this.countFault('dropped');
      if (o.drop_after_processing) {
        decision.dropAfter = true;
      } else {
        decision.fail = { drop: true };
      }
      return decision;
    }
    if (this.failLeft > 0) {
      this.failLeft -= 1;
      decision.fail = { status: Number(o.fail_status) };
    } else if (o.fail_ratio_503 > 0 || o.fail_ratio_429 > 0) {
      const roll = this.random();
      if (roll < o.fail_ratio_503) {
        decision.fail = { status: 503 };
      } else if (roll < o.fail_ratio_503 + o.fail_ratio_429) {
        decision.fail = { status: 429 };
      }
    }
    if (decision.fail) {
      this.countFault(String(decision.fail.status));
      decision.fail.headers = this.retryHeaders();
    }
    return decision;
  }

  /** A reason to refuse a Bundle this server pretends not to support, or undefined. */
  refusesBundle(body) {
    if (body?.resourceType !== 'Bundle') {
      return undefined;
    }
    if (body.type === 'transaction' && this.options.no_transaction) {
      return 'This server does not support transactions';
    }
    if (body.type === 'batch' && this.options.no_batch) {
      return 'This server does not support batches';
    }
    return undefined;
  }

  /** The CapabilityStatement's interactions, without the hidden ones. */
  interactions() {
    const all = [];
    if (!this.options.no_transaction) {
      all.push({ code: 'transaction' });
    }
    if (!this.options.no_batch) {
      all.push({ code: 'batch' });
    }
    return all;
  }
}

/** `Type` of a FHIR path (`Task/1/_history/2` -> Task), `transaction`/`batch` for the base. */
export function requestKind(path, body) {
  if (path === '') {
    return body?.resourceType === 'Bundle' ? String(body.type ?? 'bundle') : 'base';
  }
  return path.split(/[/?]/)[0] || 'base';
}
