// The airlock Deno REPL server, run as `deno run -A <this file>` by the
// airlock agent for `spawnDenoRepl` (see repl.rs).
//
// The agent's requests come over a private unix socket, never stdin/stdout:
// those belong to the user's code. The socket's path arrives in an
// environment variable that is deleted at once, so user code does not see
// it. Frames are a 4-byte big-endian length and then JSON:
//   agent -> here: {"id": n, "code": "..."} or {"id": n, "fn": "...", "args": [...]}
//   here -> agent: {"id": n, "ok": value} or {"id": n, "error": {"name", "message"}}
// Code runs through the inspector protocol's Runtime.evaluate in REPL mode,
// as Deno's own REPL does: top-level `let`/`const` persist across
// evaluations and may be redeclared, and top-level `await` works.
// Evaluations run concurrently; each reply carries its request's id.
import { Session } from "node:inspector";

const SOCKET_VAR = "AIRLOCK_DENO_REPL_SOCKET";
const socketPath = Deno.env.get(SOCKET_VAR);
Deno.env.delete(SOCKET_VAR);
if (!socketPath) {
  console.error(`airlock REPL server: ${SOCKET_VAR} is not set`);
  Deno.exit(70);
}
const conn = await Deno.connect({ transport: "unix", path: socketPath });

const session = new Session();
session.connect();

function evaluate(expression) {
  return new Promise((resolve) => {
    session.post(
      "Runtime.evaluate",
      { expression, replMode: true, awaitPromise: true, returnByValue: true },
      (err, res) => resolve({ err, res }),
    );
  });
}

// JSON has no undefined, NaN, Infinity, -0 or bigint: follow
// JSON.stringify (null, and 0), except that a bigint becomes its decimal
// string rather than an error.
function toJson(result) {
  if (result === undefined || result.type === "undefined") return null;
  if ("unserializableValue" in result) {
    const u = result.unserializableValue;
    if (u === "-0") return 0;
    if (u.endsWith("n")) return u.slice(0, -1);
    return null;
  }
  return result.value === undefined ? null : result.value;
}

const BUILTIN_ERRORS = new Set([
  "Error", "TypeError", "ReferenceError", "SyntaxError", "RangeError",
  "URIError", "EvalError", "AggregateError",
]);

function trimStack(stack) {
  const lines = stack.split("\n");
  const ours = lines.findIndex((l) => l.includes("ext:deno_node/inspector"));
  return (ours < 0 ? lines : lines.slice(0, ours)).join("\n");
}

function describeException(details) {
  const ex = details.exception;
  let name = ex?.className ?? "Error";
  let message;
  if (ex?.type === "object" && ex.subtype === "error") {
    // The description is the error's stack: "Name: message\n    at ...";
    // the frames from this server's own call into the inspector are noise.
    message = trimStack(ex.description ?? details.text);
  } else {
    // A thrown non-Error value, e.g. `throw 42`.
    name = "Error";
    let shown = ex?.description;
    if (ex && "value" in ex) shown = JSON.stringify(ex.value);
    message = `Uncaught ${shown ?? details.text}`;
  }
  if (!BUILTIN_ERRORS.has(name)) name = "Error";
  return { name, message };
}

async function run(request) {
  let expression;
  if (typeof request.code === "string") {
    expression = request.code;
  } else {
    // `fn` is a function's name or a function expression; arguments travel
    // as JSON, so they are plain data on both sides. An async function's
    // promise is awaited, so the call returns what it resolves to.
    expression = `await (${request.fn})(...${JSON.stringify(request.args ?? [])})`;
  }
  const { err, res } = await evaluate(expression);
  if (err) return { error: { name: "Error", message: String(err?.message ?? err) } };
  if (res.exceptionDetails) return { error: describeException(res.exceptionDetails) };
  return { ok: toJson(res.result) };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
let writing = Promise.resolve();

// Replies may finish in any order; writes are chained so frames never
// interleave.
function send(reply) {
  const body = encoder.encode(JSON.stringify(reply));
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, 4);
  writing = writing.then(async () => {
    let off = 0;
    while (off < frame.length) off += await conn.write(frame.subarray(off));
  }).catch(() => Deno.exit(0));
}

async function serve() {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(chunk);
    if (n === null) break; // the agent closed the REPL
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    while (buf.length >= 4) {
      const len = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
      if (buf.length < 4 + len) break;
      const request = JSON.parse(decoder.decode(buf.subarray(4, 4 + len)));
      buf = buf.slice(4 + len);
      run(request).then(
        (reply) => send({ id: request.id, ...reply }),
        (e) => send({ id: request.id, error: { name: "Error", message: String(e) } }),
      );
    }
  }
  Deno.exit(0);
}

await serve();
