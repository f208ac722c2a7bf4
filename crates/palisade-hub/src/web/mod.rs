//! The HTTP surface: console pages and `/api/v1`, built from one route table in which
//! every route carries its access decision, so the table can be enumerated by tests
//! and no route exists without one (DESIGN.md invariant 5).

pub mod access;
pub mod advisories;
pub mod api;
pub mod console;
pub mod devices;
pub mod disclosure;
pub mod error;
pub mod middleware;
pub mod owner_privacy;
pub mod pages;
pub mod privacy;
pub mod reauth;
pub mod reports_api;
pub mod rollouts;
pub mod updates;
pub mod vulndb;

use crate::auth::Auth;
use crate::config::Config;
use crate::db::Db;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use std::sync::Arc;

pub use access::Access;

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub auth: Auth,
    /// The hub CA: issues device certificates at enrolment.
    pub hub_ca: Arc<palisade_crypto::ca::HubCa>,
    /// The hub CA certificate (PEM) handed to devices.
    pub hub_ca_pem: Arc<str>,
    /// Live device connections.
    pub fleet: Arc<crate::mqtt::Fleet>,
    /// The port devices connect to (the bound one, also when configured as 0).
    pub mqtt_port: u16,
    /// The TUF repositories of the product models (online keys only).
    pub updates: Arc<crate::updates::repo::Repository>,
}

/// One route and who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// Builds the router and the table of routes together.
struct Routes {
    router: Router<AppState>,
    table: Vec<RouteInfo>,
    state: AppState,
    /// Streamed uploads: exempt from the request deadline, bounded by the upload ones.
    uploads: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        access: Access,
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.table.push(RouteInfo {
            method,
            path,
            access,
        });
        let guarded = handler.route_layer(axum::middleware::from_fn_with_state(
            (self.state.clone(), access),
            access::require,
        ));
        self.router = self.router.route(path, guarded);
        self
    }

    /// A route that receives a large body slowly (release images and metadata): it gets
    /// `upload_timeout_secs` in total and `upload_idle_timeout_secs` between chunks
    /// instead of `request_timeout_secs` (`middleware::deadline`).
    fn upload(
        mut self,
        method: &'static str,
        path: &'static str,
        access: Access,
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.uploads.push((method, path));
        self.add(method, path, access, handler)
    }
}

/// The route table with the handlers, in one place.
fn routes(state: AppState) -> Routes {
    use Access::*;
    use axum::routing::{get, post};
    use console::{account, admin, signin};
    let r = Routes {
        router: Router::new(),
        table: Vec::new(),
        state,
        uploads: Vec::new(),
    };
    r.add("GET", "/", Public, get(console::home))
        .add("GET", "/healthz", Public, get(api::healthz))
        .add("GET", "/static/console.css", Public, get(pages::stylesheet))
        .add("GET", "/setup", Public, get(signin::setup_form))
        .add("POST", "/setup", Public, post(signin::setup_submit))
        .add("GET", "/login", Public, get(signin::login_form))
        .add("POST", "/login", Public, post(signin::login_submit))
        .add("GET", "/login/mfa", MfaPending, get(signin::mfa_form))
        .add("POST", "/login/mfa", MfaPending, post(signin::mfa_submit))
        .add("POST", "/logout", AnySession, post(signin::logout))
        .add("GET", "/signup", Public, get(signin::signup_form))
        .add("POST", "/signup", Public, post(signin::signup_submit))
        .add("GET", "/verify-email", Public, get(signin::verify_form))
        .add("POST", "/verify-email", Public, post(signin::verify_submit))
        .add("GET", "/recover", Public, get(signin::recover_form))
        .add("POST", "/recover", Public, post(signin::recover_submit))
        .add("GET", "/recover/reset", Public, get(signin::reset_form))
        .add("POST", "/recover/reset", Public, post(signin::reset_submit))
        .add("GET", "/invite", Public, get(signin::invite_form))
        .add("POST", "/invite", Public, post(signin::invite_submit))
        .add("GET", "/mfa/enrol", Enrolling, get(account::enrol_form))
        .add("POST", "/mfa/enrol", Enrolling, post(account::enrol_submit))
        .add("GET", "/account", Signed, get(account::page))
        .add(
            "POST",
            "/account/password",
            Signed,
            post(account::change_password),
        )
        .add(
            "POST",
            "/account/mfa/start",
            Signed,
            post(account::mfa_start),
        )
        .add(
            "POST",
            "/account/mfa/disable",
            Signed,
            post(account::mfa_disable),
        )
        .add(
            "POST",
            "/account/recovery-codes",
            Signed,
            post(account::new_recovery_codes),
        )
        .add(
            "POST",
            "/account/sessions/end-others",
            Signed,
            post(account::end_other_sessions),
        )
        .add(
            "POST",
            "/account/tokens",
            Signed,
            post(account::create_token),
        )
        .add(
            "POST",
            "/account/tokens/{id}/revoke",
            Signed,
            post(account::revoke_token),
        )
        .add("GET", "/users", Admin, get(admin::users_page))
        .add("POST", "/users/invite", Admin, post(admin::invite))
        .add("POST", "/users/{id}/role", Admin, post(admin::set_role))
        .add("POST", "/users/{id}/unlock", Admin, post(admin::unlock))
        .add("POST", "/users/{id}/disable", Admin, post(admin::disable))
        .add("POST", "/users/{id}/enable", Admin, post(admin::enable))
        .add("GET", "/audit", Admin, get(admin::audit_page))
        .add("GET", "/devices", Signed, get(console::devices::list))
        .add(
            "POST",
            "/devices/claim",
            Signed,
            post(console::devices::claim),
        )
        .add(
            "GET",
            "/devices/{id}",
            Signed,
            get(console::devices::detail),
        )
        .add(
            "POST",
            "/devices/{id}/revoke",
            Staff,
            post(console::devices::revoke),
        )
        .add(
            "POST",
            "/devices/{id}/release",
            Signed,
            post(console::devices::release),
        )
        .add(
            "POST",
            "/devices/{id}/telemetry-fields",
            Signed,
            post(console::devices::switch_field),
        )
        .add(
            "POST",
            "/devices/{id}/auto-update",
            Signed,
            post(console::devices::auto_update),
        )
        .add("GET", "/retention", Admin, get(admin::retention_page))
        .add("GET", "/api/v1/openapi.json", Signed, get(api::openapi))
        .add("GET", "/api/v1/me", Signed, get(api::me))
        .add("GET", "/api/v1/users", Admin, get(api::users))
        .add(
            "POST",
            "/api/v1/users/{id}/unlock",
            Admin,
            post(api::unlock_user),
        )
        .add(
            "POST",
            "/api/v1/users/{id}/disable",
            Admin,
            post(api::disable_user),
        )
        .add("GET", "/api/v1/audit", Admin, get(api::audit))
        .add("GET", "/api/v1/audit/verify", Admin, get(api::audit_verify))
        .add("GET", "/api/v1/products", Signed, get(devices::products))
        .add("GET", "/api/v1/devices", Signed, get(devices::list))
        .add("GET", "/api/v1/devices/{id}", Signed, get(devices::show))
        .add(
            "POST",
            "/api/v1/devices/claim",
            Signed,
            post(devices::claim),
        )
        .add(
            "POST",
            "/api/v1/devices/{id}/revoke",
            Staff,
            post(devices::revoke),
        )
        .add(
            "POST",
            "/api/v1/devices/{id}/release",
            Signed,
            post(devices::release),
        )
        .add(
            "POST",
            "/api/v1/devices/{id}/telemetry-fields",
            Signed,
            post(devices::telemetry_fields),
        )
        .add(
            "POST",
            "/api/v1/devices/{id}/auto-update",
            Signed,
            post(devices::auto_update),
        )
        .add(
            "POST",
            "/api/v1/devices/{id}/commands",
            Staff,
            post(devices::send_command),
        )
        .add(
            "GET",
            "/api/v1/devices/{id}/commands",
            Signed,
            get(devices::list_commands),
        )
        // Vulnerability disclosure (VULN-1, VULN-2): public by design; the status page
        // needs its report's secret. Triage is staff only (VULN-3).
        .add(
            "GET",
            "/.well-known/security.txt",
            Public,
            get(disclosure::security_txt),
        )
        .add("GET", "/security", Public, get(disclosure::policy))
        .add(
            "POST",
            "/security/reports",
            Public,
            post(disclosure::submit),
        )
        .add("GET", "/security/status", Public, get(disclosure::status))
        .add("POST", "/security/status", Public, post(disclosure::reply))
        .add("GET", "/reports", Staff, get(console::reports::list))
        .add("GET", "/reports/{id}", Staff, get(console::reports::detail))
        .add(
            "POST",
            "/reports/{id}/state",
            Staff,
            post(console::reports::set_state),
        )
        .add(
            "POST",
            "/reports/{id}/assess",
            Staff,
            post(console::reports::assess),
        )
        .add(
            "POST",
            "/reports/{id}/messages",
            Staff,
            post(console::reports::message),
        )
        // VULN-7: active exploitation and the CRA reports to the authorities.
        .add(
            "POST",
            "/reports/{id}/exploited",
            Staff,
            post(console::reports::exploited),
        )
        .add(
            "POST",
            "/reports/{id}/cra",
            Staff,
            post(console::reports::cra_sent),
        )
        .add("GET", "/api/v1/reports", Staff, get(reports_api::list))
        .add("GET", "/api/v1/reports/{id}", Staff, get(reports_api::show))
        .add(
            "POST",
            "/api/v1/reports/{id}/state",
            Staff,
            post(reports_api::set_state),
        )
        .add(
            "POST",
            "/api/v1/reports/{id}/assessment",
            Staff,
            post(reports_api::assess),
        )
        .add(
            "POST",
            "/api/v1/reports/{id}/messages",
            Staff,
            post(reports_api::message),
        )
        .add(
            "POST",
            "/api/v1/reports/{id}/exploited",
            Staff,
            post(reports_api::exploited),
        )
        .add(
            "POST",
            "/api/v1/reports/{id}/cra/{stage}",
            Staff,
            post(reports_api::cra_sent),
        )
        // Advisories (VULN-6): published ones are public by design, with their OSV
        // and Atom feeds; drafts, exposure and notifying owners are staff only (UPD-7).
        .add("GET", "/advisories", Public, get(advisories::list))
        .add("GET", "/advisories.atom", Public, get(advisories::atom))
        .add(
            "GET",
            "/advisories/osv.json",
            Public,
            get(advisories::osv_all),
        )
        .add("GET", "/advisories/{id}", Public, get(advisories::show))
        .add(
            "GET",
            "/manage/advisories",
            Staff,
            get(console::advisories::list),
        )
        .add(
            "POST",
            "/manage/advisories",
            Staff,
            post(console::advisories::create),
        )
        .add(
            "GET",
            "/manage/advisories/new",
            Staff,
            get(console::advisories::new_form),
        )
        .add(
            "GET",
            "/manage/advisories/{id}",
            Staff,
            get(console::advisories::detail),
        )
        .add(
            "POST",
            "/manage/advisories/{id}",
            Staff,
            post(console::advisories::edit),
        )
        .add(
            "POST",
            "/manage/advisories/{id}/publish",
            Staff,
            post(console::advisories::publish),
        )
        .add(
            "POST",
            "/manage/advisories/{id}/notify",
            Staff,
            post(console::advisories::notify),
        )
        .add("GET", "/inbox", Signed, get(console::inbox::page))
        .add(
            "POST",
            "/inbox/read",
            Signed,
            post(console::inbox::mark_read),
        )
        .add(
            "GET",
            "/api/v1/advisories",
            Staff,
            get(advisories::api_list),
        )
        .add(
            "POST",
            "/api/v1/advisories",
            Staff,
            post(advisories::api_create),
        )
        .add(
            "GET",
            "/api/v1/advisories/{id}",
            Staff,
            get(advisories::api_show),
        )
        .add(
            "PUT",
            "/api/v1/advisories/{id}",
            Staff,
            axum::routing::put(advisories::api_edit),
        )
        .add(
            "POST",
            "/api/v1/advisories/{id}/publish",
            Staff,
            post(advisories::api_publish),
        )
        .add(
            "POST",
            "/api/v1/advisories/{id}/notify",
            Staff,
            post(advisories::api_notify),
        )
        .add(
            "GET",
            "/api/v1/notices",
            Signed,
            get(advisories::api_notices),
        )
        .add("GET", "/privacy", Public, get(privacy::policy))
        .add("GET", "/privacy/data", Public, get(privacy::data))
        .add("GET", "/privacy/history", Public, get(privacy::history))
        .add(
            "GET",
            "/privacy/versions/{version}",
            Public,
            get(privacy::version),
        )
        .add("GET", "/privacy/accept", Signed, get(privacy::accept_form))
        .add(
            "POST",
            "/privacy/accept",
            Signed,
            post(privacy::accept_submit),
        )
        .add("GET", "/privacy/publish", Admin, get(privacy::publish_form))
        .add(
            "POST",
            "/privacy/publish",
            Admin,
            post(privacy::publish_submit),
        )
        .add(
            "POST",
            "/account/marketing",
            Signed,
            post(privacy::set_marketing),
        )
        .add(
            "GET",
            "/api/v1/devices/{id}/events",
            Signed,
            get(devices::list_events),
        )
        // Releases (issue 4). The TUF repository is public: metadata and targets carry
        // their own integrity (docs/security-model.md); the support page is public by
        // law (SUP-1). Publishing is staff, the root (who may sign) admin only.
        .add(
            "GET",
            "/tuf/{model}/metadata/{file}",
            Public,
            get(updates::metadata),
        )
        .add(
            "GET",
            "/tuf/{model}/targets/{name}",
            Public,
            get(updates::target),
        )
        // Staged rollouts (issue 4): staff only; bodies are small JSON or forms.
        .add("GET", "/rollouts", Staff, get(rollouts::page))
        .add("POST", "/rollouts", Staff, post(rollouts::create))
        .add("GET", "/rollouts/{id}", Staff, get(rollouts::detail))
        .add("POST", "/rollouts/{id}/pause", Staff, post(rollouts::pause))
        .add(
            "POST",
            "/rollouts/{id}/resume",
            Staff,
            post(rollouts::resume),
        )
        .add("POST", "/rollouts/{id}/abort", Staff, post(rollouts::abort))
        .add(
            "POST",
            "/rollouts/{id}/rollback",
            Staff,
            post(rollouts::rollback),
        )
        .add("GET", "/api/v1/rollouts", Staff, get(rollouts::api_list))
        .add(
            "POST",
            "/api/v1/rollouts",
            Staff,
            post(rollouts::api_create),
        )
        .add(
            "GET",
            "/api/v1/rollouts/{id}",
            Staff,
            get(rollouts::api_show),
        )
        .add(
            "POST",
            "/api/v1/rollouts/{id}/pause",
            Staff,
            post(rollouts::api_pause),
        )
        .add(
            "POST",
            "/api/v1/rollouts/{id}/resume",
            Staff,
            post(rollouts::api_resume),
        )
        .add(
            "POST",
            "/api/v1/rollouts/{id}/abort",
            Staff,
            post(rollouts::api_abort),
        )
        .add(
            "POST",
            "/api/v1/rollouts/{id}/rollback",
            Staff,
            post(rollouts::api_rollback),
        )
        .add(
            "POST",
            "/manage/advisories/{id}/rollout",
            Staff,
            post(console::advisories::rollout),
        )
        .add("GET", "/support", Public, get(updates::support))
        .add("GET", "/releases", Staff, get(updates::page))
        .add("GET", "/api/v1/releases", Signed, get(updates::list))
        .add(
            "GET",
            "/api/v1/products/{model}/tuf/keys",
            Staff,
            get(updates::online_keys),
        )
        .upload(
            "POST",
            "/api/v1/products/{model}/tuf/root",
            Admin,
            post(updates::upload_root).layer(DefaultBodyLimit::max(
                crate::updates::repo::MAX_METADATA_BYTES + 16 * 1024,
            )),
        )
        .upload(
            "POST",
            "/api/v1/products/{model}/tuf/targets",
            Staff,
            post(updates::upload_targets).layer(DefaultBodyLimit::max(
                crate::updates::repo::MAX_METADATA_BYTES + 16 * 1024,
            )),
        )
        .upload(
            "PUT",
            "/api/v1/products/{model}/targets/{name}",
            Staff,
            axum::routing::put(updates::upload_image),
        )
        .upload(
            "POST",
            "/api/v1/products/{model}/releases",
            Staff,
            post(updates::publish).layer(DefaultBodyLimit::max(
                crate::updates::repo::MAX_METADATA_BYTES + 16 * 1024,
            )),
        )
        // SBOMs and known vulnerabilities (VULN-4, VULN-5); bodies up to the SBOM and
        // import bounds, read only after the access check.
        .add(
            "POST",
            "/api/v1/products/{model}/versions/{version}/sbom",
            Staff,
            post(vulndb::store).layer(DefaultBodyLimit::max(crate::vuln::sbom::MAX_SBOM_BYTES)),
        )
        .add(
            "GET",
            "/api/v1/products/{model}/versions/{version}/sbom",
            Staff,
            get(vulndb::show),
        )
        .add(
            "GET",
            "/api/v1/devices/{id}/vulnerabilities",
            Signed,
            get(vulndb::device),
        )
        .add(
            "POST",
            "/api/v1/vulndb/import",
            Admin,
            post(vulndb::import).layer(DefaultBodyLimit::max(vulndb::MAX_IMPORT_BYTES)),
        )
        .add(
            "GET",
            "/products/{model}/versions/{version}/vulnerabilities",
            Staff,
            get(vulndb::page),
        )
        // The owner's data (DATA-3, DATA-4): export and deletion need a recent
        // re-authentication (`reauth`), checked in the handlers.
        .add("GET", "/account/privacy", Signed, get(owner_privacy::page))
        .add(
            "POST",
            "/account/privacy/reauth",
            Signed,
            post(owner_privacy::reauth_submit),
        )
        .add(
            "GET",
            "/account/export",
            Signed,
            get(owner_privacy::export_download),
        )
        .add(
            "POST",
            "/account/delete",
            Signed,
            post(owner_privacy::delete_submit),
        )
        .add(
            "GET",
            "/api/v1/me/export",
            Signed,
            get(owner_privacy::export_api),
        )
        // The claim code in the body is the credential (AUTH-2); see `middleware::csrf`.
        .add("POST", devices::ENROL_PATH, Public, post(devices::enroll))
}

/// Every route with its access decision.
pub fn route_table(state: AppState) -> Vec<RouteInfo> {
    routes(state).table
}

/// The complete application: routes, then (outermost last) CSRF defence, principal
/// resolution, security headers, body and time limits.
pub fn app(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    let built = routes(state.clone());
    built
        .router
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::csrf,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::resolve_principal,
        ))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            middleware::RequestDeadlines {
                request: std::time::Duration::from_secs(limits.request_timeout_secs),
                upload_idle: std::time::Duration::from_secs(limits.upload_idle_timeout_secs),
                upload_total: std::time::Duration::from_secs(limits.upload_timeout_secs),
                uploads: built.uploads.into(),
            },
            middleware::deadline,
        ))
        .with_state(state)
}
