//! The default image's package managers (pip, venv, npm, npx) work in a
//! real sandbox. Offline: sandboxes have no egress by default, and the
//! packages installed are made by each test inside its sandbox. Needs root
//! and the default image.

mod common;

use common::*;

#[test]
fn package_managers_are_installed() {
    let o = sh(
        &[],
        "set -e; npm --version; npx --version; python3 -m pip --version; pip --version; \
         python3 -m venv /tmp/venv; /tmp/venv/bin/python -m pip --version; echo tools-ok",
    );
    assert_ran(&o, "tools-ok");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    // npm from its registry tarball (pinned 10.x), not Debian's 9.2.
    assert!(
        lines[0].starts_with("10."),
        "npm --version\n{}",
        describe(&o)
    );
    assert_eq!(lines[1], lines[0], "npx is npm's\n{}", describe(&o));
    assert!(lines[2].starts_with("pip "), "{}", describe(&o));
    assert!(lines[3].starts_with("pip "), "{}", describe(&o));
    assert!(
        lines[4].starts_with("pip ") && lines[4].contains("/tmp/venv/"),
        "the venv has its own pip\n{}",
        describe(&o)
    );
}

/// A source package with a pyproject.toml, written inside the sandbox.
const PY_PACKAGE: &str = r#"
mkdir -p /tmp/pyprobe/airlock_probe
cat > /tmp/pyprobe/pyproject.toml <<'EOF'
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "airlock-probe"
version = "1.2.3"
EOF
echo 'def hello(): return "py-probe-ok"' > /tmp/pyprobe/airlock_probe/__init__.py
"#;

#[test]
fn pip_installs_into_the_system_python() {
    // No venv and no --break-system-packages: what agents type. The image's
    // setuptools builds it (no index to fetch a build backend from).
    let script = format!(
        "set -e\n{PY_PACKAGE}\n\
         pip install --no-index --no-build-isolation /tmp/pyprobe\n\
         cd /home/app\n\
         python3 -c 'import airlock_probe; print(airlock_probe.hello()); print(airlock_probe.__file__)'\n"
    );
    let o = sh(&[], &script);
    assert_ran(&o, "py-probe-ok");
    // Debian's pip puts system-wide installs under /usr/local, away from
    // dpkg's files.
    assert!(
        stdout(&o).contains("/usr/local/lib/python3"),
        "{}",
        describe(&o)
    );
    // Not the "externally-managed-environment" refusal, nor pip's warning
    // about running as root (commands in a sandbox are its root).
    let err = stderr(&o);
    assert!(
        !err.contains("externally-managed") && !err.contains("as the 'root' user"),
        "{}",
        describe(&o)
    );
}

#[test]
fn pip_installs_a_wheel_into_a_venv() {
    // A fresh venv has pip and setuptools but not `wheel`, so the wheel is
    // built by the system's pip (which has it) and installed from a
    // directory, as with a wheelhouse.
    let script = format!(
        "set -e\n{PY_PACKAGE}\n\
         pip wheel --no-index --no-build-isolation --wheel-dir /tmp/wheels /tmp/pyprobe\n\
         python3 -m venv /tmp/venv\n\
         /tmp/venv/bin/pip install --no-index --find-links /tmp/wheels airlock-probe\n\
         /tmp/venv/bin/python -c 'import airlock_probe; print(airlock_probe.hello())'\n\
         python3 -c 'import airlock_probe' 2>/dev/null || echo not-in-system\n"
    );
    let o = sh(&[], &script);
    assert_ran(&o, "py-probe-ok");
    assert!(stdout(&o).contains("not-in-system"), "{}", describe(&o));
}

/// An npm package with a module and a bin, packed inside the sandbox.
const JS_PACKAGE: &str = r#"
mkdir -p /tmp/jsprobe && cd /tmp/jsprobe
cat > package.json <<'EOF'
{"name": "airlock-js-probe", "version": "4.5.6", "main": "index.js",
 "bin": {"airlock-js-probe": "cli.js"}}
EOF
echo 'module.exports = () => "js-probe-ok";' > index.js
printf '#!/usr/bin/env node\nconsole.log("cli-probe-ok")\n' > cli.js
npm pack --silent
"#;

#[test]
fn npm_installs_and_npx_runs_a_local_package() {
    let script = format!(
        "set -e\n{JS_PACKAGE}\n\
         mkdir -p /tmp/app && cd /tmp/app\n\
         npm install --offline --no-audit --no-fund /tmp/jsprobe/airlock-js-probe-4.5.6.tgz\n\
         node -e 'console.log(require(\"airlock-js-probe\")())'\n\
         npx --offline airlock-js-probe\n"
    );
    let o = sh(&[], &script);
    assert_ran(&o, "js-probe-ok");
    assert!(stdout(&o).contains("cli-probe-ok"), "{}", describe(&o));
}

#[test]
fn npm_global_installs_go_to_usr_local() {
    let script = format!(
        "set -e\n{JS_PACKAGE}\n\
         cd /tmp\n\
         npm install -g --offline --no-audit --no-fund /tmp/jsprobe/airlock-js-probe-4.5.6.tgz\n\
         command -v airlock-js-probe\n\
         airlock-js-probe\n\
         npm root -g\n"
    );
    let o = sh(&[], &script);
    assert_ran(&o, "cli-probe-ok");
    let out = stdout(&o);
    assert!(
        out.contains("/usr/local/bin/airlock-js-probe")
            && out.contains("/usr/local/lib/node_modules"),
        "{}",
        describe(&o)
    );
}
