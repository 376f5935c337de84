"""Large files through the Python SDK (issue 14 §2), checked by sha256
against `sha256sum` inside the sandbox.

The SDK sends write_file's content as a stream (bytes as one chunk, a file
object in 64 KiB chunks), so writes of any size work. It takes read_file's
result as one WebSocket message, and its `websockets` client refuses
messages over 1 MiB (closing the connection), so read_file works up to
765 KiB (base64 and the JSON-RPC envelope fill the rest); above that airlock
answers with an error that says to read the file in pieces, which the last
test does for a 4 MiB file.
"""

from __future__ import annotations

import hashlib
import io
import os

import pytest

MiB = 1 << 20
# The largest file read_file can return to this SDK: base64 (4 bytes per 3)
# of it plus airlock's 4 KiB allowance for the envelope fill 1 MiB.
PY_MAX_READ = (MiB - 4096) // 4 * 3


def sha256sum(sb, path: str) -> str:
    p = sb.spawn("sha256sum", args=[path], stdout="piped", stderr="piped")
    out = p.stdout.read()
    err = p.stderr.read()
    assert p.wait()["code"] == 0, err
    return out.decode().split()[0]


def test_write_4mib_bytes_and_64mib_file_object(client):
    with client.sandbox.create() as sb:
        data = os.urandom(4 * MiB)
        sb.fs.write_file("/root/four.bin", data)
        assert sha256sum(sb, "/root/four.bin") == hashlib.sha256(data).hexdigest()

        data = os.urandom(64 * MiB)
        sb.fs.write_file("/root/big.bin", io.BytesIO(data))
        assert sha256sum(sb, "/root/big.bin") == hashlib.sha256(data).hexdigest()


def test_read_file_up_to_the_sdk_message_cap_and_a_clear_error_above(client):
    with client.sandbox.create() as sb:
        data = os.urandom(PY_MAX_READ + 1024)
        sb.fs.write_file("/root/at.bin", data[:PY_MAX_READ])
        assert sb.fs.read_file("/root/at.bin") == data[:PY_MAX_READ]

        sb.fs.write_file("/root/over.bin", data)
        with pytest.raises(Exception) as e:
            sb.fs.read_file("/root/over.bin")
        msg = str(e.value)
        assert "Python SDK" in msg and "fs.open()" in msg, msg
        # The connection is intact.
        assert sb.fs.read_file("/root/at.bin") == data[:PY_MAX_READ]


def test_read_4mib_in_pieces_through_a_file_handle(client):
    with client.sandbox.create() as sb:
        data = os.urandom(4 * MiB)
        sb.fs.write_file("/root/four.bin", io.BytesIO(data))
        f = sb.fs.open("/root/four.bin")
        got = bytearray()
        # Reads never go past the end (the SDK's read at EOF raises).
        while len(got) < len(data):
            got += f.read(min(512 * 1024, len(data) - len(got)))
        f.close()
        assert hashlib.sha256(got).hexdigest() == sha256sum(sb, "/root/four.bin")
        assert bytes(got) == data
