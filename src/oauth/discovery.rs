//! Discovery documents: SMART configuration (SMART App Launch 2.2 conformance, every field of
//! `reference/smart.md` §1), OpenID Connect Discovery 1.0 and RFC 8414 metadata. Absolute URLs,
//! `S256` only.

use serde_json::{Value, json};

use super::client_auth::CLIENT_ASSERTION_ALGS;
use super::grants::ENABLED;
use crate::app::App;
use crate::domain::client::AuthMethod;

/// SMART capabilities this server has.
pub const CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
];

/// Every scope listed is supported (SMART: servers SHALL support every scope in scopes_supported).
const SCOPES_SUPPORTED: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.rs",
    "user/*.cruds",
    "user/*.read",
    "system/*.rs",
    "system/*.read",
];

const CLAIMS_SUPPORTED: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "at_hash",
    "sid",
    "fhirUser",
    "name",
];

fn grant_types() -> Vec<&'static str> {
    ENABLED.iter().map(|g| g.as_str()).collect()
}

/// Client authentication methods; `none` (public clients) where the endpoint accepts them.
fn auth_methods(public: bool) -> Vec<&'static str> {
    AuthMethod::ALL.iter().filter(|m| public || **m != AuthMethod::None).map(|m| m.as_str()).collect()
}

fn signing_algs() -> Vec<&'static str> {
    CLIENT_ASSERTION_ALGS.iter().map(|a| a.as_str()).collect()
}

fn insert_optional(doc: &mut Value, app: &App) {
    // RFC 9449 §5.1: DPoP proofs accepted at the token endpoint (and by the FHIR API).
    doc["dpop_signing_alg_values_supported"] = crate::token::dpop::ALGORITHMS.map(|a| a.as_str()).to_vec().into();
    // RFC 9126 §5: pushed authorization requests (required per client, not for every client).
    doc["pushed_authorization_request_endpoint"] = app.config.endpoint("/par").into();
    doc["require_pushed_authorization_requests"] = false.into();
    if app.registration_enabled() {
        doc["registration_endpoint"] = Value::String(app.config.endpoint("/register"));
    }
}

/// `{fhir_base}/.well-known/smart-configuration`.
pub fn smart_configuration(app: &App) -> Value {
    let c = &app.config;
    let mut doc = json!({
        "issuer": app.issuer(),
        "jwks_uri": c.endpoint("/jwks.json"),
        "authorization_endpoint": c.endpoint("/authorize"),
        "token_endpoint": app.token_endpoint(),
        "grant_types_supported": grant_types(),
        "token_endpoint_auth_methods_supported": auth_methods(true),
        "token_endpoint_auth_signing_alg_values_supported": signing_algs(),
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "introspection_endpoint": c.endpoint("/introspect"),
        "revocation_endpoint": c.endpoint("/revoke"),
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    });
    insert_optional(&mut doc, app);
    doc
}

/// RFC 8414 `/.well-known/oauth-authorization-server`.
pub fn authorization_server_metadata(app: &App) -> Value {
    let c = &app.config;
    let mut doc = json!({
        "issuer": app.issuer(),
        "authorization_endpoint": c.endpoint("/authorize"),
        "token_endpoint": app.token_endpoint(),
        "jwks_uri": c.endpoint("/jwks.json"),
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types(),
        "token_endpoint_auth_methods_supported": auth_methods(true),
        "token_endpoint_auth_signing_alg_values_supported": signing_algs(),
        "introspection_endpoint": c.endpoint("/introspect"),
        "introspection_endpoint_auth_methods_supported": auth_methods(false),
        "revocation_endpoint": c.endpoint("/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods(true),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    });
    insert_optional(&mut doc, app);
    doc
}

/// OpenID Connect Discovery 1.0 `/.well-known/openid-configuration`: RFC 8414 plus the OIDC
/// required members.
pub fn openid_configuration(app: &App) -> Value {
    let c = &app.config;
    let mut doc = authorization_server_metadata(app);
    doc["subject_types_supported"] = json!(["public"]);
    doc["id_token_signing_alg_values_supported"] = json!(crate::domain::client::ID_TOKEN_ALGS);
    doc["userinfo_endpoint"] = Value::String(c.endpoint("/userinfo"));
    doc["end_session_endpoint"] = Value::String(c.endpoint("/logout"));
    doc["claims_supported"] = json!(CLAIMS_SUPPORTED);
    doc["prompt_values_supported"] = json!(["none", "login", "consent"]);
    doc["request_parameter_supported"] = Value::Bool(false);
    doc["request_uri_parameter_supported"] = Value::Bool(false);
    doc["claims_parameter_supported"] = Value::Bool(false);
    doc
}
