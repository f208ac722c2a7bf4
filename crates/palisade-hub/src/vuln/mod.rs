//! Vulnerability management (VULN-1…3, VULN-6): security.txt, the disclosure policy,
//! report intake and triage with CVSS scoring and policy deadlines, advisories with
//! their OSV and Atom feeds, fleet exposure and owner notices.

pub mod advisories;
pub mod cvss;
pub mod feeds;
pub mod intake;
pub mod security_txt;
pub mod triage;
pub mod version;
