//! Vulnerability management (VULN-1…3): security.txt, the disclosure policy, report
//! intake and triage with CVSS scoring and policy deadlines.

pub mod cvss;
pub mod intake;
pub mod security_txt;
pub mod triage;
