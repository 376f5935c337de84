// Volumes through the JS SDK (issue 16), the counterpart of
// tests/sdk/python/test_volumes.py: client.volumes.create/get/list/delete in
// the hosted shape, data that outlives a sandbox (mounted with
// `Sandbox.create({volumes: {path: slugOrId}})`), one sandbox at a time, a
// capacity the kernel enforces, refused mount paths, and snapshots with
// copy-on-write forks (`volumes.snapshot`, `snapshots.get/list/delete`,
// `volumes.create({from})`).
//
// Run with `deno test -A --config target/sdk/js/deno.json tests/sdk/js/volumes_test.ts`.

import { ApiError, Client, ConnectionEstablishmentError, Sandbox, type Volume } from "@deno/sandbox";
import { assert, assertEquals, assertRejects, ENDPOINT, fmt, stopDaemonTest, test, TOKEN } from "./harness.ts";

const MB = 1_000_000;
const MiB = 1 << 20;
/** The keys of a volume on the wire (PROTOCOL-STORAGE.md §1); the SDK's
 * Volume keeps them in private fields, so the raw JSON is checked too. */
const VOLUME_KEYS = [
  "base_snapshot",
  "capacity",
  "estimated_allocated_size",
  "estimated_flattened_size",
  "id",
  "is_bootable",
  "region",
  "slug",
];
const VOLUME_ID_RE = /^vol_ord_[0-9a-z]+$/;

const client = new Client();
/** A capacity as the SDK's VolumeInit types it (bytes or "64MB"-style). */
type Capacity = Parameters<Client["volumes"]["create"]>[0]["capacity"];
/** Every volume this file creates, so the last test can check none is left. */
const created = new Set<string>();

async function create(name: string, capacity: Capacity, from?: string): Promise<Volume> {
  const v = await client.volumes.create({ slug: name, region: "ord", capacity, ...(from ? { from } : {}) });
  created.add(v.id);
  return v;
}

function slug(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

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

async function run(sb: Sandbox, cmd: string, ...args: string[]) {
  const p = await sb.spawn(cmd, { args, stdout: "piped", stderr: "piped" });
  const o = await p.output();
  return { code: o.status.code, out: o.stdoutText ?? "", err: o.stderrText ?? "" };
}

/** The volume as the console API answers it, bypassing the SDK's mapping. */
async function rawVolume(idOrSlug: string): Promise<Record<string, unknown>> {
  const resp = await fetch(`${ENDPOINT}/api/v2/volumes/${idOrSlug}`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  assertEquals(resp.status, 200, `GET /api/v2/volumes/${idOrSlug}`);
  return await resp.json();
}

/** The SDK's Volume as a plain object with the wire's names. */
function plain(v: Volume): Record<string, unknown> {
  return {
    id: v.id,
    slug: v.slug,
    region: v.region,
    capacity: v.capacity,
    estimated_allocated_size: v.estimatedAllocatedSize,
    estimated_flattened_size: v.estimatedFlattenedSize,
    is_bootable: v.isBootable,
    base_snapshot: v.baseSnapshot,
  };
}

async function listedIds(search?: string): Promise<string[]> {
  const page = await client.volumes.list(search === undefined ? {} : { search });
  // airlock answers one page: no `Link` header, so no next cursor.
  assert(!page.hasMore, `list has more pages: ${fmt(page.nextCursor)}`);
  return page.items.map((v) => v.id);
}

/** Deletes a volume, ignoring one that is already gone. */
async function remove(idOrSlug: string) {
  try {
    await client.volumes.delete(idOrSlug);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
}

/** Runs `fn` with a fresh volume of `capacity`, deleted afterwards. */
async function withVolume(capacity: Capacity, fn: (v: Volume) => Promise<void>) {
  const v = await create(slug("js"), capacity);
  try {
    await fn(v);
  } finally {
    await remove(v.id);
  }
}

/** A sandbox create that must be refused: the SDK rejects with the daemon's
 * HTTP status on a ConnectionEstablishmentError. */
async function assertCreateRefused(volumes: Record<string, string>, status: number) {
  const e = await assertRejects(async () => {
    const sb = await Sandbox.create({ volumes });
    await sb.close();
  }, ConnectionEstablishmentError);
  assertEquals((e as ConnectionEstablishmentError).status, status, `create with ${fmt(volumes)}: ${e.message}`);
  return e as ConnectionEstablishmentError;
}

test("create (string and byte capacities), get by slug and id, list, delete: the hosted shape", async () => {
  const name = slug("shape");
  const v = await create(name, "64MB");
  const bytes = await create(slug("bytes"), 32 * MiB);
  const binary = await create(slug("mib"), "40MiB");
  try {
    assert(VOLUME_ID_RE.test(v.id), v.id);
    assertEquals(v.slug, name);
    assertEquals(v.region, "ord");
    assertEquals(v.capacity, 64 * MB);
    assertEquals(v.isBootable, false);
    assertEquals(v.baseSnapshot, null);
    // A fresh file system takes some room, never the whole capacity.
    assert(0 < v.estimatedAllocatedSize && v.estimatedAllocatedSize < v.capacity, fmt(v));
    assertEquals(typeof v.estimatedFlattenedSize, "number");
    assertEquals(bytes.capacity, 32 * MiB);
    assertEquals(binary.capacity, 40 * MiB);

    // The wire object has exactly the hosted keys, and the SDK's Volume says the same.
    const raw = await rawVolume(v.id);
    assertEquals(Object.keys(raw).sort(), VOLUME_KEYS);
    assertEquals(plain(v), raw);

    const bySlug = await client.volumes.get(name);
    const byId = await client.volumes.get(v.id);
    assert(bySlug && byId, `get: ${fmt(bySlug)} ${fmt(byId)}`);
    assertEquals(plain(bySlug), plain(v));
    assertEquals(plain(byId), plain(v));

    const ids = await listedIds();
    for (const x of [v, bytes, binary]) assert(ids.includes(x.id), `${x.id} not listed in ${fmt(ids)}`);
    assertEquals(await listedIds(name), [v.id]);

    // The raw list is a bare array with no `Link` header.
    const resp = await fetch(`${ENDPOINT}/api/v2/volumes`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    assertEquals(resp.headers.get("link"), null);
    const arr = await resp.json();
    assert(Array.isArray(arr), fmt(arr));

    await client.volumes.delete(name);
    assertEquals(await client.volumes.get(name), null);
    assertEquals(await client.volumes.get(v.id), null);
    assert(!(await listedIds()).includes(v.id), "deleted volume still listed");
  } finally {
    for (const x of [v, bytes, binary]) await remove(x.id);
  }
});

test("get of an unknown volume is null; delete of one is a 404 ApiError", async () => {
  assertEquals(await client.volumes.get("no-such-volume"), null);
  assertEquals(await client.volumes.get("vol_ord_" + "0".repeat(20)), null);
  const e = await assertRejects(() => client.volumes.delete("no-such-volume"), ApiError);
  assertEquals((e as ApiError).status, 404, e.message);
});

test("data written in one sandbox is read byte for byte in the next, at another path", async () => {
  await withVolume("64MB", async (v) => {
    const data = randomBytes(4 * MiB);
    const want = await sha256(data);
    {
      await using sb = await Sandbox.create({ volumes: { "/data": v.slug } });
      await sb.fs.mkdir("/data/dir", { recursive: true });
      await sb.fs.writeFile("/data/dir/blob.bin", data);
      const s = await run(sb, "sha256sum", "/data/dir/blob.bin");
      assertEquals(s.code, 0, s.err);
      assertEquals(s.out.split(" ")[0], want, "sha256sum in the writing sandbox");
      // The sandbox's root owns the volume and what it writes there.
      const o = await run(sb, "sh", "-c", "id -u; stat -c %u /data /data/dir/blob.bin");
      assertEquals(o.code, 0, o.err);
      assertEquals(o.out.split(/\s+/).filter(Boolean), ["0", "0", "0"]);
    }
    // The next sandbox, by id this time and at another path.
    {
      await using sb = await Sandbox.create({ volumes: { "/home/app/work": v.id } });
      const back = await sb.fs.readFile("/home/app/work/dir/blob.bin");
      assertEquals(back.length, data.length, "readFile length");
      assert(back.every((b, i) => b === data[i]), "readFile differs from what was written");
      const s = await run(sb, "sha256sum", "/home/app/work/dir/blob.bin");
      assertEquals(s.code, 0, s.err);
      assertEquals(s.out.split(" ")[0], want, "sha256sum in the reading sandbox");
    }
    const after = await client.volumes.get(v.id);
    assert(after && after.estimatedAllocatedSize >= data.length, fmt(after));
  });
});

test("a volume is mounted in one sandbox at a time, and cannot be deleted while it is", async () => {
  await withVolume("64MB", async (v) => {
    {
      await using sb = await Sandbox.create({ volumes: { "/data": v.slug } });
      await sb.fs.writeTextFile("/data/first.txt", "first");
      const e = await assertCreateRefused({ "/data": v.slug }, 409);
      assert(e.message.includes("one sandbox at a time"), e.message);
      // By id as well as by slug.
      await assertCreateRefused({ "/other": v.id }, 409);

      const d = await assertRejects(() => client.volumes.delete(v.id), ApiError);
      assertEquals((d as ApiError).status, 409, d.message);
      assertEquals((d as ApiError).code, "VOLUME_IN_USE");
      assert(d.message.includes("mounted in sandbox"), d.message);
      // The first sandbox still has it.
      assertEquals(await sb.fs.readTextFile("/data/first.txt"), "first");
    }
    // Free again once that sandbox is closed.
    await using sb = await Sandbox.create({ volumes: { "/data": v.slug } });
    assertEquals(await sb.fs.readTextFile("/data/first.txt"), "first");
  });
});

test("a volume is deleted right after the sandbox that mounted it closes", async () => {
  const v = await create(slug("close"), "32MB");
  try {
    const sb = await Sandbox.create({ volumes: { "/data": v.id } });
    await sb.fs.writeTextFile("/data/x", "x");
    await sb.close();
    // The daemon waits for the closing sandbox's teardown instead of a 409.
    await client.volumes.delete(v.id);
    assertEquals(await client.volumes.get(v.id), null);
  } finally {
    await remove(v.id);
  }
});

test("a full 32MB volume is ENOSPC inside; the sandbox's own disk is untouched", async () => {
  await withVolume("32MB", async (v) => {
    {
      await using sb = await Sandbox.create({ volumes: { "/data": v.id } });
      const dd = await run(sb, "dd", "if=/dev/zero", "of=/data/fill", "bs=1M", "count=100");
      assert(dd.code !== 0, `dd succeeded: ${dd.err}`);
      assert(dd.err.includes("No space left on device"), dd.err);
      const df = await run(sb, "df", "-B1", "--output=size", "/data");
      assertEquals(df.code, 0, df.err);
      assert(Number(df.out.trim().split(/\s+/).at(-1)) <= 32 * MB, df.out);
      await sb.fs.writeTextFile("/root/still.txt", "ok");
      assertEquals(await sb.fs.readTextFile("/root/still.txt"), "ok");
    }
    const after = await client.volumes.get(v.id);
    assert(after && after.estimatedAllocatedSize <= 32 * MB, fmt(after));
  });
});

test("mount paths over the root or kernel interfaces are refused", async () => {
  await withVolume("32MB", async (v) => {
    for (const path of ["/", "/proc", "/proc/self", "/sys/x", "data"]) {
      await assertCreateRefused({ [path]: v.slug }, 400);
    }
    // Nothing was left holding the volume.
    await using sb = await Sandbox.create({ volumes: { "/data": v.slug } });
    assert((await sb.fs.stat("/data")).isDirectory);
  });
});

test("an unknown volume in Sandbox.create is a 404", async () => {
  await assertCreateRefused({ "/data": "no-such-volume" }, 404);
});

test("a snapshot is a copy-on-write clone, and a fork is the volume's writable copy", async () => {
  await withVolume("64MB", async (v) => {
    const data = randomBytes(MiB);
    {
      await using sb = await Sandbox.create({ volumes: { "/data": v.id } });
      await sb.fs.writeFile("/data/base.bin", data);
    }
    // Right after the close: the daemon waits for the sandbox to let go.
    const snap = await client.volumes.snapshot(v.id, { slug: slug("snap") });
    try {
      assert(/^snp_ord_[0-9a-z]+$/.test(snap.id), snap.id);
      assertEquals(snap.volume, { id: v.id, slug: v.slug });
      assertEquals(snap.isBootable, false);
      assert(snap.allocatedSize >= MiB, `allocated ${snap.allocatedSize}`);
      assertEquals((await client.snapshots.get(snap.slug))?.id, snap.id);
      assertEquals((await client.snapshots.get(snap.id))?.slug, snap.slug);
      assert((await client.snapshots.list()).items.some((s) => s.id === snap.id));

      const fork = await create(slug("fork"), "64MB", snap.slug);
      try {
        assertEquals(fork.baseSnapshot, { id: snap.id, slug: snap.slug });
        await using sb = await Sandbox.create({ volumes: { "/orig": v.id, "/fork": fork.id } });
        assertEquals(await sha256(await sb.fs.readFile("/fork/base.bin")), await sha256(data));
        await sb.fs.writeTextFile("/fork/base.bin", "the fork's own");
        assertEquals(await sha256(await sb.fs.readFile("/orig/base.bin")), await sha256(data));
      } finally {
        await remove(fork.id);
      }
    } finally {
      await client.snapshots.delete(snap.id);
    }
    assertEquals(await client.snapshots.get(snap.id), null);
  });
});

test("a mounted volume cannot be snapshotted; unknown ones are 404", async () => {
  await withVolume("32MB", async (v) => {
    await using _sb = await Sandbox.create({ volumes: { "/data": v.id } });
    const e = await assertRejects(() => client.volumes.snapshot(v.id, { slug: slug("busy") }), ApiError);
    assertEquals((e as ApiError).status, 409, e.message);
    assertEquals((e as ApiError).code, "VOLUME_IN_USE");
  });
  const e = await assertRejects(() => client.volumes.snapshot("no-such-volume", { slug: slug("x") }), ApiError);
  assertEquals((e as ApiError).status, 404, e.message);
  assertEquals(await client.snapshots.get("no-such-snapshot"), null);
});

test("no volume this file made is left behind", async () => {
  const left = (await listedIds()).filter((id) => created.has(id));
  assertEquals(left, []);
});

stopDaemonTest();
