//! The privacy pages: the public policy with the data inventory (`/privacy`), the
//! inventory alone (`/privacy/data`), the history of versions with a diff for each,
//! the owner's acceptance page, and the administrators' publishing form (PRIV-1,
//! DATA-1, PRIV-3). Policy HTML comes only from `privacy::markdown`, which escapes
//! everything first.

use super::AppState;
use super::console::{Ctx, redirect};
use super::error::WebError;
use super::pages::{self, Chrome};
use crate::accounts::Actor;
use crate::privacy::{self, Change, REQUIRED_SECTIONS, diff, inventory, markdown};
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "privacy.html")]
pub struct PolicyPage {
    pub c: Chrome,
    pub version: Option<i64>,
    pub published: String,
    pub policy_html: String,
    pub inventory: inventory::Inventory,
}

#[derive(Template)]
#[template(path = "privacy_data.html")]
pub struct DataPage {
    pub c: Chrome,
    pub inventory: inventory::Inventory,
}

pub struct VersionRow {
    pub version: i64,
    pub published: String,
    pub substantive: bool,
    pub summary: String,
}

#[derive(Template)]
#[template(path = "privacy_history.html")]
pub struct HistoryPage {
    pub c: Chrome,
    pub versions: Vec<VersionRow>,
}

#[derive(Template)]
#[template(path = "privacy_version.html")]
pub struct VersionPage {
    pub c: Chrome,
    pub version: i64,
    pub previous: i64,
    pub published: String,
    pub substantive: bool,
    pub summary: String,
    /// (css class, mark, text) per line.
    pub diff: Vec<(&'static str, char, String)>,
    pub policy_html: String,
}

#[derive(Template)]
#[template(path = "privacy_accept.html")]
pub struct AcceptPage {
    pub c: Chrome,
    pub version: i64,
    pub summary: String,
    pub policy_html: String,
}

#[derive(Template)]
#[template(path = "privacy_publish.html")]
pub struct PublishPage {
    pub c: Chrome,
    pub problems: Vec<String>,
    pub required: Vec<&'static str>,
    pub body: String,
    pub summary: String,
    /// (version, published, by, kind, accepted by).
    pub versions: Vec<(i64, String, String, &'static str, i64)>,
}

/// `GET /privacy`: the current policy and the data inventory, without sign-in.
pub async fn policy(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let current = state.db.current_policy().await?;
    pages::render(PolicyPage {
        c: ctx.chrome(&state, "Privacy policy"),
        version: current.as_ref().map(|p| p.version),
        published: current
            .as_ref()
            .map_or_else(String::new, |p| pages::fmt_time(p.published_at)),
        policy_html: current
            .as_ref()
            .map_or_else(String::new, |p| markdown::to_html(&p.body)),
        inventory: inventory::build(&state.db, &state.config.retention).await?,
    })
}

/// `GET /privacy/data`: the data inventory alone.
pub async fn data(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    pages::render(DataPage {
        c: ctx.chrome(&state, "What data is stored"),
        inventory: inventory::build(&state.db, &state.config.retention).await?,
    })
}

/// `GET /privacy/history`: every version, newest first.
pub async fn history(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let versions = state
        .db
        .policies()
        .await?
        .into_iter()
        .map(|p| VersionRow {
            version: p.version,
            published: pages::fmt_time(p.published_at),
            substantive: p.substantive,
            summary: p.summary,
        })
        .collect();
    pages::render(HistoryPage {
        c: ctx.chrome(&state, "Privacy policy history"),
        versions,
    })
}

/// `GET /privacy/versions/{n}`: one version, and what changed from the one before.
pub async fn version(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(n): Path<String>,
) -> Result<Response, WebError> {
    let n: i64 = n.parse().map_err(|_| WebError::NotFound)?;
    let policy = state.db.policy(n).await?.ok_or(WebError::NotFound)?;
    let diff = match state.db.policy(n - 1).await? {
        Some(before) => diff::lines(&before.body, &policy.body)
            .into_iter()
            .map(|l| (l.class(), l.mark(), l.text().to_owned()))
            .collect(),
        None => Vec::new(),
    };
    pages::render(VersionPage {
        c: ctx.chrome(&state, &format!("Privacy policy, version {n}")),
        version: n,
        previous: n - 1,
        published: pages::fmt_time(policy.published_at),
        substantive: policy.substantive,
        summary: policy.summary,
        diff,
        policy_html: markdown::to_html(&policy.body),
    })
}

/// `GET /privacy/accept`: the changed policy for an owner who must accept it.
pub async fn accept_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let me = ctx.me()?;
    if state.db.must_accept_policy(&me.user).await?.is_none() {
        return Ok(redirect("/"));
    }
    let Some(current) = state.db.current_policy().await? else {
        return Ok(redirect("/"));
    };
    // The summary of the substantive change that asks for acceptance.
    let summary = match state.db.policy_version_to_accept().await? {
        Some(v) => state.db.policy(v).await?.map(|p| p.summary),
        None => None,
    }
    .unwrap_or_default();
    pages::render(AcceptPage {
        c: ctx.chrome(&state, "Please review our privacy policy"),
        version: current.version,
        summary,
        policy_html: markdown::to_html(&current.body),
    })
}

#[derive(Deserialize)]
pub struct AcceptForm {
    version: String,
}

/// `POST /privacy/accept`: record the acceptance (version, time) and go on.
pub async fn accept_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<AcceptForm>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let version: i64 = form
        .version
        .parse()
        .map_err(|_| WebError::BadRequest("No policy version was given.".into()))?;
    match privacy::accept(&state.db, &Actor::user(&me.user, ctx.ip), &me.user, version).await {
        Ok(()) => Ok(redirect("/")),
        Err(crate::error::Error::Conflict(m)) => Err(WebError::Conflict(m)),
        Err(e) => Err(e.into()),
    }
}

async fn publish_page(
    state: &AppState,
    c: Chrome,
    problems: Vec<String>,
    body: String,
    summary: String,
) -> Result<Response, WebError> {
    let mut versions = Vec::new();
    for p in state.db.policies().await? {
        versions.push((
            p.version,
            pages::fmt_time(p.published_at),
            p.published_by,
            if p.substantive {
                "substantive"
            } else {
                "minor"
            },
            state.db.acceptance_count(p.version).await?,
        ));
    }
    pages::render(PublishPage {
        c,
        problems,
        required: REQUIRED_SECTIONS.iter().map(|s| s.name).collect(),
        body,
        summary,
        versions,
    })
}

/// `GET /privacy/publish` (administrators): the form, prefilled with the current text.
pub async fn publish_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let body = state
        .db
        .current_policy()
        .await?
        .map(|p| p.body)
        .unwrap_or_default();
    let c = ctx.chrome(&state, "Publish the privacy policy");
    publish_page(&state, c, Vec::new(), body, String::new()).await
}

#[derive(Deserialize)]
pub struct PublishForm {
    body: String,
    #[serde(default)]
    summary: String,
    change: String,
}

/// `POST /privacy/publish` (administrators).
pub async fn publish_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<PublishForm>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let change = match form.change.as_str() {
        "substantive" => Change::Substantive,
        "minor" => Change::Minor,
        _ => return Err(WebError::BadRequest("Choose substantive or minor.".into())),
    };
    let body = form.body.replace("\r\n", "\n");
    if let Err(problems) = privacy::check_policy(&body) {
        // Audited by `publish` too; checked here first to show every problem in the form.
        let _ = privacy::publish(
            &state.db,
            &Actor::user(&me.user, ctx.ip),
            &body,
            change,
            &form.summary,
            &state.config.public_url,
        )
        .await;
        let c = ctx.chrome(&state, "Publish the privacy policy");
        return publish_page(&state, c, problems.0, body, form.summary).await;
    }
    let published = privacy::publish(
        &state.db,
        &Actor::user(&me.user, ctx.ip),
        &body,
        change,
        &form.summary,
        &state.config.public_url,
    )
    .await?;
    let c = ctx
        .chrome(&state, "Publish the privacy policy")
        .notice(format!(
            "Version {} published.{}",
            published.version,
            if change == Change::Substantive {
                format!(
                    " {} owners were e-mailed and will be asked to accept it.",
                    published.notified
                )
            } else {
                " Owners are not asked to accept a minor change.".into()
            }
        ));
    publish_page(&state, c, Vec::new(), body, String::new()).await
}

#[derive(Deserialize)]
pub struct MarketingForm {
    marketing: String,
    /// `privacy` when the switch was on the owner privacy page (return there).
    #[serde(default)]
    back: String,
}

/// `POST /account/marketing`: give or withdraw marketing consent with one button
/// either way (PRIV-2: withdrawing is as easy as giving).
pub async fn set_marketing(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<MarketingForm>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let granted = match form.marketing.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(WebError::BadRequest("Choose on or off.".into())),
    };
    privacy::set_consent(
        &state.db,
        &Actor::user(&me.user, ctx.ip),
        &me.user,
        privacy::Purpose::Marketing,
        granted,
    )
    .await?;
    Ok(redirect(if form.back == "privacy" {
        "/account/privacy"
    } else {
        "/account#privacy"
    }))
}
