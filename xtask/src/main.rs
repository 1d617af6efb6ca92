//! `cargo xtask`: keeps the spec and the SDKs in step with the API trait, and
//! runs the whole test suite.
//!
//! - `generate`: writes `openapi/qlaud.json` from the trait and the
//!   progenitor client in `sdk-rust/src/generated.rs` from the spec.
//! - `check`: fails, naming the file, when either is stale.
//! - `test`: the one command CI runs (spec check, fmt, clippy, every test).

mod pgvector;
mod python;
mod stubs;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

const SPEC: &str = "openapi/qlaud.json";
const RUST_SDK: &str = "sdk-rust/src/generated.rs";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("generate") => generate(),
        Some("check") => check(),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("soak") => soak(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 generate   rewrite openapi/ and the generated SDK code\n  \
                 check      fail if openapi/ or the generated SDK code is stale\n  \
                 test       the full suite: check, fmt, clippy, all tests (SQLite and, with\n             \
                 QLAUD_TEST_DATABASE_URL, PostgreSQL)\n  \
                 bench      qlaud vs direct to the mock upstream (release build); --search:\n             \
                 embedding throughput, the model's memory, search latency and recall\n             \
                 at 10k and 100k turns on SQLite and PostgreSQL with pgvector\n  \
                 soak       mixed traffic for --minutes N (default 30), RSS, open files and\n             \
                 p99 every minute (release build; --debug for a quick check)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}

/// Builds release binaries and runs the benchmark; extra arguments go to it
/// (`--seconds`, `--rate`, `--concurrency`, `--runs`, `--database-url`,
/// `--processes`, `--embed-model-dir`). `--search` runs the search
/// benchmark instead.
fn bench(args: &[String]) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "--search") {
        return bench_search(&args[1..]);
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--release", "-p", "qlaud-server", "--bin", "qlaud", "-p", "qlaud-tests"])
        .args(["--bin", "mock-upstream", "--bin", "bench"])
        .current_dir(&root)
        .status()?;
    anyhow::ensure!(status.success(), "release build failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    let status = std::process::Command::new(target.join("bench"))
        .arg("--qlaud")
        .arg(target.join("qlaud"))
        .arg("--mock")
        .arg(target.join("mock-upstream"))
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "the benchmark failed");
    Ok(())
}

/// Builds release binaries and runs the search benchmark on SQLite and on a
/// PostgreSQL with pgvector (`QLAUD_TEST_PGVECTOR_URL`, else one started
/// as `cargo xtask test` starts it); extra arguments go to it (`--sizes`,
/// `--queries`, `--turns`). The model comes from `QLAUD_EMBED_MODEL_DIR`
/// or the tests' cache under the target directory.
fn bench_search(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--release", "-p", "qlaud-server", "--bin", "qlaud", "-p", "qlaud-tests"])
        .args(["--bin", "bench-search"])
        .current_dir(&root)
        .status()?;
    anyhow::ensure!(status.success(), "release build failed");
    let target_root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = target_root.join("release");
    let model = std::env::var_os("QLAUD_EMBED_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| target_root.join("embed-model"));
    anyhow::ensure!(
        model.join("model.safetensors").is_file(),
        "no embedding model in {} (run the search tests once, or set QLAUD_EMBED_MODEL_DIR)",
        model.display()
    );
    let mut _server = None;
    let pgvector = match std::env::var("QLAUD_TEST_PGVECTOR_URL").ok().filter(|v| !v.is_empty()) {
        Some(url) => Some(url),
        None => match pgvector::start(&target_root) {
            Ok(server) => {
                let url = server.url.clone();
                _server = Some(server);
                Some(url)
            }
            Err(e) => {
                eprintln!("no PostgreSQL with pgvector ({e:#}): SQLite only");
                None
            }
        },
    };
    let mut cmd = std::process::Command::new(target.join("bench-search"));
    cmd.arg("--qlaud").arg(target.join("qlaud")).arg("--model-dir").arg(&model);
    if let Some(url) = pgvector {
        cmd.arg("--pgvector-url").arg(url);
    }
    let status = cmd.args(args).status()?;
    anyhow::ensure!(status.success(), "the search benchmark failed");
    Ok(())
}

/// Builds the binaries (release unless `--debug`) and runs the soak; other
/// arguments go to it (`--minutes`, `--rate`, `--database-url`).
fn soak(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let debug = args.iter().any(|a| a == "--debug");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--debug").collect();
    let mut build = std::process::Command::new(&cargo);
    build.arg("build");
    if !debug {
        build.arg("--release");
    }
    let status = build
        .args(["-p", "qlaud-server", "--bin", "qlaud", "-p", "qlaud-tests"])
        .args(["--bin", "mock-upstream", "--bin", "soak"])
        .current_dir(&root)
        .status()?;
    anyhow::ensure!(status.success(), "build failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(if debug { "debug" } else { "release" });
    let status = std::process::Command::new(target.join("soak"))
        .arg("--qlaud")
        .arg(target.join("qlaud"))
        .arg("--mock")
        .arg(target.join("mock-upstream"))
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "the soak failed");
    Ok(())
}

/// Every generated file with the contents it should have.
fn expected_files() -> anyhow::Result<Vec<(&'static str, String)>> {
    let spec = qlaud_api::openapi_document();
    let spec_text = serde_json::to_string_pretty(&spec)? + "\n";
    let sdk = rust_sdk(&spec)?;
    let mut files = vec![(SPEC, spec_text), (RUST_SDK, sdk)];
    files.extend(python::expected_files(&workspace_root(), &spec)?);
    Ok(files)
}

/// The spec without the media operations, whose multipart and binary
/// bodies progenitor cannot generate: the SDK hand-writes them
/// (`sdk-rust/src/media.rs`).
fn without_media(spec: &serde_json::Value) -> serde_json::Value {
    let mut spec = spec.clone();
    if let Some(paths) = spec["paths"].as_object_mut() {
        for item in paths.values_mut() {
            if let Some(ops) = item.as_object_mut() {
                ops.retain(|_, op| {
                    !op["operationId"]
                        .as_str()
                        .is_some_and(|id| qlaud_api::MEDIA_OPERATIONS.contains(&id))
                });
            }
        }
        paths.retain(|_, item| item.as_object().is_some_and(|o| !o.is_empty()));
    }
    spec
}

fn rust_sdk(spec: &serde_json::Value) -> anyhow::Result<String> {
    let spec: openapiv3::OpenAPI =
        serde_json::from_value(without_media(spec)).context("the spec is not OpenAPI 3.0")?;
    let mut settings = progenitor::GenerationSettings::default();
    settings
        .with_interface(progenitor::InterfaceStyle::Builder)
        .with_tag(progenitor::TagStyle::Merged)
        .with_derive("PartialEq")
        // The hand-written `ClientHooks` impl in sdk-rust/src/retry.rs reads
        // its retry policy from here.
        .with_inner_type(
            "crate::retry::RetryPolicy".parse::<proc_macro2::TokenStream>().expect("a Rust path"),
        );
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator.generate_tokens(&spec).context("progenitor failed")?;
    let file: syn::File = syn::parse2(tokens).context("progenitor emitted invalid Rust")?;
    Ok(format!(
        "// @generated by `cargo xtask generate` from {SPEC} with progenitor.\n\
         // Do not edit by hand: change the API trait and regenerate.\n\n{}",
        prettyplease::unparse(&file)
    ))
}

fn generate() -> anyhow::Result<()> {
    let root = workspace_root();
    for (path, contents) in expected_files()? {
        let full = root.join(path);
        let old = std::fs::read_to_string(&full).unwrap_or_default();
        if old != contents {
            std::fs::write(&full, contents).with_context(|| format!("writing {path}"))?;
            println!("wrote {path}");
        } else {
            println!("{path} is up to date");
        }
    }
    Ok(())
}

/// The generated files under `root` that differ from what the code says.
fn stale_files(root: &Path) -> anyhow::Result<Vec<&'static str>> {
    let mut stale = Vec::new();
    for (path, contents) in expected_files()? {
        let old = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        if old != contents {
            stale.push(path);
        }
    }
    Ok(stale)
}

fn check() -> anyhow::Result<()> {
    let root = workspace_root();
    let stale = stale_files(&root)?;
    for path in &stale {
        eprintln!("stale: {path} does not match the API trait");
    }
    anyhow::ensure!(
        stale.is_empty(),
        "generated files are stale; run `cargo xtask generate` and commit the result"
    );
    let drift = stub_drift(&root)?;
    for problem in &drift {
        eprintln!("stub drift: {problem}");
    }
    anyhow::ensure!(
        drift.is_empty(),
        "{} does not match the pyo3 bindings in sdk-python/src; edit {} to match",
        python::STUB,
        python::STUB_HEAD
    );
    println!("spec, generated SDK code and Python stubs are up to date");
    Ok(())
}

/// Differences between the committed stub and the Rust bindings.
fn stub_drift(root: &Path) -> anyhow::Result<Vec<String>> {
    let stub = std::fs::read_to_string(root.join(python::STUB)).unwrap_or_default();
    stubs::drift(&root.join("sdk-python/src"), &stub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_a_stale_spec() {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in expected_files().unwrap() {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, contents).unwrap();
        }
        assert!(stale_files(dir.path()).unwrap().is_empty());
        // A spec edited by hand (or left behind by an API change) is caught.
        let spec = dir.path().join(SPEC);
        let edited = std::fs::read_to_string(&spec).unwrap().replace("Mint a key.", "Mint a key!");
        std::fs::write(&spec, edited).unwrap();
        assert_eq!(stale_files(dir.path()).unwrap(), vec![SPEC]);
        std::fs::write(dir.path().join(RUST_SDK), "// edited").unwrap();
        assert_eq!(stale_files(dir.path()).unwrap(), vec![SPEC, RUST_SDK]);
    }

    #[test]
    fn committed_files_are_current() {
        assert_eq!(stale_files(&workspace_root()).unwrap(), Vec::<&str>::new());
        assert_eq!(stub_drift(&workspace_root()).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn stub_drift_names_a_method_without_a_stub() {
        let root = workspace_root();
        let stub = std::fs::read_to_string(root.join(python::STUB)).unwrap();
        let src = root.join("sdk-python/src");
        // Rename the sync `get_key` in the stub: the binding still has it.
        let edited = stub.replacen("    def get_key(", "    def get_a_key(", 1);
        let problems = stubs::drift(&src, &edited).unwrap();
        assert!(problems.iter().any(|p| p.contains("Client.get_key")), "{problems:?}");
    }

    #[test]
    fn every_media_operation_has_a_hand_written_rust_method() {
        let src = std::fs::read_to_string(workspace_root().join("sdk-rust/src/media.rs")).unwrap();
        for id in qlaud_api::MEDIA_OPERATIONS {
            assert!(src.contains(&format!("pub async fn {id}(")), "sdk-rust lacks {id}");
        }
    }

    #[test]
    fn every_operation_has_a_python_method_on_both_clients() {
        let root = workspace_root();
        let stub = std::fs::read_to_string(root.join(python::STUB)).unwrap();
        for id in python::operation_ids(&qlaud_api::openapi_document()) {
            for class in ["class Client", "class AsyncClient"] {
                let body = &stub[stub.find(class).unwrap()..];
                let body = &body[..body[1..].find("\nclass ").map_or(body.len(), |i| i + 1)];
                assert!(body.contains(&format!("def {id}(")), "{class} lacks {id}");
            }
        }
    }
}
