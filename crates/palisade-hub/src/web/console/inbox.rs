//! The console inbox: notices addressed to the signed-in user (security notices about
//! their devices, policy changes), newest first, with a read mark.

use super::{Ctx, redirect};
use crate::web::AppState;
use crate::web::error::WebError;
use crate::web::pages::{self, fmt_time};
use askama::Template;
use axum::extract::State;
use axum::response::Response;

struct NoticeRow {
    kind: &'static str,
    subject: String,
    body: String,
    at: String,
    unread: bool,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    c: pages::Chrome,
    notices: Vec<NoticeRow>,
    unread: usize,
}

/// `GET /inbox`.
pub async fn page(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let notices: Vec<NoticeRow> = state
        .db
        .notices(&me.user.id)
        .await?
        .into_iter()
        .map(|n| NoticeRow {
            kind: n.kind.as_str(),
            subject: n.subject,
            body: n.body,
            at: fmt_time(n.created_at),
            unread: n.read_at.is_none(),
        })
        .collect();
    let unread = notices.iter().filter(|n| n.unread).count();
    pages::render(InboxPage {
        c: ctx.chrome(&state, "Inbox"),
        notices,
        unread,
    })
}

/// `POST /inbox/read`: mark every notice read.
pub async fn mark_read(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let me = ctx.me()?;
    state.db.mark_notices_read(&me.user.id).await?;
    Ok(redirect("/inbox"))
}
