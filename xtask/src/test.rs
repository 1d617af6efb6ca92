//! `cargo xtask test`: the whole suite, the one command CI runs.

use std::process::Command;

use anyhow::Context as _;

fn run_step(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("\n==> {name}");
    let status = cmd
        .current_dir(crate::workspace_root())
        .status()
        .with_context(|| format!("starting {name}"))?;
    anyhow::ensure!(status.success(), "{name} failed ({status})");
    Ok(())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let pg = std::env::var("QLAUD_TEST_DATABASE_URL").ok().filter(|v| !v.is_empty());
    match &pg {
        Some(_) => eprintln!("==> PostgreSQL tests: on (QLAUD_TEST_DATABASE_URL is set)"),
        None if ci => anyhow::bail!(
            "CI=true but QLAUD_TEST_DATABASE_URL is not set: CI must run the PostgreSQL tests"
        ),
        None => eprintln!(
            "\n##################################################################\n\
             ## WARNING: QLAUD_TEST_DATABASE_URL is not set.                  ##\n\
             ## PostgreSQL tests are SKIPPED; only SQLite is tested.          ##\n\
             ## e.g. QLAUD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1/test ##\n\
             ##################################################################\n"
        ),
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    // The search tests' PostgreSQL half needs pgvector: a server of the
    // operator's (QLAUD_TEST_PGVECTOR_URL), or one started here.
    let mut _pgvector = None;
    let pgvector_url = match std::env::var("QLAUD_TEST_PGVECTOR_URL").ok().filter(|v| !v.is_empty())
    {
        Some(url) => Some(url),
        None => match crate::pgvector::start(&target) {
            Ok(server) => {
                eprintln!("==> PostgreSQL with pgvector for the search tests: {}", server.url);
                let url = server.url.clone();
                _pgvector = Some(server);
                Some(url)
            }
            Err(e) if ci => {
                return Err(e.context("CI=true: the search tests need a PostgreSQL with pgvector"));
            }
            Err(e) => {
                eprintln!(
                    "\n##################################################################\n\
                     ## WARNING: no PostgreSQL with pgvector could be started:         ##\n\
                     ## the postgres:: search tests test NOTHING.                      ##\n\
                     ##################################################################\n{e:#}\n"
                );
                None
            }
        },
    };

    eprintln!("\n==> spec and SDK check");
    crate::check()?;
    run_step("cargo fmt --check", Command::new(&cargo).args(["fmt", "--all", "--", "--check"]))?;
    run_step(
        "cargo clippy",
        Command::new(&cargo).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let mut test = Command::new(&cargo);
    // The Python bindings are tested from Python, against the built wheel.
    // Every failure reported, not only the first test binary's.
    test.args(["test", "--no-fail-fast", "--workspace", "--exclude", "qlaud-python"]).args(args);
    if let Some(url) = &pgvector_url {
        test.env("QLAUD_TEST_PGVECTOR_URL", url);
    }
    // One copy of the embedding model for every test server and process.
    test.env("QLAUD_EMBED_MODEL_DIR", target.join("embed-model"));
    if pg.is_none() {
        test.env_remove("QLAUD_TEST_DATABASE_URL");
        // Without a database a `postgres::` test can only return at once,
        // and libtest would count it as passed: leave those tests out by
        // name, so they are counted as not run.
        if !args.iter().any(|a| a == "--") {
            test.arg("--");
        }
        test.args(["--skip", "postgres::"]);
    }
    let (passed, failed, filtered) = run_tests(&mut test)?;
    let skipped = if pg.is_none() { filtered } else { 0 };
    println!("\ncargo: {passed} passed, {failed} failed, {skipped} skipped");
    let (py_passed, py_failed) = python_tests(&cargo)?;
    println!("\npytest: {py_passed} passed, {py_failed} failed");
    println!(
        "\nall: {} passed, {} failed, {skipped} skipped",
        passed + py_passed,
        failed + py_failed
    );
    if pg.is_none() {
        let filter = if args.is_empty() { "" } else { " or by the filter given" };
        eprintln!(
            "\nWARNING: {skipped} Rust tests were NOT RUN (left out by --skip postgres::{filter}), \
             and the Python suite ran on SQLite only: QLAUD_TEST_DATABASE_URL is not set."
        );
    }
    anyhow::ensure!(failed + py_failed == 0, "{} tests failed", failed + py_failed);
    Ok(())
}

/// Runs `cargo test`, echoing its output, and adds up its `test result:`
/// lines so the run ends on one total: passed, failed, filtered out.
fn run_tests(cmd: &mut Command) -> anyhow::Result<(u64, u64, u64)> {
    use std::io::{BufRead, BufReader};
    eprintln!("\n==> cargo test");
    let mut child = cmd
        .current_dir(crate::workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    match (n.parse::<u64>(), what) {
                        (Ok(n), "passed") => passed += n,
                        (Ok(n), "failed") => failed += n,
                        (Ok(n), "filtered") => filtered += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success() || failed > 0, "cargo test failed ({status})");
    if !status.success() && failed == 0 {
        failed = 1;
    }
    Ok((passed, failed, filtered))
}

/// The Python wheel, built by maturin into the same target directory and
/// `dev` profile as everything else (only the pyo3 crates compile again).
fn build_wheel(
    venv: &std::path::Path,
    target: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let out = target.join("wheels");
    let _ = std::fs::remove_dir_all(&out);
    run_step(
        "maturin build (the qlaud wheel)",
        Command::new(venv.join("bin/maturin"))
            .args(["build", "--quiet", "--manifest-path", "sdk-python/Cargo.toml", "--out"])
            .arg(&out),
    )?;
    let mut wheels = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"));
    wheels.next().context("maturin built no wheel")
}

/// The Python suite against the real binary (the official `openai`,
/// `anthropic` and `stripe` packages, the `qlaud` wheel, and the console in
/// Chromium through Playwright): a venv under target/ (made once, refreshed
/// when the requirements change), the two binaries and the wheel from the
/// same debug build, then pytest.
fn python_tests(cargo: &str) -> anyhow::Result<(u64, u64)> {
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join("py-venv");
    let requirements = root.join("tests/python/requirements.txt");
    let stamp = venv.join("requirements.stamp");
    let wanted = std::fs::read_to_string(&requirements)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        run_step("python venv", Command::new(&python).arg("-m").arg("venv").arg(&venv))?;
        run_step(
            "pip install (openai, anthropic, stripe, pytest, playwright, …)",
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
        )?;
        std::fs::write(&stamp, wanted)?;
    }
    let chromium = ensure_chromium()?;
    run_step(
        "build qlaud and the mock upstream",
        Command::new(cargo).args([
            "build",
            "--quiet",
            "-p",
            "qlaud-server",
            "--bin",
            "qlaud",
            "-p",
            "qlaud-tests",
            "--bin",
            "mock-upstream",
        ]),
    )?;
    let wheel = build_wheel(&venv, &target)?;
    run_step(
        "pip install the qlaud wheel",
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "--force-reinstall"])
            .arg("--no-deps")
            .arg(&wheel),
    )?;
    eprintln!("\n==> pytest tests/python");
    let out = Command::new(venv.join("bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/python"])
        .env("QLAUD_BIN", target.join("debug/qlaud"))
        .env("QLAUD_EMBED_MODEL_DIR", target.join("embed-model"))
        .env("QLAUD_MOCK_BIN", target.join("debug/mock-upstream"))
        .env("QLAUD_WHEEL", &wheel)
        .env("QLAUD_CHROMIUM", &chromium)
        .env("QLAUD_SCREENSHOT_DIR", target.join("dashboard-screens"))
        .current_dir(&root)
        .output()
        .context("running pytest")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    // pytest's last line: "N passed, M failed in …s" (either part optional).
    let last = text.lines().rev().find(|l| l.contains(" in ")).unwrap_or_default();
    let count = |what: &str| {
        last.split(',')
            .filter_map(|part| {
                let mut words = part.split_whitespace();
                let n = words.next()?.trim_start_matches('=').parse::<u64>().ok()?;
                (words.next()? == what).then_some(n)
            })
            .sum::<u64>()
    };
    let (passed, mut failed) =
        (count("passed"), count("failed") + count("error") + count("errors"));
    if !out.status.success() && failed == 0 {
        failed = 1;
    }
    anyhow::ensure!(passed + failed > 0, "pytest ran no test");
    Ok((passed, failed))
}

/// The browser the console tests drive: Debian's `chromium` (Playwright's
/// own browser download is not used). Installed with apt-get when missing
/// and running as root; otherwise the run stops and says what to install.
fn ensure_chromium() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var_os("QLAUD_CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    if path.exists() {
        return Ok(path);
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    anyhow::ensure!(
        root,
        "{} is missing: install Debian's chromium (apt-get install chromium) or set QLAUD_CHROMIUM",
        path.display()
    );
    run_step(
        "apt-get install chromium (for the console's browser tests)",
        Command::new("sh").args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
        ]),
    )?;
    anyhow::ensure!(path.exists(), "apt-get installed chromium but {} is missing", path.display());
    Ok(path)
}
