//! `replica-host bench startup`: time to load N plugins (default 20) cold
//! (compiled) against warm (from the precompiled cache), each round with a
//! fresh engine, as the daemon does at startup.
//!
//! The N plugins are the three sample plugins, each copied with a distinct
//! custom section appended: the same code, but distinct files with distinct
//! sha256, so every one is compiled cold and has its own cache artifact.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{machine, median, sample_plugin, spread};
use crate::plugin::{CacheOutcome, ComponentCache, LoadedPlugin, PluginEngine, PluginLimits};

/// What `bench startup` runs.
#[derive(Debug, Clone)]
pub struct StartupOptions {
    /// The sample plugins' sources.
    pub plugins_dir: PathBuf,
    /// How many plugin files to load.
    pub plugins: usize,
    /// Rounds of cold and warm loads, interleaved.
    pub repeat: usize,
}

/// `bytes` with a custom section named `replica-bench` holding `tag`.
fn with_custom_section(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"replica-bench";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

fn load_all(
    files: &[PathBuf],
    cache: Option<&ComponentCache>,
) -> anyhow::Result<(f64, Vec<CacheOutcome>)> {
    let started = Instant::now();
    let engine = PluginEngine::new()?;
    let mut outcomes = Vec::new();
    for file in files {
        let plugin = LoadedPlugin::load_with_cache(&engine, file, PluginLimits::default(), cache)?;
        outcomes.push(plugin.cache_outcome());
    }
    Ok((started.elapsed().as_secs_f64() * 1e3, outcomes))
}

/// Runs the benchmark and prints its table (Markdown) on stdout.
pub fn run(options: &StartupOptions) -> anyhow::Result<()> {
    let sources = [
        sample_plugin(&options.plugins_dir, "counter")?,
        sample_plugin(&options.plugins_dir, "bank-account")?,
        sample_plugin(&options.plugins_dir, "user-profile")?,
    ];
    let work = tempfile::TempDir::new()?;
    let files = write_variants(&sources, options.plugins, work.path())?;
    let cache = ComponentCache::open(work.path().join("cache"))?;
    // Fill the cache once.
    let (_, outcomes) = load_all(&files, Some(&cache))?;
    anyhow::ensure!(outcomes.iter().all(|o| *o == CacheOutcome::Miss));

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..options.repeat {
        let (ms, outcomes) = load_all(&files, None)?;
        anyhow::ensure!(outcomes.iter().all(|o| *o == CacheOutcome::Uncached));
        cold.push(ms);
        let (ms, outcomes) = load_all(&files, Some(&cache))?;
        anyhow::ensure!(
            outcomes.iter().all(|o| *o == CacheOutcome::Hit),
            "every warm load must hit the cache"
        );
        warm.push(ms);
    }
    let ratios: Vec<f64> = cold.iter().zip(&warm).map(|(c, w)| c / w).collect();
    println!("## bench startup ({})", machine());
    println!();
    println!("| plugins | rounds | cold (compile), ms | warm (cache), ms | cold ÷ warm |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.1} ({}) | {:.1} ({}) | **{:.1}×** ({}) |",
        files.len(),
        options.repeat,
        median(&cold),
        spread(&cold, 1),
        median(&warm),
        spread(&warm, 1),
        median(&ratios),
        spread(&ratios, 1)
    );
    Ok(())
}

/// Writes `count` distinct plugin files into `dir`, cycling through `sources`.
fn write_variants(sources: &[PathBuf], count: usize, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for i in 0..count {
        let source = &sources[i % sources.len()];
        let bytes = std::fs::read(source)?;
        let path = dir.join(format!("plugin-{i:02}.wasm"));
        std::fs::write(&path, with_custom_section(&bytes, &format!("variant {i}")))?;
        files.push(path);
    }
    Ok(files)
}
