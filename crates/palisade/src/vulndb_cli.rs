//! `palisade vulndb import FILE` (OSV records into the offline database), `palisade
//! sbom` (Palisade's own components as CycloneDX, generated at build time from
//! Cargo.lock by build.rs) and `palisade bench vulnmatch` (matching time against the
//! sizes of the SBOM and of the database).

use super::{ConfigArgs, load};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use palisade_hub::accounts::Actor;
use palisade_hub::db::Db;
use palisade_hub::vuln::matching;
use palisade_hub::vuln::osv::Record;
use palisade_hub::vuln::sbom::Component;
use palisade_hub::vuln::{purl, vulndb};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Palisade's own SBOM (CycloneDX 1.5 JSON), written by build.rs from Cargo.lock.
pub const OWN_SBOM: &str = include_str!(concat!(env!("OUT_DIR"), "/own-sbom.cdx.json"));

#[derive(Subcommand)]
pub enum VulndbAction {
    /// Import OSV records: one JSON file (a record or an array), a directory of them,
    /// or an OSV per-ecosystem zip export. Re-importing updates records by id and
    /// `modified`; staff are alerted once if new records affect versions in the field
    Import {
        /// The file, directory or zip
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check Palisade's own dependencies (the SBOM `palisade sbom` prints, built from
    /// Cargo.lock) against OSV records with the hub's own matcher; exits 1 if any
    /// record affects a locked version and is not on the commented ignore list
    CheckSelf {
        /// A directory (or file, or zip) of OSV records, e.g. the RustSec export
        #[arg(long)]
        osv: PathBuf,
    },
}

/// RustSec advisories that match a locked dependency but do not affect Palisade,
/// each with the reason (VULN-4). An entry needs a reason a reviewer can check (e.g.
/// "the affected function is never called: grep shows no use of X"); upgrading the
/// crate is the first choice.
pub const IGNORED: &[(&str, &str)] = &[(
    // `rsa` has no fixed release; it comes with `pgp` (rpgp), which requires it.
    "RUSTSEC-2023-0071",
    "rsa is reached only through pgp when an operator signs security.txt with an RSA      key: the hub makes one signature per distinct security.txt content (about daily,      cached; vuln/openpgp.rs), never decrypts, and no request can make it sign, so there      is no timing oracle to sample; the docs recommend an Ed25519 key (no RSA at all)",
)];

pub async fn vulndb(action: VulndbAction) -> Result<ExitCode> {
    match action {
        VulndbAction::Import { file, config } => {
            let config = load(&config)?;
            let db = palisade_hub::open_database(&config).await?;
            let report = vulndb::import_path(&db, &config, &Actor::cli(), &file)
                .await
                .map_err(|e| match e {
                    vulndb::ImportError::Invalid(m) => anyhow::anyhow!("nothing imported: {m}"),
                    vulndb::ImportError::Hub(e) => anyhow::Error::new(e),
                })?;
            println!(
                "{}: {} files, {} records added, {} updated, {} unchanged; {} records in the database",
                file.display(),
                report.files,
                report.counts.added,
                report.counts.updated,
                report.counts.unchanged,
                db.vuln_record_count().await?
            );
            if !report.field_hits.is_empty() {
                println!(
                    "ALERT: {} findings affect versions that devices run; staff were e-mailed:",
                    report.field_hits.len()
                );
                for h in report.field_hits.iter().take(50) {
                    println!(
                        "  {} affects {} {} in {} {} ({} devices)",
                        h.record, h.component, h.component_version, h.product, h.version, h.devices
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        VulndbAction::CheckSelf { osv } => check_self(&osv),
    }
}

/// `palisade vulndb check-self --osv DIR`.
fn check_self(osv: &Path) -> Result<ExitCode> {
    let parsed = palisade_hub::vuln::sbom::parse(OWN_SBOM.as_bytes())
        .map_err(|e| anyhow::anyhow!("the built-in SBOM: {}", e.0))?;
    let (files, records) = vulndb::read_path(osv).map_err(|e| anyhow::anyhow!("{e}"))?;
    if records.is_empty() {
        bail!("{}: no OSV records: nothing was checked", osv.display());
    }
    let findings = matching::match_records(&records, &parsed.components);
    let (ignored, open): (Vec<_>, Vec<_>) = findings
        .iter()
        .partition(|f| IGNORED.iter().any(|(id, _)| *id == f.vulnerability.id));
    for f in &ignored {
        let why = IGNORED
            .iter()
            .find(|(id, _)| *id == f.vulnerability.id)
            .map_or("", |(_, why)| why);
        println!(
            "ignored {} in {} {}: {why}",
            f.vulnerability.id, f.component, f.version
        );
    }
    for f in &open {
        println!(
            "VULNERABLE {} {}: {} {} (fixed in {})",
            f.component,
            f.version,
            f.vulnerability.id,
            f.vulnerability.summary,
            f.fixed.as_deref().unwrap_or("no fixed version")
        );
    }
    println!(
        "{} components checked against {} OSV records from {} files: {} known vulnerabilities, {} ignored",
        parsed.components.len(),
        records.len(),
        files,
        open.len(),
        ignored.len()
    );
    Ok(if open.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `palisade sbom`.
pub fn print_own_sbom() -> Result<ExitCode> {
    use std::io::Write;
    // A closed pipe (`palisade sbom | head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{}", OWN_SBOM.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// Seed records for the benchmark (real OSV records, renamed per copy).
fn seeds(dir: &Path) -> Result<Vec<Record>> {
    let (_, records) = vulndb::read_path(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let records: Vec<Record> = records
        .into_iter()
        .filter(|r| !r.withdrawn && !r.affected.is_empty())
        .collect();
    if records.is_empty() {
        bail!("{}: no usable OSV records", dir.display());
    }
    Ok(records)
}

/// Copy `n` records from the seeds; copy k of seed s names package `{name}-k`, so
/// the database has about as many distinct packages as records, like a real one.
fn synthesise(seeds: &[Record], n: usize) -> Vec<Record> {
    (0..n)
        .map(|j| {
            let mut r = seeds[j % seeds.len()].clone();
            let copy = j / seeds.len();
            r.id = format!("SYN-{j:07}");
            for a in &mut r.affected {
                a.name = format!("{}-{copy}", a.name);
                a.key = purl::key(&a.ecosystem, &a.name);
            }
            r
        })
        .collect()
}

/// An SBOM of `n` components: four in five name packages in the database (at a
/// version inside the first range, or a plain 0.1.0), one in five unknown packages.
fn sbom_for(records: &[Record], n: usize) -> Vec<Component> {
    (0..n)
        .map(|i| {
            let known = i % 5 != 4;
            let r = &records[(i * 7919) % records.len()];
            let (eco, name, version) = match (known, r.affected.first()) {
                (true, Some(a)) => {
                    let v = a
                        .affects
                        .ranges
                        .first()
                        .and_then(|rg| {
                            rg.events.iter().find_map(|e| match e {
                                palisade_hub::vuln::versions::Event::Introduced(v) if v != "0" => {
                                    Some(v.clone())
                                }
                                _ => None,
                            })
                        })
                        .unwrap_or_else(|| "0.1.0".into());
                    (a.ecosystem.clone(), a.name.clone(), v)
                }
                _ => (
                    "crates.io".into(),
                    format!("unknown-package-{i}"),
                    "1.0.0".into(),
                ),
            };
            Component {
                purl: format!("pkg:cargo/{name}@{version}"),
                name: name.clone(),
                version,
                ecosystem: eco,
                package: name,
            }
        })
        .collect()
}

/// `palisade bench vulnmatch`: for each database size, import synthetic records into a
/// fresh SQLite database, then match SBOMs of each size against it.
pub async fn bench(
    seed_dir: &Path,
    work: &Path,
    components: &[usize],
    records: &[usize],
    rounds: u32,
) -> Result<()> {
    let seeds = seeds(seed_dir)?;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    println!(
        "seed: {} real OSV records from {}",
        seeds.len(),
        seed_dir.display()
    );
    println!(
        "records  components  import_s  records_per_s  match_ms(median of {rounds})  findings"
    );
    for &m in records {
        let path = work.join(format!("vulnmatch-{m}.sqlite"));
        let _ = std::fs::remove_file(&path);
        let db = Db::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
        let all = synthesise(&seeds, m);
        let started = Instant::now();
        for batch in all.chunks(1000) {
            db.upsert_vuln_records(batch).await?;
        }
        let import = started.elapsed().as_secs_f64();
        for &n in components {
            let sbom = sbom_for(&all, n);
            let mut times = Vec::new();
            let mut found = 0;
            for _ in 0..rounds {
                let t = Instant::now();
                found = matching::match_components(&db, &sbom).await?.len();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{m:>7}  {n:>10}  {import:>8.1}  {:>13.0}  {:>26.1}  {found:>8}",
                m as f64 / import,
                times[times.len() / 2]
            );
        }
        db.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    Ok(())
}
