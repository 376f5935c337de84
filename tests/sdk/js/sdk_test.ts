// Compatibility tests: the official `@deno/sandbox` npm SDK against airlock.
//
// Run with `deno test -A --config target/sdk/js/deno.json tests/sdk/js/sdk_test.ts`
// (scripts/sdk-tests.sh does that). Written against @deno/sandbox 0.13.2; see
// /work/shared/PROTOCOL.md for the protocol facts cited below.
//
// By default the module starts its own `airlock serve` on a fresh store in a
// temporary directory and stops it when the run ends. Set AIRLOCK_SDK_ENDPOINT
// (http://host:port) and AIRLOCK_SDK_TOKEN to use a daemon that is already
// running; AIRLOCK_BIN overrides the binary (default target/debug/airlock).

import {
  Client,
  ConnectionEstablishmentError,
  InvalidMemoryError,
  InvalidTimeoutError,
  InvalidTokenError,
  RpcError,
  Sandbox,
  SandboxCommandError,
  SeekMode,
} from "@deno/sandbox";
import {
  assert,
  assertEquals,
  assertGone,
  assertRejects,
  collect,
  dec,
  denoError,
  enc,
  ENDPOINT,
  fmt,
  listed,
  REPO,
  SANDBOX_ID_RE,
  stopDaemonTest,
  test,
  TLS_DIR,
  TOKEN,
  UNKNOWN_ID,
} from "./harness.ts";

// ---------------------------------------------------------------- processes

test("create, sh and its builder options", async () => {
  await using sb = await Sandbox.create();
  assert(SANDBOX_ID_RE.test(sb.id), `bad sandbox id ${sb.id}`);

  // NB @deno/sandbox 0.13.2: every builder method starts from a fresh default
  // state (command/mod.js withNewState), so options do not compose and
  // .text()/.json() drop all earlier ones. Each chain below uses one option.
  const r = await sb.sh`echo hi`.stdout("piped");
  assertEquals(r.stdoutText, "hi\n");
  assertEquals(r.stderrText, null); // stderr inherited
  assertEquals(r.status.success, true);
  assertEquals(r.status.code, 0);

  // Default stdout is "inherit": nothing is captured, but the command runs.
  const inherited = await sb.sh`echo inherited`;
  assertEquals(inherited.status.code, 0);
  assertEquals(inherited.stdoutText, null);

  assertEquals(await sb.sh`echo hi`.text(), "hi\n");
  assertEquals(await sb.sh`echo '{"a": [1, 2]}'`.json(), { a: [1, 2] });
  assertEquals(await sb.sh`pwd`.text(), "/home/app\n");
  assertEquals(await sb.sh`id -u`.text(), "0\n");
  // env and cwd builder options (checked through the exit status)
  assertEquals((await sb.sh`test "$FOO" = "bar baz"`.env("FOO", "bar baz")).status.code, 0);
  assertEquals((await sb.sh`test "$PWD" = /tmp`.cwd("/tmp")).status.code, 0);
  const nasty = "a b; echo pwned $(id) 'q'";
  assertEquals(await sb.sh`echo ${nasty}`.text(), nasty + "\n");
  assertEquals(await sb.sh`printf '%s|' ${["x y", "z"]}`.text(), "x y|z|");

  const err = await assertRejects(() => sb.sh`echo oops >&2; exit 7`.stderr("piped").then((r) => r), SandboxCommandError);
  assertEquals((err as SandboxCommandError).code, 7);
  assert(err.message.includes("oops"), err.message);

  const nt = await sb.sh`exit 7`.noThrow();
  assertEquals([nt.status.success, nt.status.code], [false, 7]);

  const missing = await sb.sh`definitely-not-a-command`.noThrow();
  assertEquals(missing.status.code, 127);
});

test("sandbox has the promised tools", async () => {
  await using sb = await Sandbox.create();
  const out = await sb.sh`for t in bash python3 pip node npm npx deno git curl; do command -v $t >/dev/null || echo missing $t; done; node --version; python3 -c 'print(6*7)'; python3 -m pip --version; npm --version`
    .text();
  const lines = out.trim().split("\n");
  assertEquals(lines.filter((l) => l.startsWith("missing")), []);
  assert(lines[0].startsWith("v18."), lines[0]);
  assertEquals(lines[1], "42");
  assert(lines[2].startsWith("pip "), lines[2]);
  assert(lines[3].startsWith("10."), lines[3]);
});

test("spawn with piped stdout/stderr and output()", async () => {
  await using sb = await Sandbox.create();
  const p = await sb.spawn("bash", {
    args: ["-c", "echo out; echo err >&2; exit 3"],
    stdout: "piped",
    stderr: "piped",
  });
  assert(typeof p.pid === "number");
  const o = await p.output();
  assertEquals(o.stdoutText, "out\n");
  assertEquals(o.stderrText, "err\n");
  assertEquals(o.status, { success: false, code: 3, signal: null, oom: false });

  const echo = await sb.spawn("echo", { args: ["hello"], stdout: "piped", stderr: "piped" });
  const eo = await echo.output();
  assertEquals(eo.stdout, enc.encode("hello\n"));
  assertEquals(eo.status, { success: true, code: 0, signal: null, oom: false });
  assertEquals(await echo.status, eo.status);

  // Reading the streams directly.
  const cat = await sb.spawn("bash", { args: ["-c", "seq 1 20000"], stdout: "piped", stderr: "null" });
  assertEquals(cat.stderr, null);
  const text = await new Response(cat.stdout).text();
  assertEquals(text.split("\n").length, 20001);
  assertEquals((await cat.status).code, 0);

  // Large output crosses several stream chunks.
  const big = await sb.spawn("head", { args: ["-c", "3000000", "/dev/zero"], stdout: "piped", stderr: "piped" });
  const bo = await big.output();
  assertEquals(bo.stdout?.length, 3_000_000);
  assert(bo.stdout!.every((b) => b === 0));

  const cwd = await sb.spawn("pwd", { cwd: "/tmp", stdout: "piped", stderr: "piped" });
  assertEquals((await cwd.output()).stdoutText, "/tmp\n");
  const env = await sb.spawn("env", { clearEnv: true, env: { ONLY_ME: "1" }, stdout: "piped", stderr: "piped" });
  assertEquals((await env.output()).stdoutText, "ONLY_ME=1\n");
});

test("piped stdin: write, then close", async () => {
  await using sb = await Sandbox.create();
  const p = await sb.spawn("cat", { stdin: "piped", stdout: "piped", stderr: "piped" });
  const w = p.stdin!.getWriter();
  await w.write(enc.encode("hello "));
  await w.write(enc.encode("world\n"));
  await w.close();
  const o = await p.output();
  assertEquals(o.stdoutText, "hello world\n");
  assertEquals(o.status.code, 0);

  // stdin "null" (the default) means EOF at once.
  const wc = await sb.spawn("wc", { args: ["-c"], stdout: "piped", stderr: "piped" });
  assertEquals((await wc.output()).stdoutText?.trim(), "0");

  // A bigger payload through several writes.
  const sum = await sb.spawn("sha256sum", { stdin: "piped", stdout: "piped", stderr: "piped" });
  const chunk = new Uint8Array(100_000).map((_, i) => i % 251);
  const sw = sum.stdin!.getWriter();
  for (let i = 0; i < 5; i++) await sw.write(chunk);
  await sw.close();
  const all = new Uint8Array(500_000);
  for (let i = 0; i < 5; i++) all.set(chunk, i * 100_000);
  const digest = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", all)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  assertEquals((await sum.output()).stdoutText?.split(" ")[0], digest);
});

test("kill a process with SIGTERM and SIGKILL", async () => {
  await using sb = await Sandbox.create();
  const p = await sb.spawn("sleep", { args: ["60"], stdout: "piped", stderr: "piped" });
  const started = Date.now();
  await p.kill("SIGTERM");
  const st = await p.status;
  assert(Date.now() - started < 15_000, "kill took too long");
  assertEquals(st.success, false);
  assertEquals(st.signal, "SIGTERM");
  assertEquals(st.code, 143); // 128 + 15 (PROTOCOL.md §4.1)

  const q = await sb.spawn("sleep", { args: ["60"], stdout: "null", stderr: "null" });
  await q.kill("SIGKILL");
  const qs = await q.status;
  assertEquals([qs.success, qs.signal, qs.code, qs.oom], [false, "SIGKILL", 137, false]);

  // Killing an exited process is not an error.
  const done = await sb.spawn("true", { stdout: "null", stderr: "null" });
  await done.status;
  await done.kill();

  // A shell command cancelled through an AbortSignal (SIGTERM -> 143).
  const ac = new AbortController();
  const running = sb.sh`sleep 60`.signal(ac.signal).then((r) => r);
  setTimeout(() => ac.abort(), 500);
  const aborted = await assertRejects(() => running, SandboxCommandError);
  assertEquals((aborted as SandboxCommandError).code, 143);
});

test("spawning an unknown command fails with NotFound", async () => {
  await using sb = await Sandbox.create();
  await assertRejects(
    () => sb.spawn("definitely-not-a-command", { stdout: "piped", stderr: "piped" }),
    denoError("NotFound"),
  );
  assertEquals(await sb.sh`echo still fine`.text(), "still fine\n");
});

test("bad params are a JSON-RPC -32602 ZodError (RpcError)", async () => {
  // The SDK's zod schemas check params before sending, so its public API
  // never sends bad ones; its own transport (the JS twin of the Python SDK's
  // `_rpc`) sends a request as it is, like another client would.
  await using sb = await Sandbox.create();
  const transportJs = new URL("target/sdk/js/node_modules/@deno/sandbox/esm/transport.js", REPO);
  const { websocketTransport } = await import(transportJs.href);
  const url = new URL(`/api/v3/sandbox/${sb.id}/connect`, ENDPOINT);
  const transport = websocketTransport({ endpoint: url.href.replace(/^http/, "ws"), token: TOKEN });
  try {
    const send = (id: number, method: string, params: unknown) =>
      transport.send({ jsonrpc: "2.0", id, method, params });
    const e = await assertRejects(() => send(1, "readTextFile", {}), RpcError) as RpcError;
    assertEquals(e.code, -32602);
    const data = e.data as { constructorName: string; message: string };
    assertEquals(data.constructorName, "ZodError");
    assertEquals(JSON.parse(data.message), [{
      expected: "string",
      code: "invalid_type",
      path: ["path"],
      message: "Invalid input: expected string, received undefined",
    }]);
    // Checked by the daemon (fetch) and by the agent (an option under `options`).
    const f = await assertRejects(() => send(2, "fetch", { method: "GET" }), RpcError) as RpcError;
    assertEquals(JSON.parse((f.data as { message: string }).message)[0].path, ["url"]);
    const m = await assertRejects(
      () => send(3, "mkdir", { path: "/tmp/d", options: { recursive: "yes" } }),
      RpcError,
    ) as RpcError;
    assertEquals(JSON.parse((m.data as { message: string }).message)[0].path, ["options", "recursive"]);
  } finally {
    await transport.close();
  }
  // A missing file is still an application error, decoded to Deno's class.
  await assertRejects(() => sb.fs.readTextFile("/no/such/file"), denoError("NotFound"));
});

// ---------------------------------------------------------------- fs

test("fs: text, bytes, streams, dirs, metadata", async () => {
  await using sb = await Sandbox.create();
  const fs = sb.fs;
  await fs.mkdir("/tmp/t/sub/deeper", { recursive: true });

  await fs.writeTextFile("/tmp/t/a.txt", "hello\nwörld\n");
  assertEquals(await fs.readTextFile("/tmp/t/a.txt"), "hello\nwörld\n");
  await fs.writeTextFile("/tmp/t/a.txt", "more\n", { append: true });
  assertEquals(await fs.readTextFile("/tmp/t/a.txt"), "hello\nwörld\nmore\n");
  assertEquals(await sb.sh`cat /tmp/t/a.txt`.text(), "hello\nwörld\nmore\n");

  const bytes = new Uint8Array(1024).map((_, i) => i % 256);
  await fs.writeFile("/tmp/t/b.bin", bytes);
  assertEquals(await fs.readFile("/tmp/t/b.bin"), bytes);

  // writeFile from a ReadableStream (contentStreamId on the wire)
  const parts = [enc.encode("one,"), enc.encode("two,"), enc.encode("three")];
  await fs.writeFile("/tmp/t/stream.txt", ReadableStream.from(parts));
  assertEquals(await fs.readTextFile("/tmp/t/stream.txt"), "one,two,three");
  await fs.writeTextFile("/tmp/t/stream2.txt", ReadableStream.from(["a", "b", "c"]));
  assertEquals(await fs.readTextFile("/tmp/t/stream2.txt"), "abc");

  // relative paths resolve against /home/app
  await fs.writeTextFile("rel.txt", "relative");
  assertEquals(await sb.sh`cat /home/app/rel.txt`.text(), "relative");

  const entries = (await collect(fs.readDir("/tmp/t"))).sort((a, b) => a.name.localeCompare(b.name));
  assertEquals(entries, [
    { name: "a.txt", isFile: true, isDirectory: false, isSymlink: false },
    { name: "b.bin", isFile: true, isDirectory: false, isSymlink: false },
    { name: "stream.txt", isFile: true, isDirectory: false, isSymlink: false },
    { name: "stream2.txt", isFile: true, isDirectory: false, isSymlink: false },
    { name: "sub", isFile: false, isDirectory: true, isSymlink: false },
  ]);

  const st = await fs.stat("/tmp/t/b.bin");
  assertEquals([st.isFile, st.isDirectory, st.isSymlink, st.size], [true, false, false, 1024]);
  for (const d of [st.mtime, st.atime, st.ctime, st.birthtime]) {
    assert(d instanceof Date && !isNaN(d.getTime()), `bad date ${fmt(d)}`);
  }
  assert(Math.abs(st.mtime.getTime() - Date.now()) < 300_000, `mtime far off: ${st.mtime}`);
  assertEquals(st.uid, 0);
  assert(st.ino > 0 && st.nlink >= 1, fmt(st));
  const dst = await fs.stat("/tmp/t/sub");
  assertEquals([dst.isFile, dst.isDirectory], [false, true]);

  await fs.chmod("/tmp/t/a.txt", 0o600);
  assertEquals((await fs.stat("/tmp/t/a.txt")).mode & 0o777, 0o600);

  await fs.symlink("/tmp/t/a.txt", "/tmp/t/link");
  assertEquals(await fs.readLink("/tmp/t/link"), "/tmp/t/a.txt");
  assertEquals(await fs.realPath("/tmp/t/link"), "/tmp/t/a.txt");
  assertEquals((await fs.lstat("/tmp/t/link")).isSymlink, true);
  assertEquals((await fs.stat("/tmp/t/link")).isFile, true);

  await fs.copyFile("/tmp/t/a.txt", "/tmp/t/copy.txt");
  assertEquals(await fs.readTextFile("/tmp/t/copy.txt"), "hello\nwörld\nmore\n");

  await fs.rename("/tmp/t/copy.txt", "/tmp/t/sub/moved.txt");
  assertEquals(await fs.readTextFile("/tmp/t/sub/moved.txt"), "hello\nwörld\nmore\n");
  await assertRejects(() => fs.stat("/tmp/t/copy.txt"), denoError("NotFound"));

  await fs.truncate("/tmp/t/sub/moved.txt", 5);
  assertEquals(await fs.readTextFile("/tmp/t/sub/moved.txt"), "hello");
  await fs.truncate("/tmp/t/sub/moved.txt");
  assertEquals((await fs.stat("/tmp/t/sub/moved.txt")).size, 0);

  const tmp = await fs.makeTempDir({ prefix: "pfx-" });
  assert(tmp.split("/").pop()!.startsWith("pfx-"), tmp);
  assertEquals((await fs.stat(tmp)).isDirectory, true);
  const tmpf = await fs.makeTempFile({ dir: tmp, suffix: ".txt" });
  assert(tmpf.startsWith(tmp + "/") && tmpf.endsWith(".txt"), tmpf);
  assertEquals((await fs.stat(tmpf)).size, 0);

  await fs.remove("/tmp/t/link");
  await assertRejects(() => fs.lstat("/tmp/t/link"), denoError("NotFound"));
  await assertRejects(() => fs.remove("/tmp/t/sub")); // not empty
  await fs.remove("/tmp/t", { recursive: true });
  await assertRejects(() => fs.stat("/tmp/t"), denoError("NotFound"));
});

test("fs: file handles", async () => {
  await using sb = await Sandbox.create();
  const fs = sb.fs;
  {
    await using f = await fs.create("/tmp/h.txt");
    assertEquals(await f.write(enc.encode("hello world")), 11);
    assertEquals(await f.seek(0, SeekMode.Start), 0);
    const buf = new Uint8Array(5);
    assertEquals(await f.read(buf), 5);
    assertEquals(dec.decode(buf), "hello");
    assertEquals(await f.seek(1, SeekMode.Current), 6);
    const rest = new Uint8Array(64);
    const n = await f.read(rest);
    assertEquals(dec.decode(rest.subarray(0, n!)), "world");
    assertEquals(await f.read(rest), null); // EOF
    assertEquals(await f.seek(-5, SeekMode.End), 6);
    assertEquals(await f.seek(2n, SeekMode.Start), 2); // BigInt offsets travel as strings
    const fst = await f.stat();
    assertEquals([fst.isFile, fst.size], [true, 11]);
    await f.truncate(5);
    assertEquals((await f.stat()).size, 5);
    await f.sync();
    await f.syncData();
  }
  assertEquals(await fs.readTextFile("/tmp/h.txt"), "hello");

  const a = await fs.open("/tmp/h.txt", { write: true, append: true });
  assertEquals(await a.write(enc.encode("!!")), 2);
  await a.close();
  assertEquals(await fs.readTextFile("/tmp/h.txt"), "hello!!");

  const big = new Uint8Array(200_000).map((_, i) => i % 199);
  await fs.writeFile("/tmp/big.bin", big);
  const r = await fs.open("/tmp/big.bin"); // read-only by default
  const streamed = new Uint8Array(await new Response(r.readable).arrayBuffer());
  assertEquals(streamed.length, big.length);
  assertEquals(streamed, big);
  await assertRejects(() => r.write(enc.encode("nope")));
  await r.close();

  const w = await fs.open("/tmp/ws.txt", { write: true, create: true, truncate: true });
  const writer = w.writable.getWriter();
  await writer.write(enc.encode("via "));
  await writer.write(enc.encode("writable"));
  await writer.close();
  assertEquals(await fs.readTextFile("/tmp/ws.txt"), "via writable");

  await assertRejects(() => fs.open("/tmp/ws.txt", { write: true, createNew: true }), denoError("AlreadyExists"));
  await assertRejects(() => fs.open("/tmp/missing.txt"), denoError("NotFound"));
});

test("fs: walk and expandGlob", async () => {
  await using sb = await Sandbox.create();
  await sb.sh`mkdir -p /tmp/w/a/b && touch /tmp/w/x.txt /tmp/w/a/y.txt /tmp/w/a/b/z.md && ln -s /tmp/w/x.txt /tmp/w/l`;

  const all = await collect(sb.fs.walk("/tmp/w"));
  assertEquals(all.map((e) => e.path).sort(), [
    "/tmp/w",
    "/tmp/w/a",
    "/tmp/w/a/b",
    "/tmp/w/a/b/z.md",
    "/tmp/w/a/y.txt",
    "/tmp/w/l",
    "/tmp/w/x.txt",
  ]);
  const y = all.find((e) => e.path === "/tmp/w/a/y.txt")!;
  assertEquals(y, { path: "/tmp/w/a/y.txt", name: "y.txt", isFile: true, isDirectory: false, isSymlink: false });
  assertEquals(all.find((e) => e.name === "l")?.isSymlink, true);

  const shallow = await collect(sb.fs.walk("/tmp/w", { maxDepth: 1, includeDirs: false }));
  assertEquals(shallow.map((e) => e.path).sort(), ["/tmp/w/l", "/tmp/w/x.txt"]);
  const txt = await collect(sb.fs.walk("/tmp/w", { exts: [".txt"], includeSymlinks: false }));
  assertEquals(txt.map((e) => e.path).sort(), ["/tmp/w/a/y.txt", "/tmp/w/x.txt"]);
  const matched = await collect(sb.fs.walk("/tmp/w", { match: [/\.md$/] }));
  assertEquals(matched.map((e) => e.path), ["/tmp/w/a/b/z.md"]);
  const skipped = await collect(sb.fs.walk("/tmp/w", { skip: [/\/a(\/|$)/], includeDirs: false }));
  assertEquals(skipped.map((e) => e.path).sort(), ["/tmp/w/l", "/tmp/w/x.txt"]);

  const globbed = await collect(sb.fs.expandGlob("/tmp/w/**/*.txt"));
  assertEquals(globbed.map((e) => e.path).sort(), ["/tmp/w/a/y.txt", "/tmp/w/x.txt"]);
  const rooted = await collect(sb.fs.expandGlob("*.txt", { root: "/tmp/w" }));
  assertEquals(rooted.map((e) => e.path), ["/tmp/w/x.txt"]);
  assertEquals(await collect(sb.fs.expandGlob("/tmp/w/*.nothing")), []);
});

test("fs errors: NotFound and AlreadyExists", async () => {
  await using sb = await Sandbox.create();
  const e = await assertRejects(() => sb.fs.readTextFile("/does/not/exist"), denoError("NotFound"));
  assert(e.message.length > 0);
  await assertRejects(() => sb.fs.readFile("/does/not/exist"), denoError("NotFound"));
  await assertRejects(() => collect(sb.fs.readDir("/does/not/exist")), denoError("NotFound"));
  await sb.fs.mkdir("/tmp/exists");
  await assertRejects(() => sb.fs.mkdir("/tmp/exists"), denoError("AlreadyExists"));
  await sb.fs.mkdir("/tmp/exists", { recursive: true }); // fine with recursive
  await sb.fs.writeTextFile("/tmp/exists/f", "first", { createNew: true });
  await assertRejects(
    () => sb.fs.writeTextFile("/tmp/exists/f", "second", { createNew: true }),
    denoError("AlreadyExists"),
  );
  assertEquals(await sb.fs.readTextFile("/tmp/exists/f"), "first");
  await assertRejects(() => sb.fs.writeTextFile("/nope/dir/f", "x", { create: false }), denoError("NotFound"));
});

// ---------------------------------------------------------------- env

test("env: get/set/delete/toObject", async () => {
  await using sb = await Sandbox.create();
  assertEquals(await sb.env.get("MY_VAR"), undefined);
  await sb.env.set("MY_VAR", "hello world");
  assertEquals(await sb.env.get("MY_VAR"), "hello world");
  assertEquals(await sb.sh`echo "$MY_VAR"`.text(), "hello world\n");
  const obj = await sb.env.toObject();
  assertEquals(obj.MY_VAR, "hello world");
  assert(typeof obj.PATH === "string" && obj.PATH.includes("/usr/bin"), fmt(obj.PATH));
  await sb.env.delete("MY_VAR");
  assertEquals(await sb.env.get("MY_VAR"), undefined);
  assert(!("MY_VAR" in (await sb.env.toObject())));
  assertEquals(await sb.sh`echo "[\${MY_VAR-unset}]"`.text(), "[unset]\n");
});

// ---------------------------------------------------------------- lifecycle

test("create with env, labels, timeout and memory; list; kill", async () => {
  const tag = crypto.randomUUID().slice(0, 8);
  const sb = await Sandbox.create({
    env: { FROM_CREATE: "yes", OTHER: "1" },
    labels: { suite: "js", run: tag },
    timeout: "2m",
    memory: "1GiB",
  });
  try {
    assertEquals(await sb.sh`echo "$FROM_CREATE/$OTHER"`.text(), "yes/1\n");
    assertEquals(await sb.env.get("FROM_CREATE"), "yes");

    const all = await new Client().sandboxes.list();
    const item = all.find((s) => s.id === sb.id);
    assert(item, `sandbox ${sb.id} not listed`);
    assertEquals(item.status, "running");
    assertEquals(item.labels, { suite: "js", run: tag });
    assert(item.createdAt instanceof Date && Math.abs(item.createdAt.getTime() - Date.now()) < 300_000);
    assertEquals(item.stoppedAt, null);
    assert(typeof item.region === "string" && item.region.length > 0);

    const filtered = await new Client().sandboxes.list({ labels: { run: tag } });
    assertEquals(filtered.map((s) => s.id), [sb.id]);
    assertEquals(await new Client().sandboxes.list({ labels: { run: "no-such-" + tag } }), []);
  } finally {
    await sb.kill();
  }
  await sb.closed; // kill() waits for the socket to close
  await assertGone(sb.id);
});

test("connect from a second client by id", async () => {
  await using sb = await Sandbox.create();
  await sb.fs.writeTextFile("/tmp/shared.txt", "from the creator");
  {
    await using sb2 = await Sandbox.connect({ id: sb.id });
    assertEquals(sb2.id, sb.id);
    assertEquals(await sb2.fs.readTextFile("/tmp/shared.txt"), "from the creator");
    assertEquals(await sb2.sh`echo second`.text(), "second\n");
    await sb2.fs.writeTextFile("/tmp/back.txt", "reply");
  }
  // Closing a connect socket does not end the sandbox.
  assertEquals(await sb.fs.readTextFile("/tmp/back.txt"), "reply");
  const sb3 = await Sandbox.connect(sb.id);
  assertEquals(await sb3.sh`echo third`.text(), "third\n");
  await sb3.close();
});

test("a duration sandbox outlives its socket; extendTimeout; kill", async () => {
  const sb = await Sandbox.create({ timeout: "1m" });
  const id = sb.id;
  await sb.fs.writeTextFile("/tmp/keep.txt", "kept");
  await sb.close();
  assertEquals((await listed(id))?.status, "running");

  const again = await Sandbox.connect({ id });
  assertEquals(await again.fs.readTextFile("/tmp/keep.txt"), "kept");
  const before = Date.now();
  const until = await again.extendTimeout("2m");
  assert(until instanceof Date && !isNaN(until.getTime()));
  assert(until.getTime() > before + 65_000, `not extended: ${until.toISOString()}`);
  assert(until.getTime() <= before + 31 * 60_000, `more than 30 minutes: ${until.toISOString()}`);
  await assertRejects(() => again.extendTimeout("session" as "1m"), InvalidTimeoutError);

  const p = await again.spawn("sleep", { args: ["60"], stdout: "piped", stderr: "piped" });
  await again.kill();
  await again.closed;
  // Pending calls settle (exit status or ConnectionClosedError), never hang.
  await p.status.then(() => {}, () => {});
  await assertGone(id);
});

test("await using disposal ends a session sandbox", async () => {
  let id = "";
  {
    await using sb = await Sandbox.create();
    id = sb.id;
    assertEquals(await sb.sh`echo alive`.text(), "alive\n");
    assertEquals((await listed(id))?.status, "running");
  }
  await assertGone(id);
});

// ---------------------------------------------------------------- errors

test("wrong token is InvalidTokenError", async () => {
  await assertRejects(() => Sandbox.create({ token: "ddo_" + "x".repeat(40) }), InvalidTokenError);
  await assertRejects(() => Sandbox.connect({ id: UNKNOWN_ID, token: "ddo_wrong" }), InvalidTokenError);
  await assertRejects(() => new Client({ token: "ddo_wrong" }).sandboxes.list(), (e) => {
    assertEquals((e as { status?: number }).status, 401);
    assertEquals((e as { code?: string }).code, "INVALID_TOKEN");
  });
});

test("client-side validation: memory, timeout, id", async () => {
  await assertRejects(() => Sandbox.create({ memory: "100MiB" }), InvalidMemoryError);
  await assertRejects(() => Sandbox.create({ memory: "8GiB" }), InvalidMemoryError);
  await assertRejects(() => Sandbox.create({ memory: "1TB" as "1GB" }), InvalidMemoryError);
  await assertRejects(() => Sandbox.create({ timeout: "5h" as "5m" }), InvalidTimeoutError);
  await assertRejects(async () => await Sandbox.connect({ id: "not-a-sandbox-id" }), TypeError);
});

test("connect to an unknown sandbox id fails", async () => {
  const e = await assertRejects(() => Sandbox.connect({ id: UNKNOWN_ID }), ConnectionEstablishmentError);
  const status = (e as ConnectionEstablishmentError).status;
  assert(status >= 400 && status < 500, `status ${status}`);
});

// ---------------------------------------------------------------- scale

test("50 sandboxes driven concurrently", async () => {
  const results = await Promise.all(
    Array.from({ length: 50 }, async (_, i) => {
      await using sb = await Sandbox.create();
      const text = await sb.sh`echo ${i}`.text();
      const p = await sb.spawn("bash", { args: ["-c", "echo $N; echo e$N >&2"], env: { N: String(i) }, stdout: "piped", stderr: "piped" });
      const o = await p.output();
      return { id: sb.id, text, out: o.stdoutText, err: o.stderrText };
    }),
  );
  assertEquals(new Set(results.map((r) => r.id)).size, 50);
  results.forEach((r, i) => assertEquals([r.text, r.out, r.err], [`${i}\n`, `${i}\n`, `e${i}\n`], `sandbox ${i}`));
}, 240_000);

// ---------------------------------------------------------------- network

// A local upstream that the daemon reaches as js.test (--resolve above).
const upstream = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  (req) => new Response(`hello ${new URL(req.url).pathname} via ${req.headers.get("host")}`),
);
globalThis.addEventListener("unload", () => upstream.shutdown());
const UP_PORT = upstream.addr.port;

// The same upstream over TLS (HTTP/2 by ALPN), answering with what it got.
const tlsUpstream = Deno.serve(
  {
    hostname: "127.0.0.1",
    port: 0,
    cert: Deno.readTextFileSync(`${TLS_DIR}/leaf.pem`),
    key: Deno.readTextFileSync(`${TLS_DIR}/leaf.key`),
    onListen() {},
  },
  async (req) => {
    const got = { path: new URL(req.url).pathname, key: req.headers.get("x-key"), body: await req.text() };
    tlsSeen.push(got);
    return Response.json(got);
  },
);
globalThis.addEventListener("unload", () => tlsUpstream.shutdown());
const TLS_PORT = tlsUpstream.addr.port;
const tlsSeen: { path: string; key: string | null; body: string }[] = [];

test("secrets: the upstream gets the value (HTTP/2), the sandbox only its placeholder", async () => {
  const value = "js-secret-" + crypto.randomUUID();
  await using sb = await Sandbox.create({ secrets: { JS_KEY: { hosts: ["js.test"], value } } });
  const placeholder = await sb.sh`printf %s "$JS_KEY"`.text();
  assert(placeholder.startsWith("AIRLOCK_SECRET_") && !placeholder.includes(value), placeholder);
  const before = tlsSeen.length;
  const viaCurl = await sb.sh`curl -sS -m 10 --http2 -H "x-key: $JS_KEY" -d "body $JS_KEY" https://js.test:${String(TLS_PORT)}/curl`.text();
  // The echo carries the value back: the sandbox sees the placeholder.
  assertEquals(JSON.parse(viaCurl), { path: "/curl", key: placeholder, body: `body ${placeholder}` });
  const code = `const r = await fetch("https://js.test:${TLS_PORT}/deno", { headers: { "x-key": Deno.env.get("JS_KEY") } });
console.log(await r.text())`;
  const child = await sb.spawn("deno", { args: ["eval", code], stdout: "piped", stderr: "piped" });
  const out = await child.output();
  assertEquals(out.status.code, 0, out.stderrText ?? "");
  assertEquals(JSON.parse(out.stdoutText ?? ""), { path: "/deno", key: placeholder, body: "" });
  assertEquals(tlsSeen.slice(before), [
    { path: "/curl", key: value, body: `body ${value}` },
    { path: "/deno", key: value, body: "" },
  ]);
});

/** curl inside the sandbox, whatever its exit status. */
async function curl(sb: Sandbox, url: string) {
  const child = await sb.spawn("curl", { args: ["-sS", "-m", "10", url], stdout: "piped", stderr: "piped" });
  return await child.output();
}

test("allowNet: allowed names work from curl and Deno fetch; others are NXDOMAIN", async () => {
  await using sb = await Sandbox.create({ allowNet: [`js.test:${UP_PORT}`] });
  assertEquals(
    await sb.sh`curl -sS -m 10 http://js.test:${String(UP_PORT)}/curl`.text(),
    `hello /curl via js.test:${UP_PORT}`,
  );
  const code = `console.log(await (await fetch("http://js.test:${UP_PORT}/deno")).text())`;
  const r = await sb.spawn("deno", { args: ["eval", code], stdout: "piped", stderr: "piped" });
  const out = await r.output();
  assertEquals(dec.decode(out.stdout ?? new Uint8Array()).trim(), `hello /deno via js.test:${UP_PORT}`);
  // Not in allowNet: the name does not resolve.
  const denied = await curl(sb, `http://other.test:${UP_PORT}/`);
  assertEquals(denied.status.code, 6, denied.stderrText ?? "");
});

test("no allowNet: nothing is reachable", async () => {
  await using sb = await Sandbox.create();
  const r = await curl(sb, `http://js.test:${UP_PORT}/`);
  assertEquals(r.status.code, 6, r.stderrText ?? "");
});

stopDaemonTest();
