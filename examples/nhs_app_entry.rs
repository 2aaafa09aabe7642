//! The NHS App jump-off, for a patient and for a proxy, against `scripts/run-with-idps.sh`
//! (carebroker with an NHS login-shaped provider on :9102 and a VRS double on :9104). Plays the
//! NHS App and the journey's app, with the browser's cookies kept by hand:
//!
//! 1. the NHS App opens `/nhs-app/careplan?assertedLoginIdentity=…`; carebroker signs the user in
//!    silently at NHS login and launches the journey's app with the patient in context;
//! 2. the app authorizes with that `launch` and PKCE, redeems the code, reads the care plans.
//!
//! The patient (9434765919) opens their own plan; then, with the asserted identity
//! `proxy-for:9000000009`, NHS login issues a composite token (the patient as subject, the proxy in
//! `act`), VRS confirms the role, and the same person opens 9000000009's plan as their proxy.
//!
//! ```sh
//! scripts/run-with-idps.sh &           # wait for "carebroker listening"
//! cargo run --example nhs_app_entry    # or: -- http://127.0.0.1:8080
//! ```

use std::collections::HashMap;

use base64::Engine as _;
use carebroker::domain::pkce;
use carebroker::token::random_token;
use serde_json::Value;

/// Cookies by `host:port`, as a browser keeps them (names and values only: enough here).
#[derive(Default)]
struct Browser {
    http: Option<reqwest::blocking::Client>,
    cookies: HashMap<String, HashMap<String, String>>,
}

type Error = Box<dyn std::error::Error>;

impl Browser {
    fn http(&mut self) -> &reqwest::blocking::Client {
        self.http.get_or_insert_with(|| {
            reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("Mozilla/5.0 (Linux; Android 14) Mobile Safari/537.36 nhsapp-android/2.40.0")
                .build()
                .expect("HTTP client")
        })
    }

    fn authority(url: &url::Url) -> String {
        format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
    }

    fn send(
        &mut self,
        request: reqwest::blocking::RequestBuilder,
        url: &url::Url,
    ) -> Result<reqwest::blocking::Response, Error> {
        let jar = self.cookies.entry(Self::authority(url)).or_default();
        let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let response = request.header("cookie", cookie).send()?;
        for set in response.headers().get_all("set-cookie") {
            if let Some((name, value)) =
                set.to_str().unwrap_or_default().split(';').next().and_then(|c| c.split_once('='))
            {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        Ok(response)
    }

    /// Follows redirects from `start` until one goes to a URL `done` accepts (the journey's app),
    /// consenting on carebroker's consent page if it is shown.
    fn follow(&mut self, start: &str, done: impl Fn(&str) -> bool) -> Result<url::Url, Error> {
        let mut url = url::Url::parse(start)?;
        for _ in 0..20 {
            let request = self.http().get(url.clone());
            let response = self.send(request, &url)?;
            if let Some(location) = response.headers().get("location").and_then(|v| v.to_str().ok()) {
                let next = url.join(location)?;
                if done(next.as_str()) {
                    return Ok(next);
                }
                url = next;
                continue;
            }
            let status = response.status();
            let page = response.text()?;
            if page.contains("action=\"/authorize/consent\"") {
                url = self.consent(&url, &page)?;
                if done(url.as_str()) {
                    return Ok(url);
                }
                continue;
            }
            return Err(format!("stopped at {url} ({status}): {}", page.chars().take(300).collect::<String>()).into());
        }
        Err("too many redirects".into())
    }

    /// Allows everything carebroker's consent page offers; where it sends the browser next.
    fn consent(&mut self, page_url: &url::Url, page: &str) -> Result<url::Url, Error> {
        let field = |name: &str| -> String {
            let marker = format!("name=\"{name}\" value=\"");
            page.find(&marker)
                .map(|i| page[i + marker.len()..].split('"').next().unwrap_or_default().to_owned())
                .unwrap_or_default()
        };
        let mut form = vec![
            ("csrf".to_owned(), field("csrf")),
            ("req".to_owned(), field("req")),
            ("decision".into(), "allow".into()),
        ];
        let marker = "name=\"scope\" type=\"checkbox\" value=\"";
        form.extend(page.match_indices(marker).map(|(i, _)| {
            ("scope".to_owned(), page[i + marker.len()..].split('"').next().unwrap_or_default().to_owned())
        }));
        let target = page_url.join("/authorize/consent")?;
        let origin = format!("{}://{}", target.scheme(), Browser::authority(&target));
        let request = self.http().post(target.clone()).header("origin", origin).form(&form);
        let response = self.send(request, &target)?;
        let location =
            response.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("consent did not redirect")?;
        Ok(target.join(location)?)
    }
}

/// The claims of a JWS, unverified (only to show what the token says).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

fn journey(base: &str, who: &str, asserted: &str) -> Result<(), Error> {
    let mut browser = Browser::default();
    let app = "http://127.0.0.1:8765";
    // 1. the NHS App's jump-off into carebroker, silently through NHS login, out to the app
    let launch = browser.follow(&format!("{base}/nhs-app/careplan?assertedLoginIdentity={asserted}"), |u| {
        u.starts_with(&format!("{app}/launch"))
    })?;
    let params: HashMap<_, _> = launch.query_pairs().into_owned().collect();
    println!("[{who}] the NHS App jump-off launched the app: launch {}…", &params["launch"][..8]);

    // 2. the app authorizes with the launch, in the same browser
    let verifier = random_token(48);
    let mut authorize = url::Url::parse(&format!("{base}/authorize"))?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "demo-app")
        .append_pair("redirect_uri", &format!("{app}/callback"))
        .append_pair("launch", &params["launch"])
        .append_pair("scope", "launch openid fhirUser patient/*.rs")
        .append_pair("state", "st-1")
        .append_pair("aud", &params["iss"])
        .append_pair("code_challenge", &pkce::s256(&verifier))
        .append_pair("code_challenge_method", "S256");
    let back = browser.follow(authorize.as_str(), |u| u.starts_with(&format!("{app}/callback")))?;
    let code = back.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).ok_or("no code")?;
    let tokens: Value = browser
        .http()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &format!("{app}/callback")),
            ("code_verifier", &verifier),
            ("client_id", "demo-app"),
        ])
        .send()?
        .json()?;
    let access = tokens["access_token"].as_str().ok_or_else(|| format!("no token: {tokens}"))?;
    let token = claims(access);
    println!(
        "[{who}] token for {} as {} (patient in context {}, act {})",
        token["sub"], token["fhirUser"], token["patient"], token["act"]
    );
    let plans: Value = browser
        .http()
        .get(format!("{base}/fhir/CarePlan?patient={}", tokens["patient"].as_str().unwrap_or_default()))
        .bearer_auth(access)
        .send()?
        .json()?;
    println!("[{who}] reads {} care plan(s) of {}", plans["total"], tokens["patient"]);
    Ok(())
}

fn main() -> Result<(), Error> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    journey(&base, "patient", "any-value")?;
    journey(&base, "proxy", "proxy-for:9000000009")?;
    Ok(())
}
