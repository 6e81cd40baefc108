// The {{name}} plugin for lifeboat, written in JavaScript.
//
// componentize-js turns this module into a WebAssembly component implementing
// the world `plugin` of `wit/plugin.wit` (lifeboat:plugin@{{wit_version}}):
//  - `export const steps` is the exported interface `steps` (describe/plan/apply);
//  - `lifeboat:plugin/log` and `lifeboat:plugin/transfer` are the host's imports.
//
// How WIT values look in JS: records are plain objects with camelCase keys
// (`ctx.stepId`), enums are their kebab-case names as strings ('run', 'info',
// 'boolean'), `option<T>` is the value or `undefined`, and a function returning
// `result<T, step-error>` returns T or *throws* the step-error object.
// Inputs, outputs and action payloads are JSON strings: JSON.parse what comes
// in, JSON.stringify every output value.

import { log } from "lifeboat:plugin/log@{{wit_version}}";

const NAME = "{{name}}";
const VERSION = "0.1.0";

function field(name, type, doc, { required = false, sensitive = false } = {}) {
  return { name, type, required, sensitive, doc };
}

/** A step-error: `throw stepError(...)` to fail a call cleanly. */
function stepError(code, message, retryable = false) {
  return { code, message, retryable };
}

// ---- step `check` -----------------------------------------------------------

const check = {
  info: {
    name: "check",
    doc: "Check a target (the template's example step)",
    inputs: [
      field("target", "string", "What to check", { required: true }),
      field("expect", "string", "What the check should find (optional)"),
    ],
    outputs: [
      field("target", "string", "The target checked"),
      field("ok", "boolean", "Whether the check passed"),
    ],
  },

  inputs(inputs) {
    const target = inputs.target;
    if (typeof target !== "string" || target === "") {
      throw stepError("invalid-input", "`target` must not be empty");
    }
    return { target, expect: inputs.expect ?? null };
  },

  // Read-only and deterministic: the same inputs give the same actions.
  plan(ctx, inputs) {
    const { target, expect } = check.inputs(inputs);
    return {
      actions: [
        {
          kind: "run",
          resource: `check/${target}`,
          summary: expect !== null ? `check ${target} (expect ${expect})` : `check ${target}`,
          // The plugin's own JSON document (e.g. ids worked out while planning),
          // handed back unchanged to apply as `action.payload`; "" for none.
          payload: "",
        },
      ],
      outputs: [
        { name: "target", value: JSON.stringify(target) }, // known now
        { name: "ok", value: undefined }, // known only after apply
      ],
    };
  },

  // Must be idempotent: the host applies an interrupted action again.
  apply(ctx, inputs, action) {
    const { target, expect } = check.inputs(inputs);
    // A real plugin would do the check here (e.g. with fetch(), granted by the
    // workflow's `grants.http`) and compare the answer with `expect`.
    const ok = true;
    log("info", "checked", [["target", target]]);
    return [
      { name: "target", value: JSON.stringify(target) },
      { name: "ok", value: JSON.stringify(ok) },
    ];
  },
};

// ---- the exports ------------------------------------------------------------

const STEPS = { check };

function findStep(step) {
  const s = Object.hasOwn(STEPS, step) ? STEPS[step] : undefined;
  if (!s) throw stepError("unknown-step", `this plugin has no step \`${step}\``);
  return s;
}

// Anything thrown that is not a step-error (a bug: TypeError, ...) would make
// the component trap with an unreadable message; report it as a
// non-retryable `internal` step error instead.
function toStepError(e) {
  if (e && typeof e === "object" && typeof e.code === "string" && typeof e.message === "string"
      && !(e instanceof Error)) {
    return { code: e.code, message: e.message, retryable: e.retryable === true };
  }
  const where = e instanceof Error && e.stack ? ` at ${e.stack.split("\n")[0]}` : "";
  return stepError("internal", `${e}${where}`);
}

// plan and apply may be async (return a Promise), e.g. to await fetch().
function guarded(fn) {
  try {
    const r = fn();
    if (r && typeof r.then === "function") {
      return r.then(undefined, (e) => {
        throw toStepError(e);
      });
    }
    return r;
  } catch (e) {
    throw toStepError(e);
  }
}

function parseInputs(inputs) {
  let value;
  try {
    value = JSON.parse(inputs);
  } catch (e) {
    throw stepError("invalid-input", `inputs are not JSON: ${e}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw stepError("invalid-input", "inputs must be a JSON object");
  }
  return value;
}

export const steps = {
  describe() {
    return {
      name: NAME,
      version: VERSION,
      doc: "{{name}}: a lifeboat plugin written in JavaScript",
      steps: Object.values(STEPS).map((s) => s.info),
    };
  },

  plan(ctx, step, inputs) {
    return guarded(() => findStep(step).plan(ctx, parseInputs(inputs)));
  },

  apply(ctx, step, inputs, action) {
    return guarded(() => findStep(step).apply(ctx, parseInputs(inputs), action));
  },
};
