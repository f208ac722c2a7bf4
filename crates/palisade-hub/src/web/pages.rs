//! Console page models (askama templates under `templates/`, escaped by default) and
//! the helpers that fill them.

use super::access::Principal;
use super::error::WebError;
use super::middleware::CsrfToken;
use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// The signed-in user, for the page header.
#[derive(Debug, Clone)]
pub struct Nav {
    pub username: String,
    pub admin: bool,
    /// Administrators and operators (see vulnerability reports).
    pub staff: bool,
    /// Unread notices in the inbox.
    pub unread: i64,
}

/// What every page has: title, product name, header, CSRF token, messages.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub product: String,
    pub nav: Option<Nav>,
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl Chrome {
    pub fn new(
        title: &str,
        product: &str,
        csrf: &CsrfToken,
        principal: Option<&Principal>,
    ) -> Self {
        Self {
            title: title.to_owned(),
            product: product.to_owned(),
            nav: principal.filter(|p| p.is_full()).map(|p| Nav {
                username: p.user.username.to_string(),
                admin: p.is_admin(),
                staff: p.is_staff(),
                unread: 0,
            }),
            csrf: csrf.0.clone(),
            notice: None,
            error: None,
        }
    }
    pub fn notice(mut self, notice: impl Into<String>) -> Self {
        self.notice = Some(notice.into());
        self
    }
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// One input of a generic form.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: &'static str,
    pub autocomplete: &'static str,
    pub value: String,
    pub hint: String,
}

impl Field {
    pub fn text(name: &'static str, label: &'static str, autocomplete: &'static str) -> Self {
        Self {
            name,
            label,
            kind: "text",
            autocomplete,
            value: String::new(),
            hint: String::new(),
        }
    }
    pub fn email(name: &'static str, label: &'static str) -> Self {
        Self {
            kind: "email",
            ..Self::text(name, label, "email")
        }
    }
    /// Password inputs never carry a value back and never have a `maxlength` (a browser
    /// would silently truncate).
    pub fn password(name: &'static str, label: &'static str, autocomplete: &'static str) -> Self {
        Self {
            kind: "password",
            ..Self::text(name, label, autocomplete)
        }
    }
    pub fn hidden(name: &'static str, value: &str) -> Self {
        Self {
            kind: "hidden",
            value: value.to_owned(),
            ..Self::text(name, "", "off")
        }
    }
    pub fn value(mut self, value: &str) -> Self {
        self.value = value.to_owned();
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

#[derive(Template)]
#[template(path = "form.html")]
pub struct FormPage {
    pub c: Chrome,
    pub intro: Vec<String>,
    pub action: &'static str,
    pub fields: Vec<Field>,
    pub submit: &'static str,
    pub links: Vec<(&'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub c: Chrome,
    pub paragraphs: Vec<String>,
    pub links: Vec<(&'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub c: Chrome,
    pub username: String,
    pub role: &'static str,
    pub mfa: bool,
    pub admin: bool,
    pub last_login: String,
}

#[derive(Template)]
#[template(path = "enrol.html")]
pub struct EnrolPage {
    pub c: Chrome,
    pub required: bool,
    pub secret: String,
    pub uri: String,
    /// The `otpauth://` URI as an SVG QR code (made here from our own data; no script).
    pub qr_svg: String,
}

/// An SVG QR code of `data` (empty if the data does not fit in a QR code).
pub fn qr_svg(data: &str) -> String {
    qrcode::QrCode::new(data.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "codes.html")]
pub struct CodesPage {
    pub c: Chrome,
    pub codes: Vec<String>,
    pub next: &'static str,
}

/// An API token row on the account page.
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub c: Chrome,
    pub username: String,
    pub email: String,
    pub role: &'static str,
    pub min_len: usize,
    pub mfa: bool,
    pub mfa_required: bool,
    pub recovery_left: i64,
    pub sessions: Vec<(String, String, String, String)>,
    pub tokens: Vec<TokenRow>,
    pub new_token: Option<String>,
    /// Marketing e-mail consent (PRIV-2) and when it was last changed.
    pub marketing: bool,
    pub marketing_changed: String,
    /// The policy version accepted, and when ("" if none).
    pub policy_accepted: String,
}

/// A row of the users table.
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: String,
    pub role: &'static str,
    pub status: &'static str,
    pub mfa: &'static str,
    pub lock: String,
    pub locked: bool,
    pub is_self: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub c: Chrome,
    pub users: Vec<UserRow>,
}

/// A row of the audit table.
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub c: Chrome,
    pub intact: bool,
    pub chain: String,
    pub entries: Vec<AuditRow>,
    pub older: Option<i64>,
}

#[derive(Template)]
#[template(path = "retention.html")]
pub struct RetentionPage {
    pub c: Chrome,
    pub interval_minutes: u64,
    pub batch_rows: u32,
    pub last_run: String,
    pub next_run: String,
    /// (kind, rows deleted) of the last run.
    pub last_counts: Vec<(String, u64)>,
    /// (started, finished, total deleted, error).
    pub runs: Vec<(String, String, u64, String)>,
    pub periods: Vec<crate::privacy::inventory::Period>,
}

/// Render a template as an HTML response.
pub fn render(page: impl Template) -> Result<Response, WebError> {
    page.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| WebError::Internal(crate::error::Error::Task(format!("template: {e}"))))
}

/// The page shown for an error on a console path.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let mut links = vec![("/", "Home")];
    if status == StatusCode::UNAUTHORIZED {
        links.insert(0, ("/login", "Sign in"));
    }
    let page = MessagePage {
        c: Chrome {
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            product: "Palisade".into(),
            nav: None,
            csrf: String::new(),
            notice: None,
            error: Some(message.to_owned()),
        },
        paragraphs: Vec::new(),
        links,
    };
    page.render()
        .map(|html| Html(html).into_response())
        .unwrap_or_else(|_| message.to_owned().into_response())
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`.
pub fn fmt_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| "-".into())
}

const STYLESHEET: &str = include_str!("../../static/console.css");

/// The console stylesheet (the only static asset; there is no script at all).
pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}
