//! Staged rollouts over HTTPS (issue 4, UPD-5, UPD-6; staff only, audited): the API
//! under `/api/v1/rollouts` and the console pages `/rollouts`, `/rollouts/{id}` with
//! a server-rendered SVG picture of each stage's progress (no JavaScript: CSP).

use super::AppState;
use super::access::Principal;
use super::console::{Ctx, redirect};
use super::error::WebError;
use super::middleware::ClientAddr;
use super::pages::{self, Chrome};
use crate::accounts::Actor;
use crate::db::rollouts::{HALTED, PAUSED, RUNNING, Rollout};
use crate::error::Error;
use crate::updates::rollouts::{self as ops, Request, StageProgress};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use serde::{Deserialize, Serialize};

/// Rollouts shown in the list.
const LIST_LIMIT: i64 = 200;

fn web(e: Error) -> WebError {
    match e {
        Error::Conflict(why) => WebError::Conflict(why),
        e => WebError::Internal(e),
    }
}

/// A rollout with its release version and per-stage progress.
#[derive(Serialize)]
pub struct View {
    #[serde(flatten)]
    pub rollout: Rollout,
    pub version: String,
    pub progress: Vec<StageProgress>,
}

async fn view(state: &AppState, rollout: Rollout) -> Result<View, WebError> {
    let version = state
        .db
        .release(&rollout.release)
        .await?
        .map(|r| r.version)
        .unwrap_or_default();
    let counts = state.db.rollout_step_counts(&rollout.id).await?;
    let progress = ops::progress(&rollout, &counts);
    Ok(View {
        rollout,
        version,
        progress,
    })
}

async fn load(state: &AppState, id: &str) -> Result<Rollout, WebError> {
    if id.len() > 64 {
        return Err(WebError::NotFound);
    }
    state.db.rollout(id).await?.ok_or(WebError::NotFound)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, WebError> {
    serde_json::from_slice(body).map_err(|_| {
        WebError::BadRequest("The request body is not the JSON object this route takes.".into())
    })
}

/// `GET /api/v1/rollouts`: the newest rollouts with their progress.
pub async fn api_list(
    State(state): State<AppState>,
    _: Principal,
) -> Result<Json<Vec<View>>, WebError> {
    let mut out = Vec::new();
    for r in state.db.rollouts(LIST_LIMIT).await? {
        out.push(view(&state, r).await?);
    }
    Ok(Json(out))
}

/// `POST /api/v1/rollouts`: `{"release", "stages"?, "soak_minutes"?,
/// "failure_threshold_pct"?, "devices"?}`.
pub async fn api_create(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    body: Bytes,
) -> Result<Response, WebError> {
    let request: Request = parse_json(&body)?;
    let actor = Actor::user(&p.user, ip);
    let r = ops::create(&state.db, &state.fleet, &actor, &request)
        .await
        .map_err(web)?;
    Ok((StatusCode::CREATED, Json(view(&state, r).await?)).into_response())
}

/// `GET /api/v1/rollouts/{id}`.
pub async fn api_show(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<View>, WebError> {
    let r = load(&state, &id).await?;
    Ok(Json(view(&state, r).await?))
}

#[derive(Clone, Copy)]
enum Action {
    Pause,
    Resume,
    Abort,
}

async fn act(
    state: &AppState,
    actor: &Actor,
    id: &str,
    action: Action,
) -> Result<Rollout, WebError> {
    let r = load(state, id).await?;
    match action {
        Action::Pause => ops::pause(&state.db, actor, &r.id).await,
        Action::Resume => ops::resume(&state.db, &state.fleet, actor, &r.id).await,
        Action::Abort => ops::abort(&state.db, actor, &r.id).await,
    }
    .map_err(web)
}

async fn api_act(
    state: AppState,
    p: Principal,
    ip: std::net::IpAddr,
    id: String,
    action: Action,
) -> Result<Json<View>, WebError> {
    let r = act(&state, &Actor::user(&p.user, ip), &id, action).await?;
    Ok(Json(view(&state, r).await?))
}

/// `POST /api/v1/rollouts/{id}/pause`.
pub async fn api_pause(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<View>, WebError> {
    api_act(state, p, ip, id, Action::Pause).await
}

/// `POST /api/v1/rollouts/{id}/resume`.
pub async fn api_resume(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<View>, WebError> {
    api_act(state, p, ip, id, Action::Resume).await
}

/// `POST /api/v1/rollouts/{id}/abort`.
pub async fn api_abort(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<View>, WebError> {
    api_act(state, p, ip, id, Action::Abort).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The NEWER release to put on the devices that installed this rollout's release.
    release: String,
    #[serde(default)]
    stages: Option<Vec<u32>>,
}

#[derive(Serialize)]
pub struct RollbackAnswer {
    rolled_back: View,
    replacement: Option<View>,
}

/// `POST /api/v1/rollouts/{id}/rollback`: `{"release": NEWER_RELEASE_ID}`.
pub async fn api_rollback(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<RollbackAnswer>, WebError> {
    let request: RollbackRequest = parse_json(&body)?;
    let r = load(&state, &id).await?;
    let actor = Actor::user(&p.user, ip);
    let replacement = ops::roll_back(
        &state.db,
        &state.fleet,
        &actor,
        &r.id,
        &request.release,
        request.stages,
    )
    .await
    .map_err(web)?;
    let rolled_back = view(&state, load(&state, &id).await?).await?;
    let replacement = match replacement {
        Some(r) => Some(view(&state, r).await?),
        None => None,
    };
    Ok(Json(RollbackAnswer {
        rolled_back,
        replacement,
    }))
}

// --- console -----------------------------------------------------------------

pub struct Row {
    pub id: String,
    pub product: String,
    pub version: String,
    pub state: String,
    pub stage: String,
    pub created: String,
    pub created_by: String,
    pub halted_reason: String,
}

fn row(v: &View) -> Row {
    let r = &v.rollout;
    Row {
        id: r.id.clone(),
        product: r.product.clone(),
        version: v.version.clone(),
        state: r.state.clone(),
        stage: format!(
            "{} of {} ({} %)",
            r.stage + 1,
            r.stages.len(),
            r.stages.get(r.stage).copied().unwrap_or(0)
        ),
        created: pages::fmt_time(r.created_at),
        created_by: r.created_by.clone(),
        halted_reason: r.halted_reason.clone(),
    }
}

#[derive(Template)]
#[template(path = "rollouts.html")]
struct ListPage {
    c: Chrome,
    rollouts: Vec<Row>,
    /// (release id, "model version").
    releases: Vec<(String, String)>,
    form: CreateForm,
}

#[derive(Deserialize, Default, Clone)]
pub struct CreateForm {
    #[serde(default)]
    release: String,
    #[serde(default)]
    stages: String,
    #[serde(default)]
    soak_minutes: String,
    #[serde(default)]
    failure_threshold_pct: String,
    #[serde(default)]
    devices: String,
}

async fn list_view(
    state: &AppState,
    ctx: &Ctx,
    form: CreateForm,
    error: Option<String>,
) -> Result<Response, WebError> {
    let mut rollouts = Vec::new();
    for r in state.db.rollouts(LIST_LIMIT).await? {
        rollouts.push(row(&view(state, r).await?));
    }
    let releases = state
        .db
        .releases()
        .await?
        .into_iter()
        .map(|r| (r.id, format!("{} {}", r.product, r.version)))
        .collect();
    let mut c = ctx.chrome(state, "Rollouts");
    c.error = error;
    pages::render(ListPage {
        c,
        rollouts,
        releases,
        form,
    })
}

/// `GET /rollouts`: every rollout and the form that starts one.
pub async fn page(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let form = CreateForm {
        stages: "1,10,50,100".into(),
        soak_minutes: ops::DEFAULT_SOAK_MINUTES.to_string(),
        failure_threshold_pct: ops::DEFAULT_FAILURE_THRESHOLD_PCT.to_string(),
        ..Default::default()
    };
    list_view(&state, &ctx, form, None).await
}

/// `POST /rollouts`: start a rollout from the form.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CreateForm>,
) -> Result<Response, WebError> {
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    let request = (|| -> Result<Request, String> {
        Ok(Request {
            release: form.release.trim().to_owned(),
            stages: ops::parse_stages(&form.stages).map_err(|e| e.to_string())?,
            soak_minutes: form
                .soak_minutes
                .trim()
                .parse()
                .map_err(|_| "The soak time is a whole number of minutes.".to_string())?,
            failure_threshold_pct: form
                .failure_threshold_pct
                .trim()
                .parse()
                .map_err(|_| "The failure threshold is a whole percent.".to_string())?,
            devices: form
                .devices
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    })();
    let outcome = match request {
        Ok(request) => ops::create(&state.db, &state.fleet, &actor, &request).await,
        Err(why) => Err(Error::Conflict(why)),
    };
    match outcome {
        Ok(r) => Ok(redirect(&format!("/rollouts/{}", r.id))),
        Err(Error::Conflict(why)) => list_view(&state, &ctx, form, Some(why)).await,
        Err(e) => Err(WebError::Internal(e)),
    }
}

/// One bar segment of the picture.
pub struct Segment {
    pub x: u32,
    pub width: u32,
    pub fill: &'static str,
    pub title: String,
}

/// One stage's row in the picture.
pub struct Bar {
    pub y: u32,
    pub text_y: u32,
    pub label: String,
    pub summary: String,
    pub current: bool,
    pub segments: Vec<Segment>,
}

const BAR_X: u32 = 150;
const BAR_WIDTH: u32 = 420;
const ROW_HEIGHT: u32 = 34;

/// The rows of the SVG progress picture: per stage a bar, as long as its share of
/// the admitted devices, split into committed, in progress, waiting and failed.
pub fn picture(rollout: &Rollout, progress: &[StageProgress]) -> Vec<Bar> {
    let most = progress
        .iter()
        .map(|s| s.admitted)
        .max()
        .unwrap_or(0)
        .max(1);
    progress
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let y = 10 + ROW_HEIGHT * i as u32;
            let mut x = BAR_X;
            let mut segments = Vec::new();
            for (count, fill, what) in [
                (s.committed, "#2e7d32", "committed"),
                (s.in_progress, "#1565c0", "downloading or installing"),
                (s.waiting, "#9e9e9e", "offered, no report yet"),
                (s.failed, "#c62828", "failed or rolled back"),
            ] {
                if count <= 0 {
                    continue;
                }
                let width = u32::try_from(count * i64::from(BAR_WIDTH) / most)
                    .unwrap_or(BAR_WIDTH)
                    .max(2);
                segments.push(Segment {
                    x,
                    width,
                    fill,
                    title: format!("{count} {what}"),
                });
                x += width;
            }
            Bar {
                y,
                text_y: y + 15,
                label: format!("Stage {} · {} %", i + 1, s.percent),
                summary: format!(
                    "{} admitted: {} committed, {} in progress, {} waiting, {} failed",
                    s.admitted, s.committed, s.in_progress, s.waiting, s.failed
                ),
                current: i == rollout.stage,
                segments,
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "rollout.html")]
struct DetailPage {
    c: Chrome,
    r: Row,
    stages: String,
    soak_minutes: i64,
    threshold: i64,
    replaces: String,
    targets: usize,
    bars: Vec<Bar>,
    height: u32,
    can_pause: bool,
    can_resume: bool,
    can_abort: bool,
    can_roll_back: bool,
    /// Newer releases of the model (roll-back candidates): (id, version).
    newer: Vec<(String, String)>,
}

async fn detail_view(
    state: &AppState,
    ctx: &Ctx,
    r: Rollout,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let targets = state.db.rollout_targets(&r.id).await?.len();
    let v = view(state, r).await?;
    let newer = state
        .db
        .releases()
        .await?
        .into_iter()
        .filter(|x| {
            x.product == v.rollout.product && crate::updates::is_older(&v.version, &x.version)
        })
        .map(|x| (x.id, x.version))
        .collect();
    let bars = picture(&v.rollout, &v.progress);
    let state_now = v.rollout.state.as_str();
    let mut c = ctx.chrome(
        state,
        &format!("Rollout of {} {}", v.rollout.product, v.version),
    );
    c.notice = notice;
    c.error = error;
    pages::render(DetailPage {
        c,
        r: row(&v),
        stages: v
            .rollout
            .stages
            .iter()
            .map(|s| format!("{s} %"))
            .collect::<Vec<_>>()
            .join(" → "),
        soak_minutes: v.rollout.soak_minutes,
        threshold: v.rollout.failure_threshold_pct,
        replaces: v.rollout.replaces.clone(),
        targets,
        height: 20 + ROW_HEIGHT * bars.len() as u32,
        bars,
        can_pause: state_now == RUNNING,
        can_resume: state_now == PAUSED || state_now == HALTED,
        can_abort: [RUNNING, PAUSED, HALTED].contains(&state_now),
        can_roll_back: [RUNNING, PAUSED, HALTED, crate::db::rollouts::COMPLETED]
            .contains(&state_now),
        newer,
    })
}

/// `GET /rollouts/{id}`: the picture, the numbers, the halted reason and the actions.
pub async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let r = load(&state, &id).await?;
    detail_view(&state, &ctx, r, None, None).await
}

async fn console_act(
    state: AppState,
    ctx: Ctx,
    id: String,
    action: Action,
) -> Result<Response, WebError> {
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    match act(&state, &actor, &id, action).await {
        Ok(r) => Ok(redirect(&format!("/rollouts/{}", r.id))),
        Err(WebError::Conflict(why)) => {
            let r = load(&state, &id).await?;
            detail_view(&state, &ctx, r, None, Some(why)).await
        }
        Err(e) => Err(e),
    }
}

/// `POST /rollouts/{id}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    console_act(state, ctx, id, Action::Pause).await
}

/// `POST /rollouts/{id}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    console_act(state, ctx, id, Action::Resume).await
}

/// `POST /rollouts/{id}/abort`.
pub async fn abort(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    console_act(state, ctx, id, Action::Abort).await
}

#[derive(Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    release: String,
}

/// `POST /rollouts/{id}/rollback`.
pub async fn rollback(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Result<Response, WebError> {
    let r = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    match ops::roll_back(
        &state.db,
        &state.fleet,
        &actor,
        &r.id,
        form.release.trim(),
        None,
    )
    .await
    {
        Ok(Some(new)) => Ok(redirect(&format!("/rollouts/{}", new.id))),
        Ok(None) => {
            let r = load(&state, &id).await?;
            let msg = "Rolled back. No device had installed the release, so no replacement rollout was needed.".to_string();
            detail_view(&state, &ctx, r, Some(msg), None).await
        }
        Err(Error::Conflict(why)) => {
            let r = load(&state, &id).await?;
            detail_view(&state, &ctx, r, None, Some(why)).await
        }
        Err(e) => Err(WebError::Internal(e)),
    }
}
