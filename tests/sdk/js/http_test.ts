// HTTP into the sandbox through the official JS SDK: `sandbox.fetch` to a
// server running in it, streamed both ways. See harness.ts for the daemon.

import { Sandbox } from "@deno/sandbox";
import { assert, assertEquals, assertRejects, enc, stopDaemonTest, test } from "./harness.ts";

/** A Deno server on the sandbox's loopback only. */
const SERVER = `
const te = new TextEncoder(), td = new TextDecoder();
Deno.serve({ port: 8000, hostname: "127.0.0.1", onListen() {} }, async (req) => {
  const url = new URL(req.url);
  switch (url.pathname) {
    case "/upper": // transforms the request body as it streams in
      return new Response(req.body!.pipeThrough(new TransformStream({
        transform(chunk, c) { c.enqueue(te.encode(td.decode(chunk).toUpperCase())); },
      })));
    case "/count": {
      let n = 0;
      for await (const c of req.body!) n += c.length;
      return Response.json({ n, method: req.method, type: req.headers.get("content-type") });
    }
    case "/ticks": { // a response that streams out over time
      let i = 0;
      return new Response(new ReadableStream({
        async pull(c) {
          await new Promise((r) => setTimeout(r, 100));
          if (i++ < 3) c.enqueue(te.encode("tick" + i + "\\n")); else c.close();
        },
      }));
    }
    default:
      return new Response("hello " + url.pathname, { headers: { "x-server": "deno-in-sandbox" } });
  }
});
`;

async function startServer(sb: Sandbox) {
  await sb.fs.writeTextFile("/tmp/server.ts", SERVER);
  await sb.spawn("deno", { args: ["run", "-A", "/tmp/server.ts"], stdout: "null", stderr: "null" });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await sb.fetch("http://localhost:8000/ready");
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test("sandbox.fetch streams both ways to a server in the sandbox", async () => {
  await using sb = await Sandbox.create();
  const ready = await startServer(sb);
  assertEquals(await ready.text(), "hello /ready");
  assertEquals(ready.headers.get("x-server"), "deno-in-sandbox");

  // A streamed request body, transformed and streamed back.
  const parts = ["abc", "def", "ghi"];
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      const p = parts.shift();
      if (p === undefined) c.close();
      else c.enqueue(enc.encode(p));
    },
  });
  const up = await sb.fetch("http://localhost:8000/upper", { method: "POST", body });
  assertEquals(up.status, 200);
  assertEquals(await up.text(), "ABCDEFGHI");

  // A 6 MiB body arrives whole.
  const big = new Uint8Array(6 << 20).fill(120);
  const counted = await sb.fetch("http://127.0.0.1:8000/count", {
    method: "PUT",
    body: big,
    headers: { "content-type": "application/x-test" },
  });
  assertEquals(await counted.json(), { n: 6 << 20, method: "PUT", type: "application/x-test" });

  // The response streams: the first tick arrives before the last is made.
  const ticks = await sb.fetch("http://localhost:8000/ticks");
  const reader = ticks.body!.getReader();
  const first = await reader.read();
  assert(!first.done && new TextDecoder().decode(first.value).startsWith("tick1"), "first tick");
  let rest = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += new TextDecoder().decode(value);
  }
  assertEquals(rest.trim().split("\n").at(-1), "tick3");
});

test("sandbox.fetch errors: a closed port, a bad URL", async () => {
  await using sb = await Sandbox.create();
  await assertRejects(() => sb.fetch("http://localhost:9/"), undefined, "refused");
  await assertRejects(() => sb.fetch("file:///etc/passwd"), undefined, "http");
  // The connection still works.
  assertEquals((await sb.fs.readTextFile("/etc/hostname")).trim(), "sandbox");
});

stopDaemonTest();
