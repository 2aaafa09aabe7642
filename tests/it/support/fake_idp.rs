//! A scriptable OpenID provider for the rejection matrix: it signs in whoever asks at once and
//! answers with ID tokens whose every property a test can spoil (issuer, audience, nonce, expiry,
//! `alg`, `kid`, signing key, claims, the UserInfo `sub`). Shaped like CIS2 or NHS login as asked.
//! The happy paths also run against a real node-oidc-provider (`tests/idp/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use carebroker::config::idps::{ClaimMapping, IdpConfig};
use carebroker::domain::jwk::{Jwk, JwkSet};
use carebroker::token::jose::{Algorithm, SigningKey, VerifyingKey};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// What the next answers should look like.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    pub issuer: Option<String>,
    pub audience: Option<Value>,
    pub nonce: Option<String>,
    pub exp_offset: Option<i64>,
    pub alg_none: bool,
    pub kid: Option<String>,
    pub foreign_key: bool,
    /// Claims added to (or, with `null`, removed from) the ID token.
    pub id_claims: Map<String, Value>,
    pub userinfo_sub: Option<String>,
    /// An OAuth error to answer the authorization with instead of a code.
    pub authorize_error: Option<String>,
    /// The provider's clock (default: the tests' fixed `T0`, as the relying party under test).
    pub now: Option<i64>,
}

#[derive(Default)]
struct Seen {
    authorize: Vec<Vec<(String, String)>>,
    codes: Vec<(String, Value)>,
}

#[derive(Clone)]
pub struct FakeIdp {
    pub issuer: String,
    pub profile: &'static str,
    pub key: Arc<SigningKey>,
    pub foreign: Arc<SigningKey>,
    pub knobs: Arc<Mutex<Knobs>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    /// The relying party's public key, for private_key_jwt.
    client_jwk: Arc<Mutex<Option<Jwk>>>,
}

pub const CLIENT_ID: &str = "carebroker-rp";
pub const CLIENT_SECRET: &str = "rp-secret-rp-secret";

fn key(alg: Algorithm) -> SigningKey {
    SigningKey::from_pkcs8(alg, &SigningKey::generate_pkcs8(alg).expect("keygen")).expect("key")
}

/// A PKCS#8 PEM file for `key_der`, written to `dir`.
pub fn write_pem(dir: &std::path::Path, name: &str, der: &[u8]) -> std::path::PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<String> = b64.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let path = dir.join(name);
    std::fs::write(&path, format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", body.join("\n")))
        .expect("pem");
    path
}

impl FakeIdp {
    /// Starts a provider shaped like `profile` (`oidc`, `cis2`, `nhs_login`).
    pub async fn start(profile: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let alg = if profile == "nhs_login" { Algorithm::RS512 } else { Algorithm::RS256 };
        let idp = Self {
            issuer,
            profile,
            key: Arc::new(key(alg)),
            foreign: Arc::new(key(alg)),
            knobs: Arc::default(),
            jwks_fetches: Arc::default(),
            seen: Arc::default(),
            client_jwk: Arc::default(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(idp.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        idp
    }

    /// The provider file carebroker would load for this provider. For NHS login a private key
    /// is made in `dir` and its public half registered here.
    pub fn config(&self, id: &str, dir: &std::path::Path) -> IdpConfig {
        let mut config = IdpConfig {
            id: id.into(),
            kind: self.profile.parse().unwrap(),
            name: format!("{} test provider", self.profile),
            issuer: self.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: None,
            client_secret_file: None,
            private_key_file: None,
            private_key_alg: None,
            scopes: vec!["openid".into(), "profile".into()],
            id_token_algs: Vec::new(),
            use_userinfo: Some(true),
            discovery_cache_secs: 3600,
            dev_only: false,
            claims: ClaimMapping::default(),
            acr_values: Some("AAL3_ANY".into()),
            min_authentication_assurance_level: 3,
            min_id_assurance_level: 3,
            max_auth_age_secs: 300,
            select_role: true,
            vtr: Vec::new(),
            session_idle_secs: None,
            session_absolute_secs: None,
            backchannel_logout: true,
            ..Default::default()
        };
        if self.profile == "nhs_login" {
            let der = SigningKey::generate_pkcs8(Algorithm::RS512).expect("keygen");
            let rp = SigningKey::from_pkcs8(Algorithm::RS512, &der).expect("key");
            *self.client_jwk.lock() = Some(rp.public_jwk());
            config.private_key_file = Some(write_pem(dir, &format!("{id}-rp.pem"), &der));
            config.private_key_alg = Some("RS512".into());
            config.use_userinfo = Some(false);
        } else {
            config.client_secret = Some(carebroker::config::Secret::new(CLIENT_SECRET));
        }
        config
    }

    pub fn set(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut self.knobs.lock());
    }

    /// The query parameters of the last authorization request.
    pub fn last_authorize(&self) -> Vec<(String, String)> {
        self.seen.lock().authorize.last().cloned().unwrap_or_default()
    }

    fn base_claims(&self, nonce: &str, now: i64) -> Map<String, Value> {
        let mut c = json!({"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "auth_time": now - 5, "nonce": nonce, "sid": "upstream-sid-1"});
        match self.profile {
            "cis2" => {
                c["sub"] = json!("555057896106");
                c["acr"] = json!("AAL3_ANY");
                c["amr"] = json!(["N3_SMARTCARD"]);
                c["authentication_assurance_level"] = json!("3");
                c["id_assurance_level"] = json!(3);
                c["selected_roleid"] = json!("555254242102");
            }
            "nhs_login" => {
                c["sub"] = json!("nhslogin-8dc9fc1d");
                c["vot"] = json!("P9.Cp.Cd");
                c["vtm"] = json!(format!("{}/trustmark", self.issuer));
                c["identity_proofing_level"] = json!("P9");
                c["nhs_number"] = json!("9434765919");
                c["birthdate"] = json!("1942-03-14");
                c["family_name"] = json!("PATIENT");
            }
            _ => {
                c["sub"] = json!("alice-1");
                c["name"] = json!("Alice Example");
                c["fhirUser"] = json!("Practitioner/pr-alice");
                c["org"] = json!("A9A5A");
                c["roles"] = json!(["R8000"]);
            }
        }
        c.as_object().cloned().unwrap_or_default()
    }

    /// An ID token as the provider issued it to someone else's sign-in (no nonce of ours), as an
    /// EHR would hold it; `change` edits the claims (`null` removes one).
    pub fn held_id_token(&self, now: i64, change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut claims = self.base_claims("", now);
        claims.remove("nonce");
        change(&mut claims);
        claims.retain(|_, v| !v.is_null());
        self.sign(&Value::Object(claims), &self.knobs.lock().clone())
    }

    /// Signs `claims` as this provider would (or as the knobs spoil it).
    pub fn sign(&self, claims: &Value, knobs: &Knobs) -> String {
        if knobs.alg_none {
            let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            return format!("{}.{}.", e(&json!({"alg": "none", "typ": "JWT"})), e(claims));
        }
        let signer = if knobs.foreign_key { &self.foreign } else { &self.key };
        let kid = knobs.kid.clone().unwrap_or_else(|| self.key.kid.clone());
        signer
            .sign_with_header(&json!({"alg": signer.algorithm.as_str(), "kid": kid, "typ": "JWT"}), claims)
            .expect("sign")
    }

    /// A back-channel logout token for `sid` (spoilable with the same knobs).
    pub fn logout_token(&self, sid: &str, now: i64, change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut claims = json!({"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": carebroker::token::random_token(12),
            "sid": sid, "events": {"http://schemas.openid.net/event/backchannel-logout": {}}})
        .as_object()
        .cloned()
        .unwrap_or_default();
        change(&mut claims);
        self.sign(&Value::Object(claims), &self.knobs.lock().clone())
    }
}

async fn discovery(State(idp): State<FakeIdp>) -> Response {
    let i = &idp.issuer;
    axum::Json(json!({"issuer": i, "authorization_endpoint": format!("{i}/authorize"), "token_endpoint": format!("{i}/token"),
        "userinfo_endpoint": format!("{i}/userinfo"), "jwks_uri": format!("{i}/jwks"), "response_types_supported": ["code"],
        "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": [idp.key.algorithm.as_str()]}))
    .into_response()
}

async fn jwks(State(idp): State<FakeIdp>) -> Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(JwkSet { keys: vec![idp.key.public_jwk()] }).into_response()
}

async fn authorize(State(idp): State<FakeIdp>, Query(params): Query<Vec<(String, String)>>) -> Response {
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    idp.seen.lock().authorize.push(params.clone());
    let redirect_uri = get("redirect_uri");
    let state = get("state");
    let mut target = url::Url::parse(&redirect_uri).expect("redirect_uri");
    if let Some(error) = idp.knobs.lock().authorize_error.clone() {
        target.query_pairs_mut().append_pair("error", &error).append_pair("state", &state);
        return Redirect::to(target.as_str()).into_response();
    }
    let code = carebroker::token::random_token(16);
    idp.seen.lock().codes.push((
        code.clone(),
        json!({"nonce": get("nonce"), "challenge": get("code_challenge"), "redirect_uri": redirect_uri}),
    ));
    target.query_pairs_mut().append_pair("code", &code).append_pair("state", &state);
    Redirect::to(target.as_str()).into_response()
}

fn bad(why: &str) -> Response {
    (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant", "error_description": why})))
        .into_response()
}

async fn token(State(idp): State<FakeIdp>, headers: HeaderMap, body: String) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    // client authentication as the provider requires
    let client_jwk = idp.client_jwk.lock().clone();
    if let Some(jwk) = client_jwk {
        let assertion = get("client_assertion");
        let Ok(jws) = carebroker::token::jose::decode(&assertion, &[Algorithm::RS512]) else {
            return bad("client assertion must be RS512");
        };
        let Ok(key) = VerifyingKey::from_jwk(&jwk, Algorithm::RS512) else { return bad("rp key") };
        let Ok(payload) = jws.verify(&key) else { return bad("client assertion signature") };
        let claims: Value = serde_json::from_slice(&payload).unwrap_or_default();
        if claims["iss"] != CLIENT_ID
            || claims["sub"] != CLIENT_ID
            || claims["aud"] != format!("{}/token", idp.issuer)
            || claims["jti"].as_str().is_none()
        {
            return bad("client assertion claims");
        }
    } else {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return bad("client authentication");
        }
    }
    let code = get("code");
    let record = {
        let mut seen = idp.seen.lock();
        let i = seen.codes.iter().position(|(c, _)| *c == code);
        i.map(|i| seen.codes.remove(i).1)
    };
    let Some(record) = record else { return bad("unknown code") };
    if carebroker::domain::pkce::s256(&get("code_verifier")) != record["challenge"].as_str().unwrap_or_default()
        || get("redirect_uri") != record["redirect_uri"]
    {
        return bad("pkce or redirect_uri");
    }
    let knobs = idp.knobs.lock().clone();
    // The relying party under test runs on a fixed clock at T0.
    let now = idp.knobs.lock().now.unwrap_or(crate::support::T0);
    let mut claims = idp.base_claims(record["nonce"].as_str().unwrap_or_default(), now);
    if let Some(i) = &knobs.issuer {
        claims.insert("iss".into(), json!(i));
    }
    if let Some(a) = &knobs.audience {
        claims.insert("aud".into(), a.clone());
    }
    if let Some(n) = &knobs.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    if let Some(off) = knobs.exp_offset {
        claims.insert("exp".into(), json!(now + off));
    }
    for (k, v) in &knobs.id_claims {
        if v.is_null() {
            claims.remove(k);
        } else {
            claims.insert(k.clone(), v.clone());
        }
    }
    let id_token = idp.sign(&Value::Object(claims), &knobs);
    axum::Json(json!({"access_token": format!("at-{}", idp.profile), "token_type": "Bearer", "expires_in": 300, "id_token": id_token})).into_response()
}

async fn userinfo(State(idp): State<FakeIdp>) -> Response {
    let knobs = idp.knobs.lock().clone();
    let mut info = match idp.profile {
        "cis2" => json!({
            "sub": "555057896106", "uid": "555057896106", "name": "Nurse Test", "idassurancelevel": "3",
            "nhsid_user_orgs": [{"org_code": "A9A5A", "org_name": "ST ELSEWHERE"}, {"org_code": "AB12", "org_name": "LAVENDER TOWN HEALTH"}],
            "nhsid_nrbac_roles": [
                {"person_orgid": "1111222233334444", "person_roleid": "555254242102", "org_code": "A9A5A",
                 "role_name": "\"Clinical\":\"Clinical Provision\":\"Nurse Access Role\"", "role_code": "S8000:G8000:R8001",
                 "activities": ["View Detailed Health Records"], "activity_codes": ["B0360"]},
                {"person_orgid": "1234123412341234", "person_roleid": "555254242199", "org_code": "AB12",
                 "role_name": "\"Clinical\":\"Clinical Provision\":\"Healthcare Student Access Role\"", "role_code": "S8000:G8000:R8004",
                 "activities": [], "activity_codes": []}
            ]
        }),
        "nhs_login" => json!({"sub": "nhslogin-8dc9fc1d", "nhs_number": "9434765919"}),
        _ => json!({"sub": "alice-1", "email": "alice@example.org"}),
    };
    if let Some(sub) = knobs.userinfo_sub {
        info["sub"] = json!(sub);
    }
    axum::Json(info).into_response()
}
