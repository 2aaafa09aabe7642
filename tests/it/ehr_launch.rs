//! EHR launch in context: `POST /launch`, then an authorization with that `launch` that signs
//! the EHR's user in with no password and carries the registered context into the token.

use serde_json::{Value, json};

use crate::support::smart::*;
use crate::support::{FHIR_BASE, TestApp};

#[tokio::test]
async fn an_ehr_launch_opens_the_app_with_its_context_and_no_password() {
    let app = smart_app().await;
    let reply = post_launch(&app, &launch_body()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["expires_in"], 300);
    let launch = body["launch"].as_str().unwrap();
    let launch_url = url::Url::parse(body["launch_url"].as_str().unwrap()).unwrap();
    assert_eq!(launch_url.as_str().split('?').next(), Some("https://viewer.example/launch"));
    let q: std::collections::HashMap<_, _> = launch_url.query_pairs().into_owned().collect();
    assert_eq!(q["iss"], FHIR_BASE);
    assert_eq!(q["launch"], launch);

    let (verifier, challenge) = pkce_pair();
    let reply = app
        .get(&authorize_path(
            &challenge,
            &[("launch", launch), ("scope", "launch openid fhirUser patient/*.rs online_access"), ("aud", &q["iss"])],
        ))
        .await;
    assert_eq!(reply.status, 302, "no sign-in, no consent: straight back to the app");
    let code = code_from(&reply, "st-123");
    let tokens = exchange(&app, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let t = tokens.json();
    assert_eq!(t["patient"], "9434765919");
    assert_eq!(t["encounter"], "enc-1");
    assert_eq!(t["fhirContext"], launch_body()["fhir_context"]);
    assert_eq!(t["need_patient_banner"], false);
    assert_eq!(t["intent"], "reconcile-plan");
    assert_eq!(t["smart_style_url"], "https://ehr.example/style.json");
    assert_eq!(t["tenant"], "A9A5A");
    assert_eq!(t["scope"], "launch openid fhirUser patient/*.rs online_access");
    let (_, id) = crate::support::jwt_parts(t["id_token"].as_str().unwrap());
    assert_eq!(id["fhirUser"], format!("{FHIR_BASE}/Practitioner/pr-nurse-1"));
    assert_eq!(id["sub"], "ehr:ehr:u-555");
    let (_, access) = crate::support::jwt_parts(t["access_token"].as_str().unwrap());
    assert_eq!(access["patient"], "9434765919");
    assert_eq!(access["org"], "A9A5A");
    assert_eq!(access["roles"], json!(["R8001"]));
}

#[tokio::test]
async fn a_launch_is_single_use_short_lived_and_bound_to_its_app() {
    let app = TestApp::builder()
        .with_client(public_app())
        .with_client(trusted_ehr())
        .with_client({
            let mut other = public_app();
            other.client_id = "other-app".into();
            other
        })
        .build()
        .await;
    let (_, challenge) = pkce_pair();
    let scope = "launch openid patient/*.rs";

    let launch = register_launch(&app, launch_body()).await;
    let first = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope)])).await;
    code_from(&first, "st-123");
    let second = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope)])).await;
    assert_eq!(error_from(&second, Some("st-123")), "invalid_request", "single use");

    let launch = register_launch(&app, launch_body()).await;
    let other = app
        .get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope), ("client_id", "other-app")]))
        .await;
    assert_eq!(error_from(&other, Some("st-123")), "invalid_request", "bound to the app it was registered for");

    let launch = register_launch(&app, launch_body()).await;
    app.clock.advance(301);
    let late = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope)])).await;
    assert_eq!(error_from(&late, Some("st-123")), "invalid_request", "expired after 5 minutes");
}

#[tokio::test]
async fn launch_registration_refuses_what_the_ehr_may_not_vouch_for() {
    let app = smart_app().await;
    let with = |path: &[&str], value: Value| {
        let mut body = launch_body();
        let mut node = &mut body;
        for part in &path[..path.len() - 1] {
            node = &mut node[*part];
        }
        if value.is_null() {
            node.as_object_mut().unwrap().remove(path[path.len() - 1]);
        } else {
            node[path[path.len() - 1]] = value;
        }
        body
    };
    let cases = [
        (with(&["patient"], json!("9434765918")), 400, "invalid_request"),
        (with(&["patient"], json!("94347659")), 400, "invalid_request"),
        (with(&["patient"], Value::Null), 400, "invalid_request"),
        (with(&["client_id"], json!("nobody")), 400, "invalid_request"),
        (with(&["encounter"], json!("not an id!")), 400, "invalid_request"),
        (with(&["fhir_context"], json!(["CarePlan/1"])), 400, "invalid_request"),
        (with(&["smart_style_url"], json!("http://evil.example/style.json")), 400, "invalid_request"),
        (with(&["surprise"], json!(1)), 400, "invalid_request"),
        (with(&["user", "fhir_user"], json!("Organization/x")), 400, "invalid_request"),
        (with(&["user", "sub"], json!("")), 400, "invalid_request"),
        (with(&["user", "org"], json!("ZZZ99")), 403, "access_denied"),
        (with(&["user", "role_codes"], json!(["R8001", "R9999"])), 403, "access_denied"),
    ];
    for (body, status, code) in cases {
        let reply = post_launch(&app, &body).await;
        assert_eq!(
            (reply.status.as_u16(), reply.json()["error"].as_str().unwrap().to_owned()),
            (status, code.to_owned()),
            "{body}"
        );
        assert!(reply.json().get("launch").is_none());
    }
}

#[tokio::test]
async fn only_an_authenticated_trusted_ehr_may_register_launches() {
    let app = smart_app().await;
    let body = launch_body().to_string().into_bytes();
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let app = &app;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.request(axum::http::Method::POST, "/launch", &h, body).await
        }
    };
    let json = ("content-type", "application/json".to_owned());
    post(vec![json.clone()], body.clone()).await.assert_error(401, "invalid_client");
    use base64::Engine as _;
    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{EHR}:wrong")));
    post(vec![json.clone(), ("authorization", wrong)], body.clone()).await.assert_error(401, "invalid_client");
    // a public app naming itself is not an EHR
    let mut as_app = launch_body();
    as_app["client_id_ehr"] = json!(APP);
    post(vec![json.clone()], as_app.to_string().into_bytes()).await.assert_error(401, "invalid_client");
    // a confidential client without ehr_launch trust
    let untrusted = TestApp::builder()
        .with_client(public_app())
        .with_client(crate::support::keys::secret_client("other", "client_secret_basic", "other-secret"))
        .build()
        .await;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("other:other-secret"));
    let reply = untrusted
        .request(
            axum::http::Method::POST,
            "/launch",
            &[("content-type", "application/json"), ("authorization", &basic)],
            body.clone(),
        )
        .await;
    reply.assert_error(403, "unauthorized_client");
    // not JSON
    post(vec![("content-type", "text/plain".into()), ("authorization", ehr_basic())], body)
        .await
        .assert_error(400, "invalid_request");
}

/// A client that registered `id_token_signed_response_alg = ES256` gets ES256 ID tokens (at the
/// code exchange and at every refresh), verifiable with the published JWKS; an access token,
/// signed by the same ES256 key, is still never taken for an ID token (logout hint); an
/// algorithm carebroker does not offer is refused at registration.
#[tokio::test]
async fn a_client_may_ask_for_es256_id_tokens_and_no_access_token_passes_as_one() {
    let mut es256_app = public_app();
    es256_app.id_token_signed_response_alg = Some("ES256".into());
    let app = TestApp::builder().with_client(es256_app).with_client(trusted_ehr()).with_dev_users().build().await;
    let launch = register_launch(&app, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let scope = "launch openid fhirUser patient/*.rs offline_access";
    let reply = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope)])).await;
    let tokens = exchange(&app, &code_from(&reply, "st-123"), &verifier).await.json();
    let refreshed = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", APP),
            ],
            &[],
        )
        .await
        .json();
    let jwks: carebroker::domain::jwk::JwkSet = serde_json::from_value(app.get("/jwks.json").await.json()).unwrap();
    for id_token in [tokens["id_token"].as_str().unwrap(), refreshed["id_token"].as_str().unwrap()] {
        let jws = carebroker::token::jose::decode(id_token, &[carebroker::token::jose::Algorithm::ES256]).unwrap();
        assert_eq!(jws.header.typ.as_deref(), Some("JWT"));
        let jwk = jwks.keys.iter().find(|k| k.kid.as_deref() == jws.header.kid.as_deref()).expect("published");
        let key =
            carebroker::token::jose::VerifyingKey::from_jwk(jwk, carebroker::token::jose::Algorithm::ES256).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&jws.verify(&key).expect("verifies")).unwrap();
        assert_eq!(claims["aud"], APP);
    }
    // an access token (ES256, typ at+jwt) is no ID token hint
    use carebroker::oauth::oidc::verify_id_token_hint;
    assert!(verify_id_token_hint(&app.state, tokens["id_token"].as_str().unwrap()).is_some());
    assert!(verify_id_token_hint(&app.state, tokens["access_token"].as_str().unwrap()).is_none());
    // and only RS256 and ES256 may be registered
    let mut hs = public_app();
    hs.id_token_signed_response_alg = Some("HS256".into());
    let problems = hs.validate().unwrap_err();
    assert!(problems.iter().any(|p| p.field == "id_token_signed_response_alg"), "{problems:?}");
}
