// SSH through the JS SDK, the counterpart of tests/sdk/python/test_ssh.py:
// `Sandbox.create({ssh: true})` fills `sandbox.ssh` with {hostname, username}
// (the SDK drops the reply's port, so the tests add the gateway's, SSH_PORT),
// `sandbox.exposeSsh()` gives further usernames, and the real OpenSSH client
// logs into the sandbox with one alone. A sandbox's usernames are refused
// once it is killed or closed.
//
// Run with `deno test -A --config target/sdk/js/deno.json tests/sdk/js/ssh_test.ts`.

import { Sandbox } from "@deno/sandbox";
import { assert, assertEquals, assertRejects, dec, enc, fmt, SSH_PORT, stopDaemonTest, test } from "./harness.ts";

type Creds = { hostname: string; username: string };

/** No config, no host key prompts, never ask a person (as crates/airlock/tests/ssh.rs). */
const SSH_OPTS = [
  "-F", "/dev/null",
  "-o", "StrictHostKeyChecking=no",
  "-o", "UserKnownHostsFile=/dev/null",
  "-o", "BatchMode=yes",
  "-o", "LogLevel=ERROR",
  "-o", "ConnectTimeout=10",
];

/** `ssh -p SSH_PORT username@hostname command`, under `timeout 60` so a hang
 * fails the test rather than the run. */
async function ssh(c: Creds, command: string, stdin = "") {
  const child = new Deno.Command("timeout", {
    args: ["60", "ssh", ...SSH_OPTS, "-p", String(SSH_PORT), `${c.username}@${c.hostname}`, command],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(enc.encode(stdin));
  await w.close();
  const o = await child.output();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

function checkCreds(c: Creds | undefined): asserts c is Creds {
  assert(c, "no SSH credentials");
  assertEquals(Object.keys(c).sort(), ["hostname", "username"], fmt(c));
  assertEquals(c.hostname, "127.0.0.1", fmt(c));
  assert(typeof c.username === "string" && c.username.length > 0, fmt(c));
}

/** ssh exits 255 with "Permission denied" for a username that no longer
 * maps to a live sandbox; the daemon may take a moment after it ends. */
async function assertRefused(c: Creds) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await ssh(c, "echo still-here");
    if (r.code === 255 && r.err.includes("Permission denied")) return;
    assert(Date.now() < deadline, `the username still works: ${fmt(r)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test("Sandbox.create({ssh: true}) gives a username that runs commands", async () => {
  const sb = await Sandbox.create({ ssh: true });
  try {
    checkCreds(sb.ssh);
    // A file the SDK writes, seen by a command run over SSH.
    await sb.fs.writeTextFile("/tmp/from-sdk.txt", `written for ${sb.id}\n`);
    const r = await ssh(sb.ssh, "cat /tmp/from-sdk.txt; echo err >&2; cat; exit 5", "from stdin\n");
    assertEquals(r, { code: 5, out: `written for ${sb.id}\nfrom stdin\n`, err: "err\n" });
    // And back: what ssh writes, the SDK reads.
    assertEquals((await ssh(sb.ssh, "echo via-ssh > /tmp/from-ssh.txt")).code, 0);
    assertEquals(await sb.fs.readTextFile("/tmp/from-ssh.txt"), "via-ssh\n");
  } finally {
    await sb.kill();
  }
  await sb.closed;
  await assertRefused(sb.ssh!);
});

test("exposeSsh on a live sandbox gives another working username", async () => {
  const sb = await Sandbox.create();
  let first: Creds | undefined;
  let second: Creds | undefined;
  try {
    assertEquals(sb.ssh, undefined);
    first = await sb.exposeSsh();
    checkCreds(first);
    second = await sb.exposeSsh();
    checkCreds(second);
    assert(first.username !== second.username, `the same username twice: ${first.username}`);
    for (const c of [first, second]) {
      const r = await ssh(c, "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname");
      assertEquals(r.code, 0, fmt(r));
      assert(r.out.includes("agent"), fmt(r));
    }
    // exposeSsh only returns them; `sandbox.ssh` is set by create alone.
    assertEquals(sb.ssh, undefined);
  } finally {
    await sb.kill();
  }
  await sb.closed;
  await assertRefused(first!);
  await assertRefused(second!);
  // A sandbox that is gone has no usernames to give.
  await assertRejects(() => sb.exposeSsh(), Error, "Failed to expose SSH: 404");
});

test("closing a sandbox refuses its username", async () => {
  let creds: Creds | undefined;
  {
    await using sb = await Sandbox.create({ ssh: true });
    creds = sb.ssh;
    checkCreds(creds);
    assertEquals((await ssh(creds, "true")).code, 0);
  }
  await assertRefused(creds);
});

stopDaemonTest();
