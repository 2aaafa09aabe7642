//! DPoP (RFC 9449): sender-constrained tokens at the token endpoint and the FHIR API, and every
//! way a proof is refused, with nothing issued.

use axum::http::Method;
use carebroker::token::dpop::access_token_hash;
use carebroker::token::jose::{Algorithm, SigningKey, thumbprint};
use serde_json::{Value, json};

use crate::support::keys::{ClientKey, backend_client, backend_form};
use crate::support::smart::{authorize_path, code_from, launch_body, pkce_pair, register_launch, smart_app};
use crate::support::{FHIR_BASE, Reply, TOKEN_URL, TestApp, jwt_parts};

const SCOPE: &str = "system/CarePlan.rs system/Patient.rs";

/// A client's DPoP key.
struct DpopKey(SigningKey);

impl DpopKey {
    fn generate() -> Self {
        Self(SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap())
    }
    fn jkt(&self) -> String {
        thumbprint(&self.0.public_jwk())
    }
    fn sign(&self, header: Value, claims: Value) -> String {
        self.0.sign_with_header(&header, &claims).unwrap()
    }
    fn header(&self) -> Value {
        json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": self.0.public_jwk()})
    }
    fn claims(method: &str, url: &str, now: i64) -> Value {
        json!({"jti": carebroker::token::random_token(12), "htm": method, "htu": url, "iat": now})
    }
    /// A proof for `method url`, over `token` when given.
    fn proof(&self, method: &str, url: &str, now: i64, token: Option<&str>) -> String {
        let mut claims = Self::claims(method, url, now);
        if let Some(token) = token {
            claims["ath"] = access_token_hash(token).into();
        }
        self.sign(self.header(), claims)
    }
}

async fn backend_app(
    bound: bool,
    tweak: impl FnOnce(&mut carebroker::config::Config) + 'static,
) -> (TestApp, ClientKey) {
    let key = ClientKey::generate(Algorithm::ES256);
    let mut client = backend_client("partner", &key, SCOPE);
    client.dpop_bound_access_tokens = bound;
    let app = TestApp::builder().with_client(client).with_dev_users().with_config(tweak).build().await;
    (app, key)
}

async fn token_request(app: &TestApp, key: &ClientKey, proofs: &[&str]) -> Reply {
    let assertion = key.assertion("partner", app.now());
    let headers: Vec<(&str, &str)> = proofs.iter().map(|p| ("dpop", *p)).collect();
    app.post_form("/token", &backend_form(&assertion, SCOPE), &headers).await
}

async fn fhir_get(app: &TestApp, path: &str, authorization: &str, proof: Option<&str>) -> Reply {
    let mut headers = vec![("authorization", authorization)];
    if let Some(p) = proof {
        headers.push(("dpop", p));
    }
    app.request(Method::GET, path, &headers, Vec::new()).await
}

fn challenge_error(reply: &Reply) -> String {
    let challenge = reply.header("www-authenticate").unwrap_or_default().to_owned();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(challenge.contains("algs=\"") && challenge.contains("ES256"), "{challenge}");
    challenge
}

#[tokio::test]
async fn a_dpop_bound_token_reads_only_with_a_proof_of_its_key() {
    let (app, client_key) = backend_app(false, |_| {}).await;
    let dpop = DpopKey::generate();
    let reply = token_request(&app, &client_key, &[&dpop.proof("POST", TOKEN_URL, app.now(), None)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_parts(&token).1["cnf"]["jkt"], dpop.jkt());

    // introspection says how it is bound
    let introspected = {
        let assertion = client_key.assertion("partner", app.now());
        let mut form = backend_form(&assertion, SCOPE);
        form.retain(|(k, _)| *k != "grant_type" && *k != "scope");
        form.push(("token", &token));
        app.post_form("/introspect", &form, &[]).await.json()
    };
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["token_type"], "DPoP");
    assert_eq!(introspected["cnf"]["jkt"], dpop.jkt());

    let path = "/fhir/Patient/9434765919";
    let url = format!("{FHIR_BASE}/Patient/9434765919");
    let scheme = format!("DPoP {token}");
    let ok = fhir_get(&app, path, &scheme, Some(&dpop.proof("GET", &url, app.now(), Some(&token)))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // as a Bearer token it is refused
    let bearer = fhir_get(&app, path, &format!("Bearer {token}"), None).await;
    assert_eq!(bearer.status, 401);
    assert!(challenge_error(&bearer).contains("error=\"invalid_token\""));

    let other = DpopKey::generate();
    let now = app.now();
    let replayed = dpop.proof("GET", &url, now, Some(&token));
    assert_eq!(fhir_get(&app, path, &scheme, Some(&replayed)).await.status, 200);
    let no_ath = {
        let claims = DpopKey::claims("GET", &url, now);
        dpop.sign(dpop.header(), claims)
    };
    for (proof, why) in [
        (None, "no proof"),
        (Some(replayed.clone()), "a replayed proof"),
        (Some(dpop.proof("GET", &format!("{FHIR_BASE}/Patient/9000000009"), now, Some(&token))), "another URL"),
        (Some(dpop.proof("POST", &url, now, Some(&token))), "another method"),
        (Some(dpop.proof("GET", &url, now - 301, Some(&token))), "an old proof"),
        (Some(dpop.proof("GET", &url, now, Some("another-token"))), "another token's hash"),
        (Some(no_ath), "no ath"),
        (Some(other.proof("GET", &url, now, Some(&token))), "another key"),
    ] {
        let reply = fhir_get(&app, path, &scheme, proof.as_deref()).await;
        assert_eq!(reply.status, 401, "{why}: {}", reply.text());
        assert!(challenge_error(&reply).contains("error=\"invalid_dpop_proof\""), "{why}");
    }
}

#[tokio::test]
async fn a_revoked_token_under_the_dpop_scheme_is_answered_with_a_dpop_challenge() {
    let (app, client_key) = backend_app(false, |_| {}).await;
    let dpop = DpopKey::generate();
    let reply = token_request(&app, &client_key, &[&dpop.proof("POST", TOKEN_URL, app.now(), None)]).await;
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let jti = jwt_parts(&token).1["jti"].as_str().unwrap().to_owned();
    app.state.stores.durable.revoke(&jti, app.now() + 600).await.unwrap();
    let url = format!("{FHIR_BASE}/Patient/9434765919");
    let proof = dpop.proof("GET", &url, app.now(), Some(&token));
    let reply = fhir_get(&app, "/fhir/Patient/9434765919", &format!("DPoP {token}"), Some(&proof)).await;
    assert_eq!(reply.status, 401);
    assert!(challenge_error(&reply).contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn an_unbound_token_is_not_accepted_under_the_dpop_scheme() {
    let (app, client_key) = backend_app(false, |_| {}).await;
    let reply = token_request(&app, &client_key, &[]).await;
    assert_eq!(reply.json()["token_type"], "Bearer");
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let url = format!("{FHIR_BASE}/Patient/9434765919");
    let proof = DpopKey::generate().proof("GET", &url, app.now(), Some(&token));
    let reply = fhir_get(&app, "/fhir/Patient/9434765919", &format!("DPoP {token}"), Some(&proof)).await;
    assert_eq!(reply.status, 401);
    assert!(challenge_error(&reply).contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn every_bad_proof_at_the_token_endpoint_is_invalid_dpop_proof_and_issues_nothing() {
    let (app, client_key) = backend_app(false, |_| {}).await;
    let dpop = DpopKey::generate();
    let now = app.now();
    let used = dpop.proof("POST", TOKEN_URL, now, None);
    assert_eq!(token_request(&app, &client_key, &[&used]).await.status, 200);
    let mut private = dpop.header();
    private["jwk"]["d"] = "AAAA".into();
    let hs256 = {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = DpopKey::claims("POST", TOKEN_URL, now);
        format!(
            "{}.{}.AAAA",
            b64(&json!({"alg": "HS256", "typ": "dpop+jwt", "jwk": {"kty": "oct", "k": "c2VjcmV0"}})),
            b64(&claims)
        )
    };
    let mut jwt_typ = dpop.header();
    jwt_typ["typ"] = "JWT".into();
    for (proofs, why) in [
        (vec![used.clone()], "a replayed jti"),
        (vec![dpop.proof("POST", "http://127.0.0.1:8080/other", now, None)], "the wrong htu"),
        (vec![dpop.proof("GET", TOKEN_URL, now, None)], "the wrong htm"),
        (vec![dpop.proof("POST", TOKEN_URL, now - 400, None)], "an old iat"),
        (vec![dpop.proof("POST", TOKEN_URL, now + 400, None)], "a future iat"),
        (vec![dpop.sign(private, DpopKey::claims("POST", TOKEN_URL, now))], "a private key in jwk"),
        (vec![dpop.sign(jwt_typ, DpopKey::claims("POST", TOKEN_URL, now))], "typ JWT"),
        (vec![hs256], "HS256 with a symmetric key"),
        (vec!["not-a-jwt".to_owned()], "garbage"),
        (vec![dpop.proof("POST", TOKEN_URL, now, None), dpop.proof("POST", TOKEN_URL, now, None)], "two DPoP headers"),
    ] {
        let refs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let reply = token_request(&app, &client_key, &refs).await;
        reply.assert_error(400, "invalid_dpop_proof");
        assert!(reply.json().get("access_token").is_none(), "{why}");
    }
}

#[tokio::test]
async fn a_client_registered_for_bound_tokens_must_send_a_proof() {
    let (app, client_key) = backend_app(true, |_| {}).await;
    token_request(&app, &client_key, &[]).await.assert_error(400, "invalid_dpop_proof");
    let proof = DpopKey::generate().proof("POST", TOKEN_URL, app.now(), None);
    let reply = token_request(&app, &client_key, &[&proof]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["token_type"], "DPoP");
}

#[tokio::test]
async fn with_nonces_required_a_proof_must_carry_one_we_handed_out() {
    let (app, client_key) = backend_app(false, |c| c.tokens.dpop_require_nonce = true).await;
    let dpop = DpopKey::generate();
    let first = token_request(&app, &client_key, &[&dpop.proof("POST", TOKEN_URL, app.now(), None)]).await;
    first.assert_error(400, "use_dpop_nonce");
    let nonce = first.header("dpop-nonce").expect("a nonce is handed out").to_owned();

    let mut claims = DpopKey::claims("POST", TOKEN_URL, app.now());
    claims["nonce"] = "made-up".into();
    let made_up = token_request(&app, &client_key, &[&dpop.sign(dpop.header(), claims)]).await;
    made_up.assert_error(400, "use_dpop_nonce");

    let mut claims = DpopKey::claims("POST", TOKEN_URL, app.now());
    claims["nonce"] = nonce.clone().into();
    let reply = token_request(&app, &client_key, &[&dpop.sign(dpop.header(), claims)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["token_type"], "DPoP");
    assert!(reply.header("dpop-nonce").is_some(), "the current nonce travels with the answer");
}

#[tokio::test]
async fn a_public_clients_refresh_token_is_bound_to_its_dpop_key() {
    let app = smart_app().await;
    let launch = register_launch(&app, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let scope = "launch openid patient/*.rs offline_access";
    let reply = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope)])).await;
    let code = code_from(&reply, "st-123");
    let dpop = DpopKey::generate();
    let proof = dpop.proof("POST", TOKEN_URL, app.now(), None);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", crate::support::smart::APP_REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_id", crate::support::smart::APP),
    ];
    let tokens = app.post_form("/token", &form, &[("dpop", &proof)]).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.json()["token_type"], "DPoP");
    let refresh = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let refresh_form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", "viewer")];

    // without a proof, or with another key: refused, and the refresh token is not spent
    app.post_form("/token", &refresh_form, &[]).await.assert_error(400, "invalid_dpop_proof");
    let stranger = DpopKey::generate().proof("POST", TOKEN_URL, app.now(), None);
    app.post_form("/token", &refresh_form, &[("dpop", &stranger)]).await.assert_error(400, "invalid_dpop_proof");

    let proof = dpop.proof("POST", TOKEN_URL, app.now(), None);
    let refreshed = app.post_form("/token", &refresh_form, &[("dpop", &proof)]).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    assert_eq!(jwt_parts(refreshed.json()["access_token"].as_str().unwrap()).1["cnf"]["jkt"], dpop.jkt());
}

#[tokio::test]
async fn discovery_advertises_dpop_algorithms() {
    let app = TestApp::builder().build().await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/fhir/.well-known/smart-configuration",
    ] {
        let doc = app.get(path).await.json();
        let algs = doc["dpop_signing_alg_values_supported"].as_array().unwrap_or_else(|| panic!("{path}"));
        assert!(algs.iter().any(|a| a == "ES256") && !algs.iter().any(|a| a == "none" || a == "HS256"), "{path}");
    }
}

#[tokio::test]
async fn userinfo_takes_a_bound_token_with_a_proof_of_its_key() {
    let app = TestApp::builder().with_dev_users().build().await;
    let dpop = DpopKey::generate();
    let mut claims = crate::support::fhir::user_claims(&app, "openid fhirUser", None);
    claims.cnf = Some(json!({"jkt": dpop.jkt()}));
    let token = crate::support::fhir::token(&app, &claims);
    let url = "http://127.0.0.1:8080/userinfo";
    let ok =
        fhir_get(&app, "/userinfo", &format!("DPoP {token}"), Some(&dpop.proof("GET", url, app.now(), Some(&token))))
            .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["sub"], claims.sub);
    let missing = fhir_get(&app, "/userinfo", &format!("DPoP {token}"), None).await;
    assert_eq!(missing.status, 401);
    assert!(challenge_error(&missing).contains("error=\"invalid_dpop_proof\""));
    let other = DpopKey::generate().proof("GET", url, app.now(), Some(&token));
    assert_eq!(fhir_get(&app, "/userinfo", &format!("DPoP {token}"), Some(&other)).await.status, 401);
    let bearer = fhir_get(&app, "/userinfo", &format!("Bearer {token}"), None).await;
    assert_eq!(bearer.status, 401);
    assert!(challenge_error(&bearer).contains("error=\"invalid_token\""));
}
