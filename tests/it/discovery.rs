//! Discovery documents and the JWKS.

use serde_json::Value;

use crate::support::{FHIR_BASE, ISSUER, TestApp};

fn assert_absolute(doc: &Value, field: &str) {
    let url = doc[field].as_str().unwrap_or_else(|| panic!("{field} missing in {doc}"));
    assert!(url.starts_with(ISSUER), "{field} = {url} is not absolute under the issuer");
}

#[tokio::test]
async fn smart_configuration_has_every_field_and_is_cors_open() {
    let app = TestApp::builder().with_registration().build().await;
    let reply = app
        .request(
            axum::http::Method::GET,
            "/fhir/.well-known/smart-configuration",
            &[("origin", "https://app.example")],
            Vec::new(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let doc = reply.json();
    assert_eq!(doc["issuer"], ISSUER);
    for field in [
        "jwks_uri",
        "authorization_endpoint",
        "token_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
    ] {
        assert_absolute(&doc, field);
    }
    assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert!(doc["grant_types_supported"].as_array().unwrap().iter().any(|g| g == "client_credentials"));
    let caps: Vec<&str> = doc["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(caps.contains(&"client-confidential-asymmetric") && caps.contains(&"permission-v2"));
    let algs = doc["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap();
    assert!(algs.iter().any(|a| a == "RS384") && algs.iter().any(|a| a == "ES384"));
    assert!(doc["token_endpoint_auth_methods_supported"].as_array().unwrap().iter().any(|m| m == "private_key_jwt"));
    assert!(doc["scopes_supported"].is_array() && doc["response_types_supported"].is_array());
}

#[tokio::test]
async fn openid_and_oauth_metadata_are_served_at_the_issuer() {
    let app = TestApp::builder().build().await;
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let reply = app.request(axum::http::Method::GET, path, &[("origin", "https://x.example")], Vec::new()).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        let doc = reply.json();
        assert_eq!(doc["issuer"], ISSUER);
        for field in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
            assert_absolute(&doc, field);
        }
    }
    let oidc = app.get("/.well-known/openid-configuration").await.json();
    assert_eq!(oidc["id_token_signing_alg_values_supported"], serde_json::json!(["RS256", "ES256"]));
    assert_eq!(oidc["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(oidc["response_types_supported"], serde_json::json!(["code"]));
    assert!(FHIR_BASE.starts_with(ISSUER));
}

#[tokio::test]
async fn jwks_publishes_public_keys_only_with_kid_alg_use() {
    let app = TestApp::builder().build().await;
    let reply = app.get("/jwks.json").await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let jwks = reply.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(keys.len() >= 4, "current and next of each chain");
    for key in keys {
        assert!(key["kid"].is_string() && key["alg"].is_string() && key["use"] == "sig", "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "private member {private} published");
        }
    }
    assert!(keys.iter().any(|k| k["alg"] == "ES256") && keys.iter().any(|k| k["alg"] == "RS256"));
}

#[tokio::test]
async fn every_response_carries_security_headers() {
    let app = TestApp::builder().build().await;
    for path in ["/jwks.json", "/nope", "/healthz"] {
        let reply = app.get(path).await;
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert!(
            reply.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")),
            "{path}"
        );
        assert!(reply.header("x-request-id").is_some(), "{path}");
    }
}

#[tokio::test]
async fn smart_capabilities_and_oidc_endpoints_are_advertised() {
    let app = TestApp::builder().build().await;
    let smart = app.get("/fhir/.well-known/smart-configuration").await.json();
    let caps: Vec<&str> = smart["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for cap in [
        "launch-ehr",
        "launch-standalone",
        "authorize-post",
        "client-public",
        "sso-openid-connect",
        "context-ehr-patient",
        "context-standalone-patient",
        "context-banner",
        "context-style",
        "permission-offline",
        "permission-online",
        "permission-patient",
        "permission-user",
    ] {
        assert!(caps.contains(&cap), "{cap} missing");
    }
    let grants = smart["grant_types_supported"].as_array().unwrap();
    for g in ["authorization_code", "client_credentials", "refresh_token"] {
        assert!(grants.iter().any(|x| x == g), "{g}");
    }
    let oidc = app.get("/.well-known/openid-configuration").await.json();
    for field in ["userinfo_endpoint", "end_session_endpoint"] {
        assert_absolute(&oidc, field);
    }
}

#[tokio::test]
async fn pages_may_be_framed_only_by_configured_ehr_origins() {
    let (_, challenge) = crate::support::smart::pkce_pair();
    let path = crate::support::smart::authorize_path(&challenge, &[("client_id", "nobody")]);
    let closed = TestApp::builder().build().await;
    let reply = closed.get(&path).await;
    assert!(reply.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    let open = TestApp::builder()
        .with_config(|c| c.pages.frame_ancestors = vec!["https://ehr.example.nhs.uk".into()])
        .build()
        .await;
    let reply = open.get(&path).await;
    let csp = reply.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors https://ehr.example.nhs.uk"), "{csp}");
    assert!(!csp.contains("'none'; base-uri") || csp.contains("frame-ancestors https://"), "{csp}");
    // pages keep the Origin on form posts (no-referrer would make browsers send `Origin: null`)
    assert_eq!(reply.header("referrer-policy"), Some("same-origin"));
    // API responses are never frameable
    assert!(open.get("/jwks.json").await.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
}
