//! A minimal browser for in-process flows: keeps cookies, follows nothing by itself, and helps
//! fill the pages' forms.

use axum::http::Method;

use super::{Reply, TestApp, form};

#[derive(Debug, Default, Clone)]
pub struct Browser {
    cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn remember(&mut self, reply: &Reply) {
        for value in reply.headers.get_all("set-cookie") {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.retain(|(k, _)| k != name);
                if !value.is_empty() && !text.to_ascii_lowercase().contains("max-age=0") {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
    }

    /// GET with extra headers (a user agent, say).
    pub async fn request_with(&mut self, app: &TestApp, path: &str, extra: &[(&str, &str)]) -> Reply {
        let cookie = self.cookie_header();
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend_from_slice(extra);
        let reply = app.request(Method::GET, path, &headers, Vec::new()).await;
        self.remember(&reply);
        reply
    }

    pub async fn get(&mut self, app: &TestApp, path: &str) -> Reply {
        let cookie = self.cookie_header();
        let reply = app.request(Method::GET, path, &[("cookie", &cookie)], Vec::new()).await;
        self.remember(&reply);
        reply
    }

    pub async fn post(&mut self, app: &TestApp, path: &str, fields: &[(&str, &str)], extra: &[(&str, &str)]) -> Reply {
        let cookie = self.cookie_header();
        let mut headers = vec![("cookie", cookie.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        headers.extend_from_slice(extra);
        let reply = app.request(Method::POST, path, &headers, form(fields).into_bytes()).await;
        self.remember(&reply);
        reply
    }

    /// GETs the page a redirect points at (relative to the app).
    pub async fn follow(&mut self, app: &TestApp, reply: &Reply) -> Reply {
        let location = reply
            .header("location")
            .unwrap_or_else(|| panic!("no Location: {} {}", reply.status, reply.text()))
            .to_owned();
        assert!(location.starts_with('/'), "not an in-app redirect: {location}");
        self.get(app, &location).await
    }
}

/// The value of `<input ... name="NAME" value="...">` in a page.
pub fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no field {name} in page:\n{html}")) + marker.len();
    html[start..].split('"').next().unwrap_or_default().to_owned()
}

/// Query parameters of an absolute redirect.
pub fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    let url = url::Url::parse(location).unwrap_or_else(|e| panic!("{location}: {e}"));
    url.query_pairs().into_owned().collect()
}

/// After a failed sign-in the browser has no session: a new authorization asks to sign in again.
pub async fn assert_no_session(app: &TestApp, browser: &mut Browser, failed: &Reply, why: &str) {
    assert_eq!(failed.status, 403, "{why}: {}", failed.text());
    assert!(failed.text().contains("You could not be signed in"), "{why}");
    assert!(failed.header("location").is_none(), "{why}");
    let (_, challenge) = super::smart::pkce_pair();
    let again = browser.get(app, &super::smart::authorize_path(&challenge, &[("idp_hint", "dev")])).await;
    assert!(again.header("location").unwrap().starts_with("/signin"), "{why}: a session was created");
}

/// Allows every scope on the consent page `reply` leads to; returns the authorization code.
pub async fn consent_and_exchange(app: &TestApp, browser: &mut Browser, reply: &Reply) -> String {
    let page = browser.follow(app, reply).await;
    let html = page.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    let scopes: Vec<String> = html
        .match_indices("name=\"scope\" type=\"checkbox\" value=\"")
        .map(|(i, m)| html[i + m.len()..].split('"').next().unwrap().to_owned())
        .collect();
    let mut form = vec![("csrf", csrf.as_str()), ("req", req.as_str()), ("decision", "allow")];
    form.extend(scopes.iter().map(|s| ("scope", s.as_str())));
    let back = browser.post(app, "/authorize/consent", &form, &[]).await;
    let location = back.header("location").unwrap().to_owned();
    query_of(&location).get("code").cloned().unwrap_or_else(|| panic!("no code: {location}"))
}

/// A browser signed in at carebroker as development user `username` (through an authorization
/// started by the public test app), its session cookie kept.
pub async fn dev_signed_in(app: &TestApp, username: &str) -> Browser {
    let mut browser = Browser::new();
    let (_, challenge) = crate::support::smart::pkce_pair();
    let reply = browser.get(app, &crate::support::smart::authorize_path(&challenge, &[])).await;
    let page = browser.follow(app, &reply).await;
    let html = page.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    let form = [("csrf", csrf.as_str()), ("req", req.as_str()), ("username", username), ("password", username)];
    let reply = browser.post(app, "/signin", &form, &[]).await;
    assert!(reply.status.is_redirection(), "{} {}", reply.status, reply.text());
    browser
}
