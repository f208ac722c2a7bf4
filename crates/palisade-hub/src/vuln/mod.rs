//! Vulnerability management (VULN-1…6): security.txt, the disclosure policy, report
//! intake and triage with CVSS scoring and policy deadlines, advisories with their OSV
//! and Atom feeds, fleet exposure and owner notices; (VULN-4, VULN-5) the offline OSV
//! database, SBOMs and version-range matching.

pub mod advisories;
pub mod cra;
pub mod cvss;
pub mod feeds;
pub mod intake;
pub mod matching;
pub mod openpgp;
pub mod osv;
pub mod purl;
pub mod sbom;
pub mod security_txt;
pub mod triage;
pub mod versions;
pub mod vulndb;
