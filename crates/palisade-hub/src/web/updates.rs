//! Releases over HTTPS (issue 4): the per-model TUF repository (`/tuf/{model}/…`,
//! public: TUF metadata carries its own integrity; see docs/security-model.md), the
//! staff API the offline `palisade release` tool talks to (the hub's online public
//! keys, root upload and rotation, image upload streamed to disk, targets and
//! releases), the release list, and the public support-period page (SUP-1).

use super::AppState;
use super::access::Principal;
use super::console::Ctx;
use super::error::WebError;
use super::middleware::ClientAddr;
use super::pages::{self, Chrome};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::releases::{NewRelease, Release};
use crate::ids::ProductId;
use crate::updates::repo::{self, RepoError};
use crate::updates::{self, tuf};
use askama::Template;
use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

impl From<RepoError> for WebError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Refused(why) => WebError::Conflict(why),
            RepoError::Hub(e) => WebError::Internal(e),
        }
    }
}

async fn product(state: &AppState, model: &str) -> Result<ProductId, WebError> {
    let id = ProductId::parse(model).map_err(|_| WebError::NotFound)?;
    state.db.product(&id).await?.ok_or(WebError::NotFound)?;
    Ok(id)
}

/// Stream a file from disk in 64 KiB chunks (never buffered whole).
async fn stream_file(
    path: &std::path::Path,
    content_type: &'static str,
) -> Result<Response, WebError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(WebError::NotFound),
        Err(e) => return Err(WebError::Internal(crate::error::Error::io(path, e))),
    };
    let length = file
        .metadata()
        .await
        .map_err(|e| WebError::Internal(crate::error::Error::io(path, e)))?
        .len();
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /tuf/{model}/metadata/{file}`.
pub async fn metadata(
    State(state): State<AppState>,
    Path((model, file)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let model = ProductId::parse(&model).map_err(|_| WebError::NotFound)?;
    let path = state
        .updates
        .metadata_path(&model, &file)
        .ok_or(WebError::NotFound)?;
    stream_file(&path, "application/json").await
}

/// `GET /tuf/{model}/targets/{name}`: only targets the current targets metadata lists.
pub async fn target(
    State(state): State<AppState>,
    Path((model, name)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let model = ProductId::parse(&model).map_err(|_| WebError::NotFound)?;
    let listed = state
        .updates
        .targets(&model)?
        .is_some_and(|t| t.signed.targets.keys().any(|n| n.raw() == name));
    if !listed {
        return Err(WebError::NotFound);
    }
    let path = state
        .updates
        .target_path(&model, &name)
        .ok_or(WebError::NotFound)?;
    stream_file(&path, "application/octet-stream").await
}

/// `GET /api/v1/products/{model}/tuf/keys`: the PUBLIC snapshot and timestamp keys
/// an offline root must list.
pub async fn online_keys(
    State(state): State<AppState>,
    _: Principal,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, WebError> {
    product(&state, &model).await?;
    Ok(Json(state.updates.online_keys()))
}

/// `POST /api/v1/products/{model}/tuf/root`: a first root, or a rotation signed by the
/// current root's threshold (admins only: the root decides who may sign releases).
pub async fn upload_root(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let model = product(&state, &model).await?;
    let outcome = state.updates.install_root(&model, &body).await;
    audited_install(&state, &p, ip, &model, "tuf.root", outcome).await
}

/// `POST /api/v1/products/{model}/tuf/targets`: targets metadata signed offline (the
/// empty first one from `release init-repo`, or a re-signing before expiry).
pub async fn upload_targets(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let model = product(&state, &model).await?;
    let outcome = state
        .updates
        .install_targets(&model, &body)
        .await
        .map(|t| t.signed.version.get());
    audited_install(&state, &p, ip, &model, "tuf.targets", outcome).await
}

/// Audit an offline-signed metadata upload (accepted with its version, or refused with
/// the reason) and answer `{"version": N}` or 409.
async fn audited_install(
    state: &AppState,
    p: &Principal,
    ip: std::net::IpAddr,
    model: &ProductId,
    action: &str,
    outcome: Result<u64, RepoError>,
) -> Result<Response, WebError> {
    let (result, detail, answer) = match outcome {
        Ok(version) => (
            Outcome::Success,
            format!("{} version {version}", action.trim_start_matches("tuf.")),
            Ok(Json(serde_json::json!({ "version": version })).into_response()),
        ),
        Err(RepoError::Refused(why)) => {
            (Outcome::Denied, why.clone(), Err(WebError::Conflict(why)))
        }
        Err(e) => return Err(e.into()),
    };
    let actor = Actor::user(&p.user, ip);
    accounts::audit(&state.db, &actor, action, model.as_str(), result, &detail).await?;
    answer
}

/// `PUT /api/v1/products/{model}/targets/{name}`: an image, streamed to a temporary
/// file (bounded by `max_image_bytes`), then placed under its name. It is served only
/// once targets metadata signed offline lists it with this length and hash.
pub async fn upload_image(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path((model, name)): Path<(String, String)>,
    body: Body,
) -> Result<Response, WebError> {
    let model = product(&state, &model).await?;
    if !repo::valid_target_name(&name) {
        return Err(WebError::BadRequest("Target name not valid.".into()));
    }
    let max = state.config.limits.max_image_bytes;
    let upload = state.updates.upload_path(&model)?;
    let written = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&upload)
            .await
            .map_err(|e| WebError::Internal(crate::error::Error::io(&upload, e)))?;
        let mut stream = body.into_data_stream();
        let mut total: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                if super::middleware::is_stalled(&*e.into_inner()) {
                    WebError::Timeout
                } else {
                    WebError::BadRequest("The upload was interrupted.".into())
                }
            })?;
            total += chunk.len() as u64;
            if total > max {
                return Err(WebError::BadRequest(format!(
                    "The image is larger than {max} bytes."
                )));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| WebError::Internal(crate::error::Error::io(&upload, e)))?;
        }
        file.sync_all()
            .await
            .map_err(|e| WebError::Internal(crate::error::Error::io(&upload, e)))?;
        Ok(total)
    }
    .await;
    let total = match written {
        Ok(t) => t,
        Err(e) => {
            let _ = tokio::fs::remove_file(&upload).await;
            return Err(e);
        }
    };
    state.updates.place_target(&model, &upload, &name).await?;
    accounts::audit(
        &state.db,
        &Actor::user(&p.user, ip),
        "release.image.upload",
        model.as_str(),
        Outcome::Success,
        &format!("{name} ({total} bytes)"),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"target": name, "length": total})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    version: String,
    #[serde(default)]
    security: bool,
    #[serde(default)]
    notes: String,
    /// The new targets metadata, signed offline, listing `MODEL-VERSION.img`.
    targets: serde_json::Value,
}

/// `POST /api/v1/products/{model}/releases`: publish a release whose image was
/// uploaded: the version must be newer than every release of the model, the signed
/// targets must list its target with custom `version` (and `security`), and pass the
/// repository's checks. Then the release is stored; a rollout offers it to devices.
pub async fn publish(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let model = product(&state, &model).await?;
    if body.len() > repo::MAX_METADATA_BYTES + 16 * 1024 {
        return Err(WebError::BadRequest(
            "The request body is too large.".into(),
        ));
    }
    let request: PublishRequest = serde_json::from_slice(&body).map_err(|_| {
        WebError::BadRequest("The request body is not the JSON object this route takes.".into())
    })?;
    let version = tuf::Version::parse(&request.version).ok_or_else(|| {
        WebError::BadRequest("The version must be MAJOR.MINOR.PATCH (digits only).".into())
    })?;
    if request.notes.chars().count() > updates::MAX_NOTES_CHARS {
        return Err(WebError::BadRequest(
            "The release notes are too long.".into(),
        ));
    }
    let actor = Actor::user(&p.user, ip);
    if let Some(newest) = state.db.newest_release(&model).await?
        && tuf::Version::parse(&newest.version).is_some_and(|n| version <= n)
    {
        let why = format!(
            "version {version} is not newer than the published {}",
            newest.version
        );
        accounts::audit(
            &state.db,
            &actor,
            "release.publish",
            model.as_str(),
            Outcome::Denied,
            &why,
        )
        .await?;
        return Err(WebError::Conflict(why));
    }
    let name = tuf::target_name(model.as_str(), &version);
    let targets_bytes = serde_json::to_vec(&request.targets)
        .map_err(|_| WebError::BadRequest("targets is not JSON.".into()))?;
    let parsed: tough::schema::Signed<tough::schema::Targets> =
        tuf::parse(&targets_bytes).map_err(WebError::BadRequest)?;
    let Some(entry) = parsed
        .signed
        .targets
        .iter()
        .find(|(n, _)| n.raw() == name)
        .map(|(_, t)| t.clone())
    else {
        return Err(WebError::Conflict(format!(
            "the targets metadata does not list {name}"
        )));
    };
    let custom_version = entry.custom.get("version").and_then(|v| v.as_str());
    let custom_security = entry
        .custom
        .get("security")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if custom_version != Some(version.to_string().as_str()) || custom_security != request.security {
        return Err(WebError::Conflict(format!(
            "the signed entry for {name} must carry custom version {version} and security {}",
            request.security
        )));
    }
    if let Err(e) = state.updates.install_targets(&model, &targets_bytes).await {
        if let RepoError::Refused(why) = &e {
            accounts::audit(
                &state.db,
                &actor,
                "release.publish",
                model.as_str(),
                Outcome::Denied,
                why,
            )
            .await?;
        }
        return Err(e.into());
    }
    let sha256 = tuf::hex(entry.hashes.sha256.as_ref());
    let release = state
        .db
        .insert_release(&NewRelease {
            product: &model,
            version: (version.0, version.1, version.2),
            target: &name,
            length: i64::try_from(entry.length).unwrap_or(i64::MAX),
            sha256: &sha256,
            security: request.security,
            notes: &request.notes,
            created_by: p.user.username.as_str(),
        })
        .await
        .map_err(|e| match e {
            crate::error::Error::Conflict(why) => WebError::Conflict(why),
            e => WebError::Internal(e),
        })?;
    accounts::audit(
        &state.db,
        &actor,
        "release.publish",
        model.as_str(),
        Outcome::Success,
        &format!(
            "{version} ({name}, sha256 {sha256}{})",
            if request.security { ", security" } else { "" }
        ),
    )
    .await?;
    // Devices get it only through a rollout (docs/updates.md).
    tracing::info!(product = %model, %version, "release published");
    Ok((StatusCode::CREATED, Json(release)).into_response())
}

/// `GET /api/v1/releases`: every release, newest first.
pub async fn list(
    State(state): State<AppState>,
    _: Principal,
) -> Result<Json<Vec<Release>>, WebError> {
    Ok(Json(state.db.releases().await?))
}

pub struct ReleaseRow {
    pub product: String,
    pub version: String,
    pub target: String,
    pub length: i64,
    pub sha256: String,
    pub security: bool,
    pub published: String,
    pub created_by: String,
    pub notes: String,
}

#[derive(Template)]
#[template(path = "releases.html")]
pub struct ReleasesPage {
    pub c: Chrome,
    pub releases: Vec<ReleaseRow>,
}

/// `GET /releases`: the console's release list (staff).
pub async fn page(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let releases = state
        .db
        .releases()
        .await?
        .into_iter()
        .map(|r| ReleaseRow {
            published: pages::fmt_time(r.created_at),
            product: r.product,
            version: r.version,
            target: r.target,
            length: r.length,
            sha256: r.sha256,
            security: r.security,
            created_by: r.created_by,
            notes: r.notes,
        })
        .collect();
    let mut chrome = ctx.chrome(&state, "Releases");
    if let Some(expiry) = crate::updates::expiry::banner(&state.updates)? {
        chrome = chrome.notice(expiry);
    }
    pages::render(ReleasesPage {
        c: chrome,
        releases,
    })
}

#[derive(Template)]
#[template(path = "support.html")]
pub struct SupportPage {
    pub c: Chrome,
    /// (model, name, end date or empty).
    pub rows: Vec<(String, String, String)>,
}

/// `GET /support`: every product model with the date until which it receives
/// security updates; no sign-in, no personal data (SUP-1).
pub async fn support(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let periods = state.db.support_periods().await?;
    let rows = state
        .db
        .products()
        .await?
        .into_iter()
        .map(|p| {
            let until = periods
                .iter()
                .find(|s| s.product == p.id.as_str())
                .map(|s| s.security_updates_until.clone())
                .unwrap_or_default();
            (p.id.as_str().to_owned(), p.name, until)
        })
        .collect();
    pages::render(SupportPage {
        c: ctx.chrome(&state, "Security support periods"),
        rows,
    })
}
