// HTTP into the sandbox through the official JS SDK: `sandbox.fetch` to a
// server running in it, streamed both ways. See harness.ts for the daemon.

import { Sandbox } from "@deno/sandbox";
import { assert, assertEquals, assertRejects, enc, stopDaemonTest, test, TLS_DIR } from "./harness.ts";

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

/** GET `url` with curl through the daemon's ingress, trusting its CA. */
async function curl(url: string): Promise<{ code: number; body: string }> {
  const u = new URL(url);
  const out = await new Deno.Command("curl", {
    args: [
      "-sS", "--max-time", "20", "--cacert", `${TLS_DIR}/expose-ca.pem`,
      "--resolve", `${u.hostname}:${u.port || 443}:127.0.0.1`, "-w", "\n%{http_code}", url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, `curl ${url}: ${new TextDecoder().decode(out.stderr)}`);
  const text = new TextDecoder().decode(out.stdout);
  const cut = text.lastIndexOf("\n");
  return { code: Number(text.slice(cut + 1)), body: text.slice(0, cut) };
}

test("exposeHttp and Sandbox.create({port}) serve the sandbox over HTTPS", async () => {
  if (!TLS_DIR) return; // a daemon we did not start: its CA is not ours to read
  await using sb = await Sandbox.create({ port: 8000 });
  assert(sb.url?.startsWith("https://") && new URL(sb.url).hostname.endsWith(".sandbox.localhost"), `${sb.url}`);
  // Nothing listens yet: the ingress says so.
  const early = await curl(sb.url + "/");
  assertEquals(early.code, 502);
  assert(early.body.includes("nothing is listening on port 8000"), early.body);
  await startServer(sb);
  assertEquals(await curl(sb.url + "/a"), { code: 200, body: "hello /a" });
  const url = await sb.exposeHttp({ port: 8000 });
  assert(url !== sb.url, "each call gets its own domain");
  assertEquals(await curl(url + "/b"), { code: 200, body: "hello /b" });
  // The streamed response comes through whole.
  assertEquals((await curl(url + "/ticks")).body.trim().split("\n"), ["tick1", "tick2", "tick3"]);
});

stopDaemonTest();
