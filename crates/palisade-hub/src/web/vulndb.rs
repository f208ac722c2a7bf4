//! SBOMs and known vulnerabilities over HTTP (VULN-4, VULN-5): store a product
//! version's SBOM (staff, e.g. `palisade release publish --sbom`), read it back with
//! its matches, a device's known vulnerabilities (from its model and reported firmware
//! version), the staff console page per product version, and the administrators'
//! OSV import route.

use super::AppState;
use super::access::Principal;
use super::console::Ctx;
use super::error::WebError;
use super::middleware::ClientAddr;
use super::pages::{self, fmt_time};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::now;
use crate::db::vulndb::SbomInfo;
use crate::ids::ProductId;
use crate::vuln::matching::{self, Finding};
use crate::vuln::sbom::{self, Component};
use crate::vuln::{osv, vulndb};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::{Extension, Json};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Largest OSV import body through the API (the CLI takes whole exports).
pub const MAX_IMPORT_BYTES: usize = osv::MAX_RECORD_BYTES;

/// A product version as it appears in a path: 1–64 characters of the kinds version
/// schemes use.
pub fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~:".contains(&b))
}

async fn product_version(
    state: &AppState,
    model: &str,
    version: &str,
) -> Result<ProductId, WebError> {
    let product = ProductId::parse(model).map_err(|_| WebError::NotFound)?;
    if !valid_version(version) {
        return Err(WebError::NotFound);
    }
    state
        .db
        .product(&product)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(product)
}

fn json_content(headers: &HeaderMap) -> Result<(), WebError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/json")
                || v.starts_with("application/vnd.cyclonedx+json")
                || v.starts_with("application/spdx+json")
        });
    if ok {
        Ok(())
    } else {
        Err(WebError::BadRequest(
            "Send the SBOM as JSON (Content-Type: application/json).".into(),
        ))
    }
}

#[derive(Serialize)]
pub struct SbomView {
    #[serde(flatten)]
    info: SbomInfo,
    components: Vec<Component>,
    vulnerabilities: Vec<Finding>,
}

/// `POST /api/v1/products/{model}/versions/{version}/sbom`: store (or replace) the
/// SBOM of a product version; answers with its components and known vulnerabilities.
pub async fn store(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SbomView>, WebError> {
    p.require_staff()?;
    let product = product_version(&state, &model, &version).await?;
    json_content(&headers)?;
    let actor = Actor::user(&p.user, ip);
    let target = format!("{product} {version}");
    let parsed = match sbom::parse(&body) {
        Ok(s) => s,
        Err(e) => {
            accounts::audit(
                &state.db,
                &actor,
                "sbom.store",
                &target,
                Outcome::Failure,
                &e.0,
            )
            .await?;
            return Err(WebError::BadRequest(e.0));
        }
    };
    let info = SbomInfo {
        product: product.to_string(),
        version: version.clone(),
        format: parsed.format.as_str().to_owned(),
        spec_version: parsed.spec_version.clone(),
        sha256: data_encoding::HEXLOWER.encode(&Sha256::digest(&body)),
        components: parsed.components.len() as i64,
        uploaded_by: p.user.username.to_string(),
        uploaded_at: now(),
    };
    state.db.store_sbom(&info, &parsed.components).await?;
    accounts::audit(
        &state.db,
        &actor,
        "sbom.store",
        &target,
        Outcome::Success,
        &format!(
            "{} {} with {} components, sha256 {}",
            info.format, info.spec_version, info.components, info.sha256
        ),
    )
    .await?;
    let vulnerabilities = matching::match_components(&state.db, &parsed.components).await?;
    Ok(Json(SbomView {
        info,
        components: parsed.components,
        vulnerabilities,
    }))
}

/// `GET /api/v1/products/{model}/versions/{version}/sbom`.
pub async fn show(
    State(state): State<AppState>,
    p: Principal,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<SbomView>, WebError> {
    p.require_staff()?;
    let product = product_version(&state, &model, &version).await?;
    let (info, components) = state
        .db
        .sbom(product.as_str(), &version)
        .await?
        .ok_or(WebError::NotFound)?;
    let vulnerabilities = matching::match_components(&state.db, &components).await?;
    Ok(Json(SbomView {
        info,
        components,
        vulnerabilities,
    }))
}

/// `GET /api/v1/devices/{id}/vulnerabilities`: the known vulnerabilities of the
/// software a device runs (its owner and staff; anyone else gets 404).
pub async fn device(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<matching::DeviceVulnerabilities>, WebError> {
    let device = super::devices::visible_device(&state, &p, &id).await?;
    Ok(Json(matching::for_device(&state.db, &device).await?))
}

/// `POST /api/v1/vulndb/import`: OSV records (one, or an array) as JSON (admin).
pub async fn import(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<vulndb::ImportReport>, WebError> {
    if !p.is_admin() {
        return Err(WebError::Forbidden);
    }
    json_content(&headers)?;
    let records = osv::parse_document(&body)
        .map_err(|e| WebError::BadRequest(format!("request body: {e}")))?;
    let report = vulndb::import_records(
        &state.db,
        &state.config,
        &Actor::user(&p.user, ip),
        &records,
        "api",
    )
    .await
    .map_err(|e| match e {
        vulndb::ImportError::Invalid(m) => WebError::BadRequest(m),
        vulndb::ImportError::Hub(e) => WebError::Internal(e),
    })?;
    Ok(Json(report))
}

struct FindingRow {
    id: String,
    aliases: String,
    summary: String,
    severity: String,
    component: String,
    version: String,
}

#[derive(Template)]
#[template(path = "product_vulnerabilities.html")]
struct ProductVulnerabilitiesPage {
    c: pages::Chrome,
    product: String,
    version: String,
    sbom: Option<String>,
    components: usize,
    findings: Vec<FindingRow>,
}

/// `GET /products/{model}/versions/{version}/vulnerabilities` (staff console).
pub async fn page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let product = product_version(&state, &model, &version).await?;
    let stored = state.db.sbom(product.as_str(), &version).await?;
    let (sbom, components, findings) = match &stored {
        Some((info, components)) => (
            Some(format!(
                "{} {}, {} components, uploaded by {} on {}",
                info.format,
                info.spec_version,
                info.components,
                info.uploaded_by,
                fmt_time(info.uploaded_at)
            )),
            components.len(),
            matching::match_components(&state.db, components).await?,
        ),
        None => (None, 0, Vec::new()),
    };
    pages::render(ProductVulnerabilitiesPage {
        c: ctx.chrome(
            &state,
            &format!("Known vulnerabilities: {product} {version}"),
        ),
        product: product.to_string(),
        version,
        sbom,
        components,
        findings: findings
            .into_iter()
            .map(|f| FindingRow {
                id: f.vulnerability.id,
                aliases: f.vulnerability.aliases.join(", "),
                summary: f.vulnerability.summary,
                severity: f.vulnerability.severity,
                component: f.component,
                version: f.version,
            })
            .collect(),
    })
}
