// Large files through the JS SDK (issue 14 §2): writeFile (bytes and from a
// stream) and readFile of 4 MiB and 64 MiB files, checked by sha256 against
// `sha256sum` inside the sandbox. The agent protocol's frames carry at most
// 1 MiB, so these pass only if files move as streams of frames; the SDK
// itself sends and takes a file as one WebSocket message (up to its `ws`
// client's 100 MiB), which bounds readFile, and what is above that bound
// must fail with an error that says what to use instead.
//
// Run with `deno test -A --config target/sdk/js/deno.json tests/sdk/js/files_test.ts`.

import { Sandbox } from "@deno/sandbox";
import { assert, assertEquals, assertRejects, fmt, stopDaemonTest, test } from "./harness.ts";

const MiB = 1 << 20;

/** Incompressible bytes (so no layer can shortcut them). */
function randomBytes(size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  // getRandomValues fills at most 64 KiB per call.
  for (let i = 0; i < size; i += 65536) {
    crypto.getRandomValues(out.subarray(i, Math.min(size, i + 65536)));
  }
  return out;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** sha256 of `path` as the sandbox itself computes it. */
async function sha256sum(sb: Sandbox, path: string): Promise<string> {
  const p = await sb.spawn("sha256sum", { args: [path], stdout: "piped", stderr: "piped" });
  const o = await p.output();
  assert(o.status.success, `sha256sum ${path}: ${o.stderrText}`);
  return o.stdoutText!.split(" ")[0];
}

/** `bytes` as a stream of `piece`-sized chunks. */
function streamOf(bytes: Uint8Array, piece: number): ReadableStream<Uint8Array> {
  const parts = [];
  for (let i = 0; i < bytes.length; i += piece) parts.push(bytes.subarray(i, i + piece));
  return ReadableStream.from(parts);
}

function rate(bytes: number, ms: number): string {
  return `${(bytes / MiB / (ms / 1000)).toFixed(1)} MiB/s`;
}

/** Writes `size` bytes both ways and reads them back, checking sha256. */
async function roundTrip(sb: Sandbox, size: number) {
  const data = randomBytes(size);
  const want = await sha256(data);
  const label = `${size / MiB} MiB`;

  let t = performance.now();
  await sb.fs.writeFile("/root/bytes.bin", data);
  const writeMs = performance.now() - t;
  assertEquals(await sha256sum(sb, "/root/bytes.bin"), want, `${label} writeFile(bytes)`);

  t = performance.now();
  const back = await sb.fs.readFile("/root/bytes.bin");
  const readMs = performance.now() - t;
  assertEquals(back.length, size, `${label} readFile length`);
  assertEquals(await sha256(back), want, `${label} readFile`);

  t = performance.now();
  await sb.fs.writeFile("/root/stream.bin", streamOf(data, 256 * 1024));
  const streamMs = performance.now() - t;
  assertEquals(await sha256sum(sb, "/root/stream.bin"), want, `${label} writeFile(stream)`);
  await sb.fs.remove("/root/stream.bin");
  await sb.fs.remove("/root/bytes.bin");
  console.log(
    `${label}: writeFile(bytes) ${rate(size, writeMs)}, writeFile(stream) ${rate(size, streamMs)}, ` +
      `readFile ${rate(size, readMs)}`,
  );
}

test("4 MiB files: writeFile (bytes, stream) and readFile, by sha256", async () => {
  await using sb = await Sandbox.create();
  await roundTrip(sb, 4 * MiB);

  // Text both ways, with characters JSON must escape.
  const line = 'a "quoted" line\twith a tab and \\ ünïcödé\n';
  const text = line.repeat(Math.ceil((4 * MiB) / line.length));
  await sb.fs.writeTextFile("/root/t.txt", text);
  assertEquals(await sb.fs.readTextFile("/root/t.txt"), text);
  const enc = new TextEncoder().encode(text);
  assertEquals(await sha256sum(sb, "/root/t.txt"), await sha256(enc));
  // A big file that is not UTF-8 is still refused as text.
  await sb.fs.writeFile("/root/bin.bin", randomBytes(2 * MiB));
  await assertRejects(() => sb.fs.readTextFile("/root/bin.bin"), undefined, "invalid utf-8");
});

test("64 MiB files: writeFile (bytes, stream) and readFile, by sha256", async () => {
  await using sb = await Sandbox.create();
  await roundTrip(sb, 64 * MiB);
});

test("a file over the SDK's 100 MiB message: readFile says what to use instead", async () => {
  await using sb = await Sandbox.create();
  // Written by a shell redirect, so the file never crosses the SDK.
  const sh = await sb.spawn("sh", { args: ["-c", `head -c ${80 * MiB} /dev/urandom > /root/huge.bin`] });
  assert((await sh.status).success);
  const e = await assertRejects(() => sb.fs.readFile("/root/huge.bin"));
  assert(e instanceof RangeError, fmt(e));
  assert(e.message.includes("fs.open()"), e.message);
  // The connection survives, and the file is still there to read in pieces.
  const f = await sb.fs.open("/root/huge.bin");
  const got = await f.read(new Uint8Array(1024));
  assertEquals(got, 1024);
  await f.close();
  assertEquals((await sb.fs.stat("/root/huge.bin")).size, 80 * MiB);
});

stopDaemonTest();
