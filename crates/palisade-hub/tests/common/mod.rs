//! Test kit: a real hub on 127.0.0.1:0 with a temporary data directory, and a small
//! HTTPS "browser" (reqwest with the hub CA pinned, cookies handled by hand so tests
//! can plant, keep or replay them).
#![allow(dead_code)]

pub mod devices;
pub mod postgres;
pub mod security_txt;

use palisade_crypto::totp::TotpSecret;
use palisade_hub::config::Config;
use palisade_hub::{RunningHub, start};
use reqwest::header::{COOKIE, SET_COOKIE};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const ADMIN: &str = "root-admin";
pub const ADMIN_EMAIL: &str = "admin@example.org";
pub const ADMIN_PASSWORD: &str = "orchid tractor velvet monsoon";

pub struct TestHub {
    pub hub: RunningHub,
    pub dir: tempfile::TempDir,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestHub {
    /// An administrator invites `username` with `role`; the invitee follows the
    /// e-mailed link, sets a password and is signed in. The returned browser has the
    /// session's CSRF token (for API calls).
    #[allow(dead_code)] // not every test file invites
    pub async fn invite(&self, admin: &mut Browser, username: &str, role: &str) -> Browser {
        admin.get("/users").await;
        let email = format!("{username}@example.org");
        let page = admin
            .post_form(
                "/users/invite",
                &[("username", username), ("email", &email), ("role", role)],
            )
            .await;
        assert!(page.body.contains("Invitation sent"), "{}", page.body);
        let mail = self.wait_for_mail(&email, "/invite?token=").await;
        let token = link_token(&mail, "/invite");
        let mut b = self.browser();
        b.get(&format!("/invite?token={token}")).await;
        let page = b
            .post_form(
                "/invite",
                &[
                    ("token", &token),
                    ("password", "juniper cobalt harbour violin"),
                ],
            )
            .await;
        assert_eq!(page.location(), "/", "{}", page.body);
        b.get("/account").await;
        b
    }

    pub async fn start() -> TestHub {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestHub {
        install_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_data_dir(&dir.path().join("data"));
        adjust(&mut config);
        let hub = start(config).await.expect("hub starts");
        TestHub { hub, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.hub.url(), path)
    }

    pub fn port(&self) -> u16 {
        self.hub.addr.port()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn browser(&self) -> Browser {
        Browser::new(self, None)
    }

    pub fn browser_from(&self, source: IpAddr) -> Browser {
        Browser::new(self, Some(source))
    }

    /// Run setup and TOTP enrolment; returns the signed-in admin browser and secret.
    pub async fn setup_admin(&self) -> (Browser, TotpSecret) {
        let code = self
            .hub
            .setup_code
            .clone()
            .expect("fresh hub has a setup code");
        let mut b = self.browser();
        b.get("/setup").await;
        let r = b
            .post_form(
                "/setup",
                &[
                    ("code", &code),
                    ("username", ADMIN),
                    ("email", ADMIN_EMAIL),
                    ("password", ADMIN_PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "setup redirects to enrolment: {}", r.body);
        assert_eq!(r.location(), "/mfa/enrol");
        let page = b.get("/mfa/enrol").await;
        let secret = totp_secret_from(&page.body);
        let code = secret.code_at(now()).expect("code");
        let r = b.post_form("/mfa/enrol", &[("code", &code)]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("id=\"recovery-codes\""), "{}", r.body);
        let home = b.get("/").await;
        assert!(home.body.contains("signed-in-as"), "{}", home.body);
        (b, secret)
    }

    /// Messages written to the mail directory for a recipient, oldest first.
    pub fn mail_to(&self, recipient: &str) -> Vec<String> {
        let dir = self.data_dir().join("mail");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter(|m| m.starts_with(&format!("To: {recipient}\r\n")))
            .collect()
    }

    /// Wait (bounded) for a message to `recipient` whose text contains `needle`; returns it.
    pub async fn wait_for_mail(&self, recipient: &str, needle: &str) -> String {
        for _ in 0..100 {
            if let Some(m) = self
                .mail_to(recipient)
                .into_iter()
                .rev()
                .find(|m| m.contains(needle))
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no mail to {recipient} containing {needle:?}");
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn totp_secret_from(html: &str) -> TotpSecret {
    let start =
        html.find("id=\"totp-secret\">").expect("secret on page") + "id=\"totp-secret\">".len();
    let end = start + html[start..].find('<').expect("end");
    let bytes = data_encoding::BASE32_NOPAD
        .decode(&html.as_bytes()[start..end])
        .expect("base32");
    TotpSecret::from_bytes(bytes).expect("secret")
}

/// The token of the first link to `path` in an e-mail (`…path?token=XYZ`).
pub fn link_token(mail: &str, path: &str) -> String {
    let marker = format!("{path}?token=");
    let start = mail.find(&marker).expect("link in mail") + marker.len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// A response, read in full.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The CSRF token embedded in the page's forms.
    pub fn csrf(&self) -> Option<String> {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker)? + marker.len();
        Some(
            self.body[start..]
                .chars()
                .take_while(|c| *c != '"')
                .collect(),
        )
    }
}

/// An HTTPS client with a cookie jar the test controls.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    pub cookies: BTreeMap<String, String>,
    pub csrf: Option<String>,
}

pub fn client(hub: &TestHub, source: Option<IpAddr>) -> reqwest::Client {
    install_crypto();
    let ca = std::fs::read(&hub.hub.ca_cert_path).expect("ca");
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("palisade-tests");
    if let Some(ip) = source {
        builder = builder.local_address(ip);
    }
    builder.build().expect("client")
}

impl Browser {
    fn new(hub: &TestHub, source: Option<IpAddr>) -> Self {
        Browser {
            client: client(hub, source),
            base: hub.hub.url(),
            cookies: BTreeMap::new(),
            csrf: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap_or("");
            let pair = text.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let page = Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        };
        if let Some(token) = page.csrf() {
            self.csrf = Some(token);
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.finish(r).await
    }

    /// POST a form with the current CSRF token added.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone().unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// POST exactly these fields (no CSRF token added).
    pub async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(fields)
            .send()
            .await
            .expect("POST");
        self.finish(r).await
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
    }

    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let r = request.send().await.expect("request");
        self.finish(r).await
    }

    pub fn session(&self) -> Option<String> {
        self.cookies.get("__Host-palisade_session").cloned()
    }

    /// Sign in with password (and a TOTP code when `secret` is given, for time `at`).
    pub async fn sign_in(
        &mut self,
        username: &str,
        password: &str,
        secret: Option<(&TotpSecret, u64)>,
    ) -> Page {
        self.get("/login").await;
        let r = self
            .post_form("/login", &[("username", username), ("password", password)])
            .await;
        match secret {
            None => r,
            Some((secret, at)) => {
                assert_eq!(
                    r.location(),
                    "/login/mfa",
                    "password accepted, MFA asked: {} {}",
                    r.status,
                    r.body
                );
                self.get("/login/mfa").await;
                let code = secret.code_at(at).expect("code");
                self.post_form("/login/mfa", &[("code", &code)]).await
            }
        }
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Invite an account with `role` as the signed-in administrator `admin`, accept the
/// invitation from the e-mail, and return the new account's signed-in browser.
pub async fn invite_user(
    hub: &TestHub,
    admin: &mut Browser,
    username: &str,
    role: &str,
) -> Browser {
    admin.get("/users").await;
    let email = format!("{username}@example.org");
    let page = admin
        .post_form(
            "/users/invite",
            &[("username", username), ("email", &email), ("role", role)],
        )
        .await;
    assert!(page.body.contains("Invitation sent"), "{}", page.body);
    let mail = hub.wait_for_mail(&email, "/invite?token=").await;
    let token = link_token(&mail, "/invite");
    let mut b = hub.browser();
    b.get(&format!("/invite?token={token}")).await;
    let page = b
        .post_form(
            "/invite",
            &[
                ("token", &token),
                ("password", "juniper cobalt harbour violin"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/", "{}", page.body);
    b
}
