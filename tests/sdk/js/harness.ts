// The shared harness of the JS SDK suites (sdk_test.ts, deno_test.ts,
// http_test.ts, ...): assertions, the daemon each test module starts, and the
// `test()` wrapper. Each test file is its own module run, so each starts (and
// at its end stops) its own `airlock serve`.
//
// By default the module starts its own `airlock serve` on a fresh store in a
// temporary directory and stops it when the run ends. Set AIRLOCK_SDK_ENDPOINT
// (http://host:port) and AIRLOCK_SDK_TOKEN to use a daemon that is already
// running (and AIRLOCK_SDK_SSH_PORT for its SSH gateway's port, default 22);
// AIRLOCK_BIN overrides the binary (default target/debug/airlock).

import { Client, Sandbox } from "@deno/sandbox";
// Under Deno the npm build of the SDK still takes its `Deno.errors` classes
// from @deno/shim-deno, so decoded errors are instances of the shim's classes.
import { Deno as ShimDeno } from "@deno/shim-deno";

// ---------------------------------------------------------------- assertions

export class AssertionError extends Error {
  override name = "AssertionError";
}

export function fmt(v: unknown): string {
  try {
    return Deno.inspect(v, { depth: 6, colors: false });
  } catch {
    return String(v);
  }
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

export function equal(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  if (ArrayBuffer.isView(a) && ArrayBuffer.isView(b)) {
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    return x.length === y.length && x.every((v, i) => v === y[i]);
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((v, i) => equal(v, b[i]));
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return equal(ka, kb) &&
      ka.every((k) => equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return false;
}

export function assertEquals(actual: unknown, expected: unknown, msg?: string) {
  if (!equal(actual, expected)) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}values differ\n  actual:   ${fmt(actual)}\n  expected: ${fmt(expected)}`,
    );
  }
}

// deno-lint-ignore no-explicit-any
export type ErrorClass = abstract new (...args: any[]) => Error;

export async function assertRejects(
  fn: () => Promise<unknown>,
  check?: ErrorClass | ((e: unknown) => void),
  includes?: string,
): Promise<Error> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  if (err === undefined) throw new AssertionError("expected a rejection, got none");
  if (check && check.prototype instanceof Error || check === Error) {
    if (!(err instanceof (check as ErrorClass))) {
      throw new AssertionError(`expected ${(check as ErrorClass).name}, got ${fmt(err)}`);
    }
  } else if (typeof check === "function") {
    (check as (e: unknown) => void)(err);
  }
  if (includes && !String((err as Error)?.message).includes(includes)) {
    throw new AssertionError(`error message lacks ${JSON.stringify(includes)}: ${fmt(err)}`);
  }
  return err as Error;
}

/** A Deno error class by name, as the SDK decodes it (PROTOCOL.md §6.1). */
export function isDenoError(e: unknown, name: keyof typeof Deno.errors): boolean {
  // deno-lint-ignore no-explicit-any
  const shim = (ShimDeno.errors as any)[name];
  // deno-lint-ignore no-explicit-any
  const real = (Deno.errors as any)[name];
  return (shim !== undefined && e instanceof shim) || (real !== undefined && e instanceof real);
}

export function denoError(name: keyof typeof Deno.errors) {
  return (e: unknown) => {
    if (!isDenoError(e, name)) {
      throw new AssertionError(`expected Deno.errors.${name}, got ${fmt(e)}`);
    }
  };
}

// ---------------------------------------------------------------- daemon

export const REPO = new URL("../../../", import.meta.url);
export const enc = new TextEncoder();
export const dec = new TextDecoder();
export const SANDBOX_ID_RE = /^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$/;
export const UNKNOWN_ID = "sbx_ord_" + "0".repeat(20);

export let daemon: Deno.ChildProcess | undefined;
/** Where the test CA and the js.test leaf are (set when the daemon starts);
 * also the store's directory, so the daemon's expose CA is
 * `${TLS_DIR}/expose-ca.pem`. */
export let TLS_DIR = "";
export let daemonLog = "";

function fail(msg: string): never {
  throw new Error(`airlock SDK suite cannot start: ${msg}`);
}

async function startDaemon(): Promise<{ endpoint: string; token: string; sshPort: number }> {
  const endpoint = Deno.env.get("AIRLOCK_SDK_ENDPOINT");
  const token = Deno.env.get("AIRLOCK_SDK_TOKEN");
  if (endpoint && token) {
    // The JS SDK drops the reply's port (PROTOCOL-STORAGE.md §5): a daemon
    // started elsewhere names its gateway's port here, else SSH's own.
    const sshPort = Number(Deno.env.get("AIRLOCK_SDK_SSH_PORT") ?? "22");
    return { endpoint: endpoint.replace(/\/+$/, ""), token, sshPort };
  }

  const bin = Deno.env.get("AIRLOCK_BIN") ?? new URL("target/debug/airlock", REPO).pathname;
  try {
    if (!(await Deno.stat(bin)).isFile) fail(`${bin} is not a file`);
  } catch {
    fail(`${bin} not found (build it with \`cargo build -p airlock\`, or set AIRLOCK_BIN)`);
  }
  const help = await new Deno.Command(bin, { args: ["serve", "--help"], stdout: "piped", stderr: "piped" })
    .output();
  if (!help.success) {
    fail(
      `\`${bin} serve --help\` exited ${help.code}: this airlock has no \`serve\` command yet.\n` +
        dec.decode(help.stderr).trim(),
    );
  }
  if (Deno.uid() !== 0) fail("`airlock serve` creates real sandboxes and needs root");

  const dir = await Deno.makeTempDir({ prefix: "airlock-sdk-js-" });
  const store = `${dir}/store.db`;
  const made = await new Deno.Command(bin, {
    args: ["token", "create", "--store", store, "sdk-tests-js"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = dec.decode(made.stdout).split("\n").map((l) => l.trim()).filter(Boolean);
  if (!made.success || lines.length === 0) {
    fail(`\`airlock token create\` exited ${made.code}:\n${dec.decode(made.stdout)}${dec.decode(made.stderr)}`);
  }
  const secret = lines[lines.length - 1];
  if (!secret.startsWith("ddo_")) fail(`\`airlock token create\` printed ${JSON.stringify(secret)}`);

  // A test CA and a leaf for js.test (openssl): the TLS upstream below uses
  // the leaf, the daemon trusts the CA for the upstreams it intercepts.
  const pki = await new Deno.Command("bash", {
    args: ["-c", `set -e; cd "$0"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
  -subj "/CN=airlock js test CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj "/CN=js.test" 2>/dev/null
printf "subjectAltName=DNS:js.test\nextendedKeyUsage=serverAuth\n" > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext 2>/dev/null`, dir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!pki.success) fail(`making the test CA with openssl: ${dec.decode(pki.stderr)}`);
  TLS_DIR = dir;

  // Output goes to a file, so nothing has to drain a pipe while tests run.
  daemonLog = `${dir}/serve.log`;
  daemon = new Deno.Command("bash", {
    args: [
      "-c",
      'exec "$0" serve --store "$1" --listen 127.0.0.1:0 --expose-listen 127.0.0.1:0 --ssh-listen 127.0.0.1:0 --resolve js.test=127.0.0.1 --upstream-ca "$3" >"$2" 2>&1',
      bin,
      store,
      daemonLog,
      `${dir}/ca.pem`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited: Deno.CommandStatus | undefined;
  daemon.status.then((s) => exited = s);
  // Generous: the first start may build the default image.
  const startS = Number(Deno.env.get("AIRLOCK_SDK_START_TIMEOUT") ?? "600");
  const deadline = Date.now() + startS * 1000;
  while (Date.now() < deadline) {
    const text = await Deno.readTextFile(daemonLog).catch(() => "");
    const m = text.match(/listening on (http:\/\/\S+)/);
    if (m) {
      // The daemon prints its SSH gateway's line before "listening on".
      const ssh = text.match(/^ssh on \S+:(\d+) /m);
      if (!ssh) {
        stopDaemon();
        fail(`\`airlock serve\` printed no 'ssh on' line:\n${text}`);
      }
      return { endpoint: m[1].replace(/\/+$/, ""), token: secret, sshPort: Number(ssh[1]) };
    }
    if (exited) fail(`\`airlock serve\` exited ${exited.code} before listening:\n${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  stopDaemon();
  fail(`\`airlock serve\` printed no 'listening on' line in ${startS}s:\n${await Deno.readTextFile(daemonLog)}`);
}

export function stopDaemon() {
  if (!daemon) return;
  try {
    daemon.kill("SIGTERM");
  } catch {
    // already gone
  }
  daemon = undefined;
}

globalThis.addEventListener("unload", stopDaemon);

/** The daemon's API endpoint and token, and the port of its SSH gateway
 * (`--ssh-listen 127.0.0.1:0`), which `sandbox.ssh` does not carry. */
export const { endpoint: ENDPOINT, token: TOKEN, sshPort: SSH_PORT } = await startDaemon();
Deno.env.set("DENO_DEPLOY_TOKEN", TOKEN);
Deno.env.set("DENO_SANDBOX_ENDPOINT", ENDPOINT);
Deno.env.set("DENO_DEPLOY_ENDPOINT", ENDPOINT);
Deno.env.delete("DENO_DEPLOY_ORG");
Deno.env.set("NO_PROXY", [Deno.env.get("NO_PROXY"), "127.0.0.1,localhost"].filter(Boolean).join(","));

/** Every test: no op/resource sanitizers (the SDK's `ws` socket and 2 s ping
 * timer outlive awaits by design) and a hard timeout so a protocol bug fails
 * instead of hanging the run. */
export function test(name: string, fn: () => Promise<void>, timeoutMs = 120_000) {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        await Promise.race([fn(), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  });
}

// ---------------------------------------------------------------- helpers

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

export async function listed(id: string) {
  const all = await new Client().sandboxes.list();
  return all.find((s) => s.id === id);
}

/** The sandbox must end: listed as stopped (or not at all), and refuse connects. */
export async function assertGone(id: string) {
  const deadline = Date.now() + 15_000;
  let item = await listed(id);
  while (item && item.status !== "stopped" && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    item = await listed(id);
  }
  assert(!item || item.status === "stopped", `sandbox still listed as ${fmt(item)}`);
  if (item) assert(item.stoppedAt instanceof Date && !isNaN(item.stoppedAt.getTime()), fmt(item));
  await assertRejects(async () => {
    const sb = await Sandbox.connect({ id });
    await sb.close();
  });
}

/** Registers the last test of a module: stop its daemon and show where its log is. */
export function stopDaemonTest() {
  test("stop the daemon", async () => {
    if (!daemon) return;
    const d = daemon;
    stopDaemon();
    const s = await d.status;
    console.log(`airlock serve exited ${s.code} (log: ${daemonLog})`);
  });
}
