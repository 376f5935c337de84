"""The Deno runtime methods (spawnDeno, denoHttpWait, spawnDenoRepl,
denoReplEval, denoReplCall, denoReplClose) through the official PY SDK.

Known PY SDK traits these tests live with (PROTOCOL.md §3.6, §6.1): dict keys
in results are snake-cased, and every application error is a plain
`Exception("Application Error: {...}")` carrying the error object.
"""

from __future__ import annotations

import asyncio
import time

import pytest

SERVE = (
    "Deno.serve({ port: 8123, onListen() { console.log('listening') } },"
    " () => new Response('hi'));"
)


def test_run_code_and_entrypoint_with_args(client):
    with client.sandbox.create() as sb:
        p = sb.deno.run(
            code="const n: number = 40; console.log(n + 2, Deno.args.join(','))",
            script_args=["a", "b"],
            stdout="piped",
            stderr="piped",
        )
        assert p.stdout.read() == b"42 a,b\n"
        assert p.wait()["success"] is True

        sb.fs.write_text_file(
            "/tmp/main.js", "console.log('args:', JSON.stringify(Deno.args)); Deno.exit(3)"
        )
        p = sb.deno.run(entrypoint="/tmp/main.js", script_args=["x y", "z"], stdout="piped")
        assert p.stdout.read() == b'args: ["x y","z"]\n'
        status = p.wait()
        assert (status["success"], status["code"]) == (False, 3)

        # The PY SDK's extra `args` become script arguments too.
        p = sb.deno.run(code="console.log(Deno.args)", extension="js", args=["q"], stdout="piped")
        assert p.stdout.read() == b'[ "q" ]\n'
        p.wait()


def test_run_rejects_bad_params_clearly(client):
    with client.sandbox.create() as sb:
        with pytest.raises(Exception, match="extension must be one of js, cjs"):
            sb.deno.run(code="1", extension="py")
        with pytest.raises(Exception, match="not both"):
            sb.deno.run(code="1", entrypoint="/tmp/x.ts")
        with pytest.raises(Exception, match='missing "entrypoint"'):
            sb.deno.run()


def test_http_ready_true_for_a_server_false_for_an_exit(client):
    with client.sandbox.create() as sb:
        p = sb.deno.run(code=SERVE, stdout="piped")
        started = time.monotonic()
        assert p.wait_http_ready() is True
        assert time.monotonic() - started < 30
        assert p.stdout.readline() == b"listening\n"
        # Really listening: a client inside the sandbox gets the answer.
        out = sb.spawn("curl", args=["-s", "http://127.0.0.1:8123/"], stdout="piped")
        assert out.stdout.read() == b"hi"
        out.wait()

        q = sb.deno.run(code="console.log('bye')", stdout="piped")
        assert q.wait_http_ready() is False
        assert q.wait()["success"] is True


def test_eval_and_repl_state(client):
    with client.sandbox.create() as sb:
        assert sb.deno.eval("1+1") == 2
        repl = sb.deno.repl(stdout="piped")
        assert repl.eval("let x = 10") is None
        assert repl.eval("x * 2") == 20
        repl.eval("const greeting = 'hi'; function add(a, b) { return a + b }")
        assert repl.eval("`${greeting} ${add(x, 1)}`") == "hi 11"
        assert repl.eval("await new Promise(r => setTimeout(() => r([1, {a: null}]), 10))") == [
            1,
            {"a": None},
        ]
        # let may be redeclared in REPL mode, as in Deno's own REPL.
        repl.eval("let x = 5")
        assert repl.eval("x") == 5
        assert repl.call("add", [2, 3]) == 5
        assert repl.call("(a, b) => a * b", [6, 7]) == 42
        assert repl.call("async function (s) { return s.toUpperCase() }", ["ok"]) == "OK"
        # User output goes to the REPL's stdout, not into the results.
        assert repl.eval("console.log('printed'); 7") == 7
        assert repl.stdout.readline() == b"printed\n"
        repl.close()
        # Closing again is harmless.
        repl.close()


def test_repl_errors_carry_the_js_error(client):
    with client.sandbox.create() as sb:
        repl = sb.deno.repl()
        with pytest.raises(Exception, match="SyntaxError") as e:
            repl.eval("1 +")
        assert "Unexpected end of input" in str(e.value)
        with pytest.raises(Exception, match="TypeError: bad"):
            repl.eval("throw new TypeError('bad')")
        with pytest.raises(Exception, match="ReferenceError: nope is not defined"):
            repl.call("nope", [])
        with pytest.raises(Exception, match="Uncaught 42"):
            repl.eval("throw 42")
        # The REPL survives its errors.
        assert repl.eval("'still here'") == "still here"
        repl.close()
        with pytest.raises(Exception, match="is closed"):
            repl.eval("1")


async def test_repl_killed_mid_eval_fails_promptly(aclient):
    async with aclient.sandbox.create() as sb:
        repl = await sb.deno.repl()
        assert await repl.eval("1") == 1
        pending = asyncio.create_task(repl.eval("await new Promise(() => {})"))
        await asyncio.sleep(0.3)
        assert not pending.done()
        started = time.monotonic()
        await repl.kill()
        with pytest.raises(Exception, match="killed by SIGTERM|exited"):
            await asyncio.wait_for(pending, 10)
        assert time.monotonic() - started < 5
        with pytest.raises(Exception, match="REPL"):
            await repl.eval("1")
        await repl.close()


async def test_concurrent_evals_on_one_repl(aclient):
    async with aclient.sandbox.create() as sb:
        repl = await sb.deno.repl()
        slow = asyncio.create_task(
            repl.eval("await new Promise(r => setTimeout(() => r('slow'), 300))")
        )
        await asyncio.sleep(0.05)
        assert await repl.eval("'fast'") == "fast"
        assert not slow.done()
        assert await slow == "slow"
        await repl.close()


def test_fetch_by_pid_with_an_https_url_speaks_plain_http_to_the_process(client):
    # With a pid the URL gives only path, query and Host: the process serves
    # plain HTTP, so https:// must not make the daemon start a TLS handshake.
    with client.sandbox.create() as sb:
        p = sb.deno.run(
            code="Deno.serve({ port: 8126, onListen() {} }, (r) => { const u = new URL(r.url);"
            " return new Response('ok', { headers: { 'x-seen': u.pathname + u.search + ' '"
            " + r.headers.get('host') } }); })",
            stdout="null",
        )
        assert p.wait_http_ready() is True
        r = p.fetch("https://app.example/abc?x=1")
        assert r.status_code == 200
        # The Python SDK's response exposes no body; the server echoes what
        # it saw in a header.
        assert [v for k, v in r.headers if k == "x-seen"] == ["/abc?x=1 app.example"]


def test_fetch_by_pid_reaches_the_deno_server(client):
    with client.sandbox.create() as sb:
        p = sb.deno.run(
            code="Deno.serve({ port: 8125, onListen() {} }, (r) => new Response(new URL(r.url).pathname))",
            stdout="null",
        )
        assert p.wait_http_ready() is True
        r = p.fetch("http://ignored.example/abc")
        assert r.status_code == 200
