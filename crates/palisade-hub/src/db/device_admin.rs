//! Device administration on top of `devices`: validated product models, owner
//! claiming by pairing code, per-owner listing, and the claim-code CSV handed to the
//! factory.

use super::devices::{ClaimCode, Device, FieldKind, FieldSpec, ProductModel, Sensing, SensingSpec};
use super::{Db, optional};
use crate::error::{Error, Result};
use crate::ids::{DeviceId, UserId};
use palisade_crypto::token;
use sqlx::Row;

/// Most telemetry fields a product model may declare.
pub const MAX_FIELDS: usize = 64;
/// Longest product name, hardware revision, unit and purpose (characters).
const MAX_NAME_CHARS: usize = 100;
const MAX_UNIT_CHARS: usize = 32;
const MAX_PURPOSE_CHARS: usize = 500;
/// Most devices one owner listing returns.
pub const MAX_OWNED_DEVICES: i64 = 1000;

/// Why a product model was refused; `Display` lists every problem for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidProduct(pub Vec<String>);

/// A telemetry field name: `[a-z][a-z0-9_]{0,31}`.
pub fn valid_field_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn plain_text(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Parse a field given as `name:type:unit:purpose` (the unit may be empty; the purpose
/// may contain colons). Checked further by [`validate_product`].
pub fn parse_field_spec(spec: &str) -> std::result::Result<FieldSpec, String> {
    let mut parts = spec.splitn(4, ':');
    let (Some(name), Some(kind), Some(unit), Some(purpose)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "field {spec:?}: write it as name:type:unit:purpose, e.g. temperature:number:celsius:room temperature shown to the owner"
        ));
    };
    let kind = match kind.trim() {
        "number" => FieldKind::Number,
        "integer" => FieldKind::Integer,
        "boolean" => FieldKind::Boolean,
        "string" => FieldKind::String,
        other => {
            return Err(format!(
                "field {name:?}: type {other:?} is not one of number, integer, boolean, string"
            ));
        }
    };
    Ok(FieldSpec {
        name: name.trim().to_owned(),
        kind,
        unit: unit.trim().to_owned(),
        purpose: purpose.trim().to_owned(),
        personal: false,
        retention_days: None,
        optional: false,
    })
}

/// Check a product model before it is stored: names, declared fields (DATA-1: every
/// field says what it is and why it is collected), and bounds (INPUT-1).
pub fn validate_product(model: &ProductModel) -> std::result::Result<(), InvalidProduct> {
    let mut problems = Vec::new();
    for (what, value) in [
        ("name", &model.name),
        ("hardware revision", &model.hardware_revision),
    ] {
        if value.trim().is_empty() || value.chars().count() > MAX_NAME_CHARS || !plain_text(value) {
            problems.push(format!(
                "the {what} must have 1 to {MAX_NAME_CHARS} characters (no control characters)"
            ));
        }
    }
    if model.fields.len() > MAX_FIELDS {
        problems.push(format!(
            "{} fields declared; at most {MAX_FIELDS} are allowed",
            model.fields.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for field in &model.fields {
        let shown: String = field.name.chars().take(40).collect();
        if !valid_field_name(&field.name) {
            problems.push(format!(
                "field {shown:?}: a field name has 1 to 32 characters: lower-case letters, digits and '_', starting with a letter"
            ));
        }
        if !seen.insert(field.name.as_str()) {
            problems.push(format!("field {shown:?} is declared twice"));
        }
        if field.unit.chars().count() > MAX_UNIT_CHARS || !plain_text(&field.unit) {
            problems.push(format!(
                "field {shown:?}: the unit has at most {MAX_UNIT_CHARS} characters"
            ));
        }
        if field.purpose.trim().is_empty() {
            problems.push(format!(
                "field {shown:?}: say why it is collected (purpose), for the owner"
            ));
        } else if field.purpose.chars().count() > MAX_PURPOSE_CHARS || !plain_text(&field.purpose) {
            problems.push(format!(
                "field {shown:?}: the purpose has at most {MAX_PURPOSE_CHARS} characters"
            ));
        }
    }
    for field in &model.fields {
        if field
            .retention_days
            .is_some_and(|d| !(1..=3650).contains(&d))
        {
            problems.push(format!(
                "field {:?}: retention_days must be between 1 and 3650",
                field.name.chars().take(40).collect::<String>()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidProduct(problems))
    }
}

/// A product declaration file: the telemetry fields and the sensing capabilities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDeclaration {
    pub fields: Vec<FieldSpec>,
    #[serde(default)]
    pub sensing: Vec<SensingSpec>,
}

/// Parse a declaration file: a JSON array of fields, or an object
/// `{"fields": [...], "sensing": [{"capability", "purpose"}]}`. Unknown keys and
/// unknown sensing capabilities are refused (PRIV-4).
pub fn parse_declaration(text: &str) -> std::result::Result<ProductDeclaration, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value.is_array() {
        let fields = serde_json::from_value(value).map_err(|e| e.to_string())?;
        return Ok(ProductDeclaration {
            fields,
            sensing: Vec::new(),
        });
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Parse a sensing capability given as `capability:purpose`.
pub fn parse_sensing_spec(spec: &str) -> std::result::Result<SensingSpec, String> {
    let (name, purpose) = spec.split_once(':').unwrap_or((spec, ""));
    let capability = Sensing::parse(name.trim()).ok_or_else(|| {
        let known: Vec<&str> = Sensing::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "sensing capability {:?} is unknown; known: {}",
            name.trim().chars().take(40).collect::<String>(),
            known.join(", ")
        )
    })?;
    Ok(SensingSpec {
        capability,
        purpose: purpose.trim().to_owned(),
    })
}

/// Check declared sensing capabilities: each once, each with a purpose (PRIV-4).
pub fn validate_sensing(sensing: &[SensingSpec]) -> std::result::Result<(), InvalidProduct> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in sensing {
        let name = s.capability.as_str();
        if !seen.insert(name) {
            problems.push(format!("sensing capability {name} is declared twice"));
        }
        if s.purpose.trim().is_empty() {
            problems.push(format!(
                "sensing capability {name}: say why the device has it (purpose), for the owner"
            ));
        } else if s.purpose.chars().count() > MAX_PURPOSE_CHARS || !plain_text(&s.purpose) {
            problems.push(format!(
                "sensing capability {name}: the purpose has at most {MAX_PURPOSE_CHARS} characters"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidProduct(problems))
    }
}

/// The claim codes as the CSV file the factory loads onto devices and prints on
/// labels: `claim_code,pairing_code,expires_at` (RFC 3339, UTC). The codes are base32
/// with dashes, so no field needs quoting.
pub fn claim_codes_csv(codes: &[ClaimCode]) -> String {
    let mut out = String::from("claim_code,pairing_code,expires_at\n");
    for code in codes {
        let expires = time::OffsetDateTime::from_unix_timestamp(code.expires_at)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| code.expires_at.to_string());
        out.push_str(&format!("{},{},{}\n", code.claim, code.pairing, expires));
    }
    out
}

/// What happened when an owner entered a pairing code.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// The device is now the caller's.
    Claimed(Device),
    /// The caller already owns it (claiming again changes nothing).
    AlreadyYours(Device),
    /// Someone else owns it (who is never said).
    OwnedByAnother,
    /// The code belongs to a device that has not enrolled yet.
    NotEnrolledYet,
    /// No device or claim code has this pairing code.
    Unknown,
}

impl Db {
    /// Validate and store a new product model.
    pub async fn create_product(&self, model: &ProductModel) -> Result<()> {
        validate_product(model).map_err(|e| Error::Conflict(e.to_string()))?;
        self.insert_product(model).await
    }

    /// Bind the device with this pairing code to `owner` if it has no owner yet. One
    /// statement decides, so two owners racing for a device cannot both win.
    pub async fn claim_device(&self, pairing_code: &str, owner: &UserId) -> Result<ClaimOutcome> {
        let hash = token::digest(&token::normalize_code(pairing_code));
        let won = sqlx::query(
            "UPDATE devices SET owner_id = $1, owned_since_ms = $2 WHERE pairing_code_hash = $3 AND owner_id IS NULL RETURNING id",
        )
        .bind(owner.as_str())
        .bind(crate::telemetry::now_ms())
        .bind(&hash)
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = won {
            let id = DeviceId::from_db(row.try_get("id")?);
            return Ok(match self.device(&id).await? {
                Some(device) => ClaimOutcome::Claimed(device),
                None => ClaimOutcome::Unknown,
            });
        }
        let existing = optional(
            sqlx::query("SELECT id, owner_id FROM devices WHERE pairing_code_hash = $1")
                .bind(&hash)
                .fetch_one(self.pool())
                .await,
        )?;
        if let Some(row) = existing {
            let id = DeviceId::from_db(row.try_get("id")?);
            let current: Option<String> = row.try_get("owner_id")?;
            if current.as_deref() == Some(owner.as_str())
                && let Some(device) = self.device(&id).await?
            {
                return Ok(ClaimOutcome::AlreadyYours(device));
            }
            return Ok(ClaimOutcome::OwnedByAnother);
        }
        let waiting = optional(
            sqlx::query(
                "SELECT product_id FROM claim_codes WHERE pairing_code_hash = $1 AND used_at IS NULL",
            )
            .bind(&hash)
            .fetch_one(self.pool())
            .await,
        )?;
        Ok(if waiting.is_some() {
            ClaimOutcome::NotEnrolledYet
        } else {
            ClaimOutcome::Unknown
        })
    }

    /// The devices `owner` owns, oldest first (at most [`MAX_OWNED_DEVICES`]).
    pub async fn devices_owned_by(&self, owner: &UserId) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT id FROM devices WHERE owner_id = $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(owner.as_str())
        .bind(MAX_OWNED_DEVICES)
        .fetch_all(self.pool())
        .await?;
        let mut devices = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(device) = self.device(&DeviceId::from_db(row.try_get("id")?)).await? {
                devices.push(device);
            }
        }
        Ok(devices)
    }
}

/// The version a device reports running (SUP-3).
impl Db {
    pub async fn set_firmware_version(&self, id: &DeviceId, version: &str) -> Result<()> {
        sqlx::query("UPDATE devices SET firmware_version = $1 WHERE id = $2")
            .bind(version)
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ProductId;

    fn model(fields: Vec<FieldSpec>) -> ProductModel {
        ProductModel {
            id: ProductId::parse("cam-v2").expect("id"),
            name: "Camera".into(),
            hardware_revision: "B".into(),
            fields,
            created_at: 0,
        }
    }

    #[test]
    fn data1_field_specs_parse_and_are_validated() {
        let f = parse_field_spec("temperature:number:celsius:room temperature: shown to the owner")
            .expect("spec");
        assert_eq!(f.name, "temperature");
        assert_eq!(f.kind, FieldKind::Number);
        assert_eq!(f.purpose, "room temperature: shown to the owner");
        let f = parse_field_spec("door_open:boolean::door state").expect("empty unit");
        assert_eq!(f.unit, "");
        assert!(parse_field_spec("x:float:u:p").is_err());
        assert!(parse_field_spec("x:number").is_err());

        assert!(validate_product(&model(vec![f.clone()])).is_ok());
        let mut bad = f.clone();
        bad.purpose = " ".into();
        assert!(
            validate_product(&model(vec![bad])).is_err(),
            "purpose required"
        );
        let mut bad = f.clone();
        bad.name = "Door".into();
        assert!(validate_product(&model(vec![bad])).is_err());
        assert!(
            validate_product(&model(vec![f.clone(), f.clone()])).is_err(),
            "no duplicates"
        );
        let many: Vec<FieldSpec> = (0..=MAX_FIELDS)
            .map(|i| FieldSpec {
                name: format!("f{i}"),
                ..f.clone()
            })
            .collect();
        assert!(validate_product(&model(many)).is_err());
        assert!(valid_field_name("a"));
        assert!(valid_field_name(&format!("a{}", "b".repeat(31))));
        assert!(!valid_field_name(&format!("a{}", "b".repeat(32))));
        assert!(!valid_field_name("1a"));
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_code() {
        let csv = claim_codes_csv(&[ClaimCode {
            claim: "AAAA-BBBB".into(),
            pairing: "CCCC-DDDD".into(),
            expires_at: 0,
        }]);
        assert_eq!(
            csv,
            "claim_code,pairing_code,expires_at\nAAAA-BBBB,CCCC-DDDD,1970-01-01T00:00:00Z\n"
        );
    }
}
