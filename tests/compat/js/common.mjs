// Shared by the client scripts: argument parsing, running named cases, printing JSON.
//
// Each script is run as `node <script> <base-url> <model> <case>...` and prints one JSON
// object {case: result} on stdout. A case that throws records {"thrown": {...}} instead,
// so one broken case never hides the others' results from the Python test.

// The openai package declares node >= 22; on node 20 it runs, but Promise.withResolvers
// (V8 12.1, node 22) is missing, and a future release may call it. A three-line polyfill
// keeps node 20 (what CI has) working without hiding anything else.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

export function parseArgs(cases) {
  const [baseUrl, model, ...wanted] = process.argv.slice(2);
  if (!baseUrl || !model || wanted.length === 0) {
    throw new Error(`usage: node <script> <base-url> <model> <case>... (cases: ${Object.keys(cases).join(", ")})`);
  }
  const unknown = wanted.filter((name) => !(name in cases));
  if (unknown.length) throw new Error(`unknown case(s): ${unknown.join(", ")}`);
  return { baseUrl, model, wanted };
}

function describe(err) {
  // What the Python side asserts on: the class name, the HTTP status and the message the
  // user would see, plus the client's parsed fields when it has them.
  return {
    name: err?.constructor?.name ?? typeof err,
    status: err?.status ?? err?.status_code ?? null,
    message: String(err?.message ?? err),
    error: typeof err?.error === "string" ? err.error : (err?.error ?? null),
    code: err?.code ?? null,
    param: err?.param ?? null,
  };
}

export async function run(cases) {
  const { baseUrl, model, wanted } = parseArgs(cases);
  const results = {};
  for (const name of wanted) {
    try {
      results[name] = await cases[name](baseUrl, model);
    } catch (err) {
      results[name] = { thrown: describe(err) };
    }
  }
  process.stdout.write(JSON.stringify(results) + "\n");
}

// Some cases expect the call to fail: they return the error's description.
export async function expectError(call) {
  try {
    const value = await call();
    return { unexpected_success: JSON.parse(JSON.stringify(value)) };
  } catch (err) {
    return describe(err);
  }
}
