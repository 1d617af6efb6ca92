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
    run_step("cargo test", &mut test)?;
    if pg.is_none() {
        eprintln!("\nWARNING: PostgreSQL tests were SKIPPED (QLAUD_TEST_DATABASE_URL not set).");
    }
    Ok(())
}
