// The Deno runtime methods through the official JS SDK: sandbox.deno.run
// (spawnDeno, denoHttpWait, fetch by pid) and sandbox.deno.repl / eval
// (spawnDenoRepl, denoReplEval, denoReplCall, denoReplClose). See
// harness.ts for the daemon.

import { Sandbox } from "@deno/sandbox";
import { assert, assertEquals, assertRejects, stopDaemonTest, test } from "./harness.ts";

test("deno.run: code with scriptArgs, an entrypoint, exit codes", async () => {
  await using sb = await Sandbox.create();
  const p = await sb.deno.run({
    code: "const n: number = 40; console.log(n + 2, Deno.args.join(','))",
    scriptArgs: ["a", "b"],
    stdout: "piped",
  });
  const out = await p.output();
  assertEquals(out.stdoutText, "42 a,b\n");
  assert(out.status.success);

  await sb.fs.writeTextFile("/tmp/main.mjs", "console.log(JSON.stringify(Deno.args)); Deno.exit(4)");
  const q = await sb.deno.run({ entrypoint: "/tmp/main.mjs", scriptArgs: ["x y"], stdout: "piped" });
  const res = await q.output();
  assertEquals(res.stdoutText, '["x y"]\n');
  assertEquals(res.status.code, 4);

  // (A bad `extension` is refused by the SDK's own schema before it is sent;
  // the server-side check is covered by the PY suite.)
});

test("deno.run: watch restarts the module when its file changes", async () => {
  await using sb = await Sandbox.create();
  await sb.fs.writeTextFile("/tmp/w.ts", "console.log('v1')");
  const p = await sb.deno.run({ entrypoint: "/tmp/w.ts", watch: true, stdout: "piped", stderr: "null" });
  // The daemon relays Deno's restarts as `$sandbox.deno.watcher.restart`.
  let restarts = 0;
  p.addEventListener("restart", () => restarts++);
  const reader = p.stdout!.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const until = async (text: string) => {
    while (!seen.includes(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stdout ended before ${text}: ${seen}`);
      seen += value;
    }
  };
  await until("v1");
  // Deno may still be setting up its watcher when v1 prints, so a single
  // change can go unseen: touch the file until the restart shows.
  let n = 0;
  const toucher = setInterval(() => {
    sb.fs.writeTextFile("/tmp/w.ts", `console.log('v2'); // ${n++}`).catch(() => {});
  }, 250);
  try {
    await until("v2");
  } finally {
    clearInterval(toucher);
  }
  const deadline = Date.now() + 5_000;
  while (restarts === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert(restarts >= 1, "no restart event for the restart");
  await p.kill("SIGKILL");
  // With a watcher id the SDK chains `status.finally(...)` without a catch,
  // so a status still pending when the client closes its socket becomes an
  // unhandled rejection (README): settle it first.
  assertEquals((await p.status).signal, "SIGKILL");
  reader.releaseLock();
});

test("deno.run: httpReady, fetch by pid, and false for a script that exits", async () => {
  await using sb = await Sandbox.create();
  const server = await sb.deno.run({
    code: "Deno.serve({ port: 8124, onListen() {} }, (req) => new Response('hi ' + new URL(req.url).pathname))",
    stdout: "null",
  });
  assertEquals(await server.httpReady, true);
  const r = await server.fetch("http://whatever.example/path");
  assertEquals(await r.text(), "hi /path");
  await server.kill();

  // With a pid the URL gives only path, query and Host: an https:// URL
  // still reaches the process's plain-HTTP listener.
  const echo = await sb.deno.run({
    code: "Deno.serve({ port: 8127, onListen() {} }, (r) => { const u = new URL(r.url); " +
      "return new Response(u.pathname + u.search + ' ' + r.headers.get('host')); })",
    stdout: "null",
  });
  assertEquals(await echo.httpReady, true);
  const s = await echo.fetch("https://app.example/abc?x=1");
  assertEquals(await s.text(), "/abc?x=1 app.example");
  await echo.kill();

  const quick = await sb.deno.run({ code: "console.log('done')", stdout: "piped" });
  assertEquals(await quick.httpReady, false);
  assertEquals((await quick.output()).stdoutText, "done\n");
});

test("deno.eval and a REPL's state, calls and errors", async () => {
  await using sb = await Sandbox.create();
  assertEquals(await sb.deno.eval("1 + 1"), 2);

  const repl = await sb.deno.repl({ stdout: "null" });
  assertEquals(await repl.eval("let x = 10"), null);
  assertEquals(await repl.eval("x * 2"), 20);
  await repl.eval("const add = (a, b) => a + b; function twice(s) { return s + s }");
  assertEquals(await repl.call("add", 2, 3), 5);
  assertEquals(await repl.call("twice", "ab"), "abab");
  assertEquals(await repl.call("async (a) => a * 3", 5), 15);
  assertEquals(await repl.eval("await Promise.resolve({ a: [1, null] })"), { a: [1, null] });

  const e = await assertRejects(() => repl.eval("1 +"), SyntaxError, "Unexpected end of input");
  assert(String(e).includes("SyntaxError"), String(e));
  await assertRejects(() => repl.eval("nope"), ReferenceError, "nope is not defined");
  await assertRejects(() => repl.call("(x) => { throw new RangeError('r' + x) }", 1), RangeError, "r1");
  assertEquals(await repl.eval("x"), 10);

  await repl.close();
  await repl.close(); // a second close is a no-op
  await assertRejects(() => repl.eval("1"), Error, "is closed");
});

test("a REPL killed mid-eval fails the eval instead of hanging", async () => {
  await using sb = await Sandbox.create();
  const repl = await sb.deno.repl({ stdout: "null", stderr: "null" });
  assertEquals(await repl.eval("1"), 1);
  const pending = repl.eval("await new Promise(() => {})");
  pending.catch(() => {});
  await new Promise((r) => setTimeout(r, 300));
  const started = Date.now();
  await repl.kill("SIGKILL");
  await assertRejects(() => pending, Error, "killed by SIGKILL");
  assert(Date.now() - started < 5000, "the eval took too long to fail");
  assertEquals((await repl.status).signal, "SIGKILL");
  await repl.close();
});

stopDaemonTest();
