"""Volumes through the Python SDK (issue 16): the console API's shapes,
data that outlives a sandbox, one sandbox at a time, a capacity the kernel
enforces, owners, and clear refusals. Snapshots answer 501 NOT_SUPPORTED.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid

import pytest
from deno_sandbox import DenoDeploy
from deno_sandbox.errors import HTTPStatusError

MB = 1_000_000
VOLUME_KEYS = {
    "id",
    "slug",
    "region",
    "capacity",
    "estimated_allocated_size",
    "estimated_flattened_size",
    "is_bootable",
    "base_snapshot",
}


def slug(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run(sb, *cmd: str) -> tuple[int, str, str]:
    p = sb.spawn(cmd[0], args=list(cmd[1:]), stdout="piped", stderr="piped")
    out = p.stdout.read().decode()
    err = p.stderr.read().decode()
    return p.wait()["code"], out, err


@pytest.fixture
def volume(client):
    """A fresh 64 MB volume, deleted afterwards."""
    v = client.volumes.create(slug("py"), "ord", "64MB")
    yield v
    try:
        client.volumes.delete(v["id"])
    except HTTPStatusError:
        pass


def test_create_get_list_delete_in_the_hosted_shape(client):
    name = slug("shape")
    v = client.volumes.create(name, "ord", "64MB")
    assert set(v) == VOLUME_KEYS, v
    assert v["slug"] == name and v["region"] == "ord"
    assert v["capacity"] == 64 * MB
    assert v["is_bootable"] is False and v["base_snapshot"] is None
    assert v["id"].startswith("vol_ord_")
    assert 0 < v["estimated_allocated_size"] < v["capacity"]

    assert client.volumes.get(name) == v
    assert client.volumes.get(v["id"]) == v
    # Capacities in bytes and binary units.
    other = client.volumes.create(slug("bytes"), "ord", 32 << 20)
    assert other["capacity"] == 32 << 20
    ids = {x["id"] for x in _all(client.volumes.list())}
    assert {v["id"], other["id"]} <= ids
    assert {x["id"] for x in _all(client.volumes.list(search=name))} == {v["id"]}

    client.volumes.delete(name)
    client.volumes.delete(other["id"])
    assert client.volumes.get(name) is None
    # The slug is free again at once.
    again = client.volumes.create(name, "ord", "64MB")
    assert again["id"] != v["id"]
    client.volumes.delete(again["id"])


def _all(paginated) -> list:
    """The items of the SDK's paginated list: airlock answers one page
    (no `Link` header)."""
    assert not paginated.has_more
    return paginated.items


def test_data_written_in_one_sandbox_is_read_in_the_next(client, volume):
    data = os.urandom(512 * 1024)
    with client.sandbox.create(volumes={"/data": volume["slug"]}) as sb:
        sb.fs.mkdir("/data/dir", recursive=True)
        sb.fs.write_file("/data/dir/blob.bin", data)
        code, out, err = run(sb, "sh", "-c", "id -u; stat -c %u /data /data/dir/blob.bin")
        assert code == 0, err
        # The sandbox's root owns the volume and what it writes there.
        assert out.split() == ["0", "0", "0"], out
    # Another path in the next sandbox, by id this time.
    with client.sandbox.create(volumes={"/home/app/work": volume["id"]}) as sb:
        assert sb.fs.read_file("/home/app/work/dir/blob.bin") == data
        code, out, _ = run(sb, "sha256sum", "/home/app/work/dir/blob.bin")
        assert out.split()[0] == hashlib.sha256(data).hexdigest()
    after = client.volumes.get(volume["id"])
    assert after["estimated_allocated_size"] >= len(data)


def test_a_volume_is_mounted_in_one_sandbox_at_a_time(client, volume):
    with client.sandbox.create(volumes={"/data": volume["slug"]}):
        with pytest.raises(Exception) as e:
            with client.sandbox.create(volumes={"/data": volume["slug"]}):
                pass
        assert "one sandbox at a time" in str(e.value) or "409" in str(e.value), e.value
        with pytest.raises(HTTPStatusError) as d:
            client.volumes.delete(volume["id"])
        assert d.value.status_code == 409 and d.value.code == "VOLUME_IN_USE"
        assert "mounted in sandbox" in d.value.message
    # Free again once that sandbox is gone.
    with client.sandbox.create(volumes={"/data": volume["slug"]}) as sb:
        assert sb.fs.read_dir("/data") is not None


def test_a_full_volume_is_enospc_inside_and_nothing_on_the_host(client):
    v = client.volumes.create(slug("full"), "ord", "32MB")
    try:
        with client.sandbox.create(volumes={"/data": v["id"]}) as sb:
            code, _, err = run(
                sb, "dd", "if=/dev/zero", "of=/data/fill", "bs=1M", "count=100"
            )
            assert code != 0 and "No space left on device" in err, err
            code, out, _ = run(sb, "df", "-B1", "--output=size", "/data")
            assert int(out.split()[-1]) <= 32 * MB
            # The sandbox's own disk is untouched by the volume filling up.
            sb.fs.write_text_file("/root/still.txt", "ok")
            assert sb.fs.read_text_file("/root/still.txt") == "ok"
        # The image never grows past its capacity.
        assert client.volumes.get(v["id"])["estimated_allocated_size"] <= 32 * MB
    finally:
        client.volumes.delete(v["id"])


@pytest.mark.parametrize(
    "bad_slug",
    ["../etc", "a/b", "x", "UPPER", "-lead", "trail-", "ab--cd", "a" * 33, "nul\x00x"],
)
def test_bad_slugs_are_refused(client, bad_slug):
    with pytest.raises(HTTPStatusError) as e:
        client.volumes.create(bad_slug, "ord", "64MB")
    assert e.value.status_code == 400 and "slug" in e.value.message, e.value


@pytest.mark.parametrize("capacity", ["1TB", "lots", -5, 0, "1MB", "21GB"])
def test_bad_capacities_are_refused(client, capacity):
    with pytest.raises(HTTPStatusError) as e:
        client.volumes.create(slug("cap"), "ord", capacity)
    assert e.value.status_code == 400 and "capacity" in e.value.message, e.value


def test_slugs_are_unique_per_token(client, volume):
    with pytest.raises(HTTPStatusError) as e:
        client.volumes.create(volume["slug"], "ord", "64MB")
    assert e.value.status_code == 409 and e.value.code == "SLUG_TAKEN"


@pytest.mark.parametrize("path", ["/", "/proc", "/proc/self", "/sys/x", "/dev/shm", "data", "/a/../etc"])
def test_mount_paths_over_kernel_interfaces_or_the_root_are_refused(client, volume, path):
    with pytest.raises(Exception) as e:
        with client.sandbox.create(volumes={path: volume["slug"]}):
            pass
    assert "400" in str(e.value) or "INVALID_CONFIG" in str(e.value), e.value


def test_an_unknown_volume_is_refused_and_nothing_is_left(client):
    with pytest.raises(Exception) as e:
        with client.sandbox.create(volumes={"/data": "no-such-volume"}):
            pass
    assert "404" in str(e.value) or "not found" in str(e.value), e.value


def test_another_tokens_volume_is_invisible_and_cannot_be_mounted(client, volume, airlock):
    if airlock["bin"] is None:
        pytest.skip("needs the suite's own daemon to make a second token")
    made = subprocess.run(
        [str(airlock["bin"]), "token", "create", "--store", str(airlock["store"]), slug("other")],
        capture_output=True,
        text=True,
        check=True,
    )
    other = DenoDeploy({"token": made.stdout.split()[-1]})
    assert other.volumes.get(volume["id"]) is None
    assert other.volumes.get(volume["slug"]) is None
    assert volume["id"] not in {x["id"] for x in _all(other.volumes.list())}
    with pytest.raises(HTTPStatusError) as e:
        other.volumes.delete(volume["id"])
    assert e.value.status_code == 404
    with pytest.raises(Exception) as e:
        with other.sandbox.create(volumes={"/data": volume["id"]}):
            pass
    assert "404" in str(e.value), e.value
    # Still there for its owner.
    assert client.volumes.get(volume["id"])["id"] == volume["id"]


SNAPSHOT_KEYS = {
    "id",
    "slug",
    "region",
    "allocated_size",
    "flattened_size",
    "is_bootable",
    "volume",
    "base_snapshot",
}


def test_snapshot_and_fork_are_copy_on_write(client, volume):
    data = os.urandom(256 * 1024)
    with client.sandbox.create(volumes={"/data": volume["id"]}) as sb:
        sb.fs.write_file("/data/base.bin", data)
        # 200 MB more, so that a full copy would show in the time it takes.
        code, _, err = run(sb, "dd", "if=/dev/urandom", "of=/data/bulk", "bs=1M", "count=40")
        assert code == 0, err
    # Not while mounted (as on the hosted service); waits for an ending one.
    snap = client.volumes.snapshot(volume["id"], slug=slug("snap"))
    assert set(snap) == SNAPSHOT_KEYS, snap
    assert snap["id"].startswith("snp_ord_")
    assert snap["volume"] == {"id": volume["id"], "slug": volume["slug"]}
    assert snap["base_snapshot"] is None and snap["is_bootable"] is False
    assert snap["allocated_size"] >= 40 * MB
    assert client.snapshots.get(snap["slug"]) == snap
    assert client.snapshots.get(snap["id"]) == snap
    assert snap["id"] in {s["id"] for s in _all(client.snapshots.list())}

    fork = client.volumes.create(slug("fork"), "ord", "64MB", from_snapshot=snap["slug"])
    assert fork["base_snapshot"] == {"id": snap["id"], "slug": snap["slug"]}
    with client.sandbox.create(volumes={"/data": fork["id"]}) as sb:
        assert sb.fs.read_file("/data/base.bin") == data
        sb.fs.write_text_file("/data/base.bin", "the fork's own")
    # The original is untouched by the fork's writes, and a fork outlives
    # its snapshot.
    client.snapshots.delete(snap["id"])
    assert client.snapshots.get(snap["id"]) is None
    with client.sandbox.create(volumes={"/a": volume["id"], "/b": fork["id"]}) as sb:
        assert sb.fs.read_file("/a/base.bin") == data
        assert sb.fs.read_text_file("/b/base.bin") == "the fork's own"
    client.volumes.delete(fork["id"])


def test_a_fork_may_grow_but_not_shrink(client, volume):
    with client.sandbox.create(volumes={"/data": volume["id"]}) as sb:
        sb.fs.write_text_file("/data/kept.txt", "kept")
    snap = client.volumes.snapshot(volume["id"], slug=slug("grow"))
    try:
        with pytest.raises(HTTPStatusError) as e:
            client.volumes.create(slug("small"), "ord", "32MB", from_snapshot=snap["id"])
        assert e.value.status_code == 400 and "at least as big" in e.value.message
        big = client.volumes.create(slug("big"), "ord", "200MB", from_snapshot=snap["id"])
        assert big["capacity"] == 200 * MB
        with client.sandbox.create(volumes={"/data": big["id"]}) as sb:
            assert sb.fs.read_text_file("/data/kept.txt") == "kept"
            code, out, _ = run(sb, "df", "-B1", "--output=size", "/data")
            assert int(out.split()[-1]) > 150 * MB
        client.volumes.delete(big["id"])
    finally:
        client.snapshots.delete(snap["id"])


def test_a_mounted_volume_cannot_be_snapshotted(client, volume):
    with client.sandbox.create(volumes={"/data": volume["id"]}):
        with pytest.raises(HTTPStatusError) as e:
            client.volumes.snapshot(volume["id"], slug=slug("busy"))
        assert e.value.status_code == 409 and e.value.code == "VOLUME_IN_USE"


def test_snapshot_errors(client, volume):
    with pytest.raises(HTTPStatusError) as e:
        client.volumes.snapshot("no-such-volume", slug=slug("x"))
    assert e.value.status_code == 404
    with pytest.raises(HTTPStatusError) as e:
        client.volumes.snapshot(volume["id"], slug=volume["slug"])
    assert e.value.status_code == 409 and e.value.code == "SLUG_TAKEN"
    with pytest.raises(HTTPStatusError) as e:
        client.volumes.create(slug("f"), "ord", "64MB", from_snapshot="no-such-snapshot")
    assert e.value.status_code == 404
    with pytest.raises(HTTPStatusError) as e:
        client.volumes.create(slug("b"), "ord", "1GB", from_snapshot="builtin:windows-11")
    assert e.value.status_code == 400 and "builtin:" in e.value.message


@pytest.fixture(scope="module")
def bootable(airlock):
    """A bootable volume of airlock's image (`from: builtin:debian-13`),
    shared by the boot tests; deleted afterwards."""
    c = DenoDeploy()
    v = c.volumes.create(slug("boot"), "ord", "1GB", from_snapshot="builtin:debian-13")
    yield v
    try:
        c.volumes.delete(v["id"])
    except HTTPStatusError:
        pass


def test_a_bootable_volume_is_a_persistent_root(client, bootable):
    assert bootable["is_bootable"] is True and bootable["base_snapshot"] is None
    assert bootable["capacity"] == 1000 * MB
    with client.sandbox.create(root=bootable["slug"]) as sb:
        code, out, err = run(sb, "sh", "-c", "python3 -c 'print(6*7)'; df -B1 --output=size / | tail -1")
        assert code == 0, err
        lines = out.split()
        assert lines[0] == "42"
        assert 900 * MB < int(lines[1]) <= 1000 * MB, out
        sb.fs.write_text_file("/root/installed.txt", "persisted in the root")
        code, _, err = run(sb, "sh", "-c", "echo 'print(\"tool\")' > /usr/local/bin/tool.py && sync")
        assert code == 0, err
    # The next boot sees everything the last one wrote, anywhere in /.
    with client.sandbox.create(root=bootable["id"]) as sb:
        assert sb.fs.read_text_file("/root/installed.txt") == "persisted in the root"
        code, out, _ = run(sb, "python3", "/usr/local/bin/tool.py")
        assert out.strip() == "tool"
        # One sandbox at a time on a read-write root.
        with pytest.raises(Exception) as e:
            with client.sandbox.create(root=bootable["id"]):
                pass
        assert "409" in str(e.value), e.value


def test_booting_from_a_snapshot_is_shared_and_throwaway(client, bootable):
    with client.sandbox.create(root=bootable["id"]) as sb:
        sb.fs.write_text_file("/etc/prepared", "by the first boot")
    snap = client.volumes.snapshot(bootable["id"], slug=slug("env"))
    try:
        assert snap["is_bootable"] is True
        with client.sandbox.create(root=snap["slug"]) as a, client.sandbox.create(
            root=snap["id"]
        ) as b:
            for sb in (a, b):
                assert sb.fs.read_text_file("/etc/prepared") == "by the first boot"
            a.fs.write_text_file("/etc/prepared", "changed in a")
            assert b.fs.read_text_file("/etc/prepared") == "by the first boot"
            # The snapshot cannot go while sandboxes boot from it.
            with pytest.raises(HTTPStatusError) as e:
                client.snapshots.delete(snap["id"])
            assert e.value.status_code == 409
        # Writes were the sandbox's own: the snapshot is unchanged.
        with client.sandbox.create(root=snap["id"]) as sb:
            assert sb.fs.read_text_file("/etc/prepared") == "by the first boot"
    finally:
        client.snapshots.delete(snap["id"])


def test_roots_that_cannot_boot_are_refused(client, volume):
    with pytest.raises(Exception) as e:
        with client.sandbox.create(root=volume["id"]):
            pass
    assert "400" in str(e.value), e.value
    # Nor a snapshot of a data volume: it holds no system to boot.
    snap = client.volumes.snapshot(volume["id"], slug=slug("data"))
    try:
        with pytest.raises(Exception) as e:
            with client.sandbox.create(root=snap["id"]):
                pass
        assert "400" in str(e.value), e.value
    finally:
        client.snapshots.delete(snap["id"])
    with pytest.raises(Exception) as e:
        with client.sandbox.create(root="no-such-root"):
            pass
    assert "404" in str(e.value), e.value
