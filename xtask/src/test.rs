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
    let pg = std::env::var("QLAUD_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty());
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

    eprintln!("\n==> spec and SDK check");
    crate::check()?;
    run_step(
        "cargo fmt --check",
        Command::new(&cargo).args(["fmt", "--all", "--", "--check"]),
    )?;
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
    test.args(["test", "--workspace"]).args(args);
    if pg.is_none() {
        test.env_remove("QLAUD_TEST_DATABASE_URL");
    }
    let (passed, failed) = run_tests(&mut test)?;
    println!("\ncargo: {passed} passed, {failed} failed");
    anyhow::ensure!(failed == 0, "{failed} tests failed");
    if pg.is_none() {
        eprintln!("\nWARNING: PostgreSQL tests were SKIPPED (QLAUD_TEST_DATABASE_URL not set).");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and adds up its `test result:`
/// lines so the run ends on one total.
fn run_tests(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    eprintln!("\n==> cargo test");
    let mut child = cmd
        .current_dir(crate::workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed) = (0, 0);
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
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(
        status.success() || failed > 0,
        "cargo test failed ({status})"
    );
    if !status.success() && failed == 0 {
        failed = 1;
    }
    Ok((passed, failed))
}
