//! SBOM parsing (VULN-4, VULN-5, VULN-8): CycloneDX JSON 1.4–1.6 and SPDX JSON
//! 2.2/2.3, bounded in size, nesting depth, component count and field length before
//! and while parsing; anything else is refused with a message saying what is wrong.
//! Each component's package URL is reduced to (ecosystem, name, version).

use super::purl;
use serde_json::Value;

/// Largest SBOM accepted (a 5,000-component CycloneDX file is about 2 MiB).
pub const MAX_SBOM_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of JSON arrays and objects.
pub const MAX_DEPTH: usize = 64;
/// Most components in one SBOM.
pub const MAX_COMPONENTS: usize = 50_000;
const MAX_NAME: usize = 512;
const MAX_VERSION: usize = 256;

/// Which kind of SBOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    CycloneDx,
    Spdx,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::CycloneDx => "CycloneDX",
            Format::Spdx => "SPDX",
        }
    }
}

/// One component as the SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Component {
    pub name: String,
    pub version: String,
    /// Empty if the SBOM gave none (such a component cannot be matched).
    pub purl: String,
    /// From the purl; empty without one.
    pub ecosystem: String,
    /// The package name in its ecosystem (from the purl, else the SBOM's name).
    pub package: String,
}

/// A parsed SBOM.
#[derive(Debug, Clone)]
pub struct Sbom {
    pub format: Format,
    pub spec_version: String,
    pub components: Vec<Component>,
}

/// Why an SBOM was refused (the message is for the uploader).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SbomError(pub String);

fn err(msg: impl Into<String>) -> SbomError {
    SbomError(msg.into())
}

/// Check the nesting depth without building anything (serde_json's own limit is 128
/// and would also be reached by recursion in our walk).
fn check_depth(bytes: &[u8]) -> Result<(), SbomError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(err(format!(
                        "The SBOM nests deeper than {MAX_DEPTH} levels."
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn string<'a>(v: &'a Value, field: &str) -> Result<Option<&'a str>, SbomError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("\"{field}\" must be a string."))),
    }
}

fn bounded(s: &str, max: usize, what: &str) -> Result<String, SbomError> {
    if s.len() > max {
        return Err(err(format!(
            "A component {what} is longer than {max} bytes."
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(err(format!(
            "A component {what} contains control characters."
        )));
    }
    Ok(s.to_owned())
}

fn component(name: &str, version: &str, purl_text: &str) -> Result<Component, SbomError> {
    let name = bounded(name, MAX_NAME, "name")?;
    let mut version = bounded(version, MAX_VERSION, "version")?;
    let purl_text = bounded(purl_text, purl::MAX_PURL, "package URL")?;
    let (ecosystem, package) = if purl_text.is_empty() {
        (String::new(), name.clone())
    } else {
        let p = purl::parse(&purl_text).ok_or_else(|| {
            err(format!(
                "Component {name:?} has a package URL that is not valid: {purl_text:?}."
            ))
        })?;
        if version.is_empty() {
            version = p.version.clone();
        }
        (p.ecosystem, p.name)
    };
    if name.is_empty() {
        return Err(err("A component has no name."));
    }
    Ok(Component {
        name,
        version,
        purl: purl_text,
        ecosystem,
        package,
    })
}

/// Parse an SBOM (either format), refusing what is malformed or over the bounds.
pub fn parse(bytes: &[u8]) -> Result<Sbom, SbomError> {
    if bytes.len() > MAX_SBOM_BYTES {
        return Err(err(format!(
            "The SBOM is larger than {MAX_SBOM_BYTES} bytes."
        )));
    }
    check_depth(bytes)?;
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
        err(format!(
            "The SBOM is not valid JSON (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })?;
    if !doc.is_object() {
        return Err(err("The SBOM must be a JSON object."));
    }
    if string(&doc, "bomFormat")? == Some("CycloneDX") {
        cyclonedx(&doc)
    } else if let Some(v) = string(&doc, "spdxVersion")? {
        spdx(&doc, v)
    } else {
        Err(err(
            "Not a CycloneDX (bomFormat) or SPDX (spdxVersion) JSON document.",
        ))
    }
}

fn cyclonedx(doc: &Value) -> Result<Sbom, SbomError> {
    let spec = string(doc, "specVersion")?.unwrap_or("");
    if !matches!(spec, "1.4" | "1.5" | "1.6") {
        return Err(err(format!(
            "CycloneDX specVersion {spec:?} is not supported (1.4, 1.5 or 1.6)."
        )));
    }
    let mut components = Vec::new();
    // Components nest (a component's own `components`); walk them with a stack.
    let mut stack: Vec<&Value> = Vec::new();
    match doc.get("components") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => stack.extend(items.iter().rev()),
        Some(_) => return Err(err("\"components\" must be an array.")),
    }
    while let Some(c) = stack.pop() {
        if !c.is_object() {
            return Err(err("Each component must be an object."));
        }
        if components.len() >= MAX_COMPONENTS {
            return Err(err(format!(
                "The SBOM lists more than {MAX_COMPONENTS} components."
            )));
        }
        components.push(component(
            string(c, "name")?.unwrap_or(""),
            string(c, "version")?.unwrap_or(""),
            string(c, "purl")?.unwrap_or(""),
        )?);
        match c.get("components") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => stack.extend(items.iter().rev()),
            Some(_) => return Err(err("\"components\" must be an array.")),
        }
    }
    Ok(Sbom {
        format: Format::CycloneDx,
        spec_version: spec.to_owned(),
        components,
    })
}

fn spdx(doc: &Value, version: &str) -> Result<Sbom, SbomError> {
    let spec = match version {
        "SPDX-2.2" => "2.2",
        "SPDX-2.3" => "2.3",
        other => {
            return Err(err(format!(
                "SPDX version {other:?} is not supported (SPDX-2.2 or SPDX-2.3)."
            )));
        }
    };
    let packages = match doc.get("packages") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => return Err(err("\"packages\" must be an array.")),
    };
    if packages.len() > MAX_COMPONENTS {
        return Err(err(format!(
            "The SBOM lists more than {MAX_COMPONENTS} components."
        )));
    }
    let mut components = Vec::with_capacity(packages.len());
    for p in packages {
        if !p.is_object() {
            return Err(err("Each package must be an object."));
        }
        let mut purl_text = "";
        match p.get("externalRefs") {
            None | Some(Value::Null) => {}
            Some(Value::Array(refs)) => {
                for r in refs {
                    if string(r, "referenceType")? == Some("purl") {
                        purl_text = string(r, "referenceLocator")?.unwrap_or("");
                        break;
                    }
                }
            }
            Some(_) => return Err(err("\"externalRefs\" must be an array.")),
        }
        components.push(component(
            string(p, "name")?.unwrap_or(""),
            string(p, "versionInfo")?.unwrap_or(""),
            purl_text,
        )?);
    }
    Ok(Sbom {
        format: Format::Spdx,
        spec_version: spec.to_owned(),
        components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyclonedx_nested_components() {
        let doc = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[
            {"type":"library","name":"serde","version":"1.0.1","purl":"pkg:cargo/serde@1.0.1",
             "components":[{"type":"library","name":"inner","purl":"pkg:npm/inner@2.0.0"}]}]}"#;
        let s = parse(doc).expect("parses");
        assert_eq!(s.components.len(), 2);
        assert_eq!(s.components[1].version, "2.0.0");
        assert_eq!(s.components[1].ecosystem, "npm");
    }

    #[test]
    fn refusals() {
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"bomFormat":"CycloneDX","specVersion":"1.2"}"#).is_err());
        assert!(parse(br#"{"spdxVersion":"SPDX-3.0"}"#).is_err());
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(
            parse(deep.as_bytes())
                .expect_err("refused")
                .0
                .contains("nests")
        );
    }
}
