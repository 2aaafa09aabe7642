//! Token exchange (RFC 8693): a partner app turns a token it holds into a narrowed carebroker
//! token with the patient in context and the actor recorded, and every way that is refused.

use serde_json::{Value, json};

use crate::support::fake_idp::FakeIdp;
use crate::support::fhir::{get, token as mint_token, user_claims};
use crate::support::keys::secret_client;
use crate::support::smart::{launch_body, public_app, register_launch, trusted_ehr};
use crate::support::{FHIR_BASE, Reply, T0, TestApp, jwt_parts};

const PARTNER: &str = "partner";
const SECRET: &str = "partner-secret-partner-secret-0123";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID: &str = "urn:ietf:params:oauth:token-type:id_token";
const PATIENT: &str = "9434765919";

fn partner(types: &[&str]) -> carebroker::domain::client::ClientMetadata {
    let mut client = secret_client(PARTNER, "client_secret_post", SECRET);
    client.grant_types = vec![GRANT.into()];
    client.redirect_uris = Vec::new();
    client.scope = "patient/*.rs user/*.rs".into();
    client.token_exchange_subject_token_types = types.iter().map(|t| (*t).to_owned()).collect();
    client.launch_uri = Some("https://partner.example/launch".into());
    client
}

async fn partner_app(types: &[&str]) -> TestApp {
    TestApp::builder().with_client(partner(types)).with_dev_users().build().await
}

async fn exchange(app: &TestApp, fields: &[(&str, &str)]) -> Reply {
    let mut form = vec![("grant_type", GRANT), ("client_id", PARTNER), ("client_secret", SECRET)];
    form.extend_from_slice(fields);
    app.post_form("/token", &form, &[]).await
}

/// A token of ours for `sub`, to act with.
fn actor_token(app: &TestApp, sub: &str) -> String {
    let mut claims = user_claims(app, "user/*.rs", None);
    claims.sub = sub.into();
    mint_token(app, &claims)
}

async fn exchange_with_actor(app: &TestApp, subject: &str, actor: &str) -> Reply {
    let fields = [
        ("subject_token", subject),
        ("subject_token_type", ACCESS),
        ("actor_token", actor),
        ("actor_token_type", ACCESS),
    ];
    exchange(app, &fields).await
}

fn nurse_token(app: &TestApp, scope: &str) -> (String, carebroker::token::access::AccessTokenClaims) {
    let claims = user_claims(app, scope, Some(PATIENT));
    (mint_token(app, &claims), claims)
}

#[tokio::test]
async fn an_access_token_is_exchanged_for_a_narrower_one_that_keeps_the_patient_and_reads_the_plan() {
    let app = partner_app(&[ACCESS]).await;
    let (subject, subject_claims) = nurse_token(&app, "patient/*.rs");
    let reply = exchange(
        &app,
        &[
            ("subject_token", &subject),
            ("subject_token_type", ACCESS),
            ("scope", "patient/Patient.rs"),
            ("resource", FHIR_BASE),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["issued_token_type"], ACCESS);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "patient/Patient.rs");
    assert_eq!(body["patient"], PATIENT);
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let (_, claims) = jwt_parts(token);
    assert_eq!(claims["sub"], subject_claims.sub);
    assert_eq!(claims["client_id"], PARTNER);
    assert!(claims["exp"].as_i64().unwrap() <= subject_claims.exp, "never outlives the subject token");
    assert_eq!(get(&app, token, &format!("/fhir/Patient/{PATIENT}")).await.status, 200);
    // the narrowed token reads nothing else
    assert_eq!(get(&app, token, &format!("/fhir/CarePlan?patient={PATIENT}")).await.status, 403);

    // audited with the subject token type and issuer
    let records = app.state.stores.durable.audit_records(0, 1000).await.unwrap();
    let exchanged = records
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.data).ok())
        .find(|e| e["kind"] == "token-exchange" && e["outcome"] == "success")
        .expect("the exchange is audited");
    assert!(exchanged.to_string().contains(ACCESS), "{exchanged}");
}

#[tokio::test]
async fn an_exchange_is_never_wider_than_the_subject_token() {
    let app = partner_app(&[ACCESS]).await;
    let (subject, _) = nurse_token(&app, "patient/CarePlan.rs");
    let reply =
        exchange(&app, &[("subject_token", &subject), ("subject_token_type", ACCESS), ("scope", "patient/Patient.rs")])
            .await;
    reply.assert_error(400, "invalid_scope");
    let wider = exchange(
        &app,
        &[
            ("subject_token", &subject),
            ("subject_token_type", ACCESS),
            ("scope", "patient/CarePlan.cruds patient/Patient.rs"),
        ],
    )
    .await;
    assert_eq!(wider.status, 200, "{}", wider.text());
    assert_eq!(wider.json()["scope"], "patient/CarePlan.rs", "narrowed to what the subject had");
}

#[tokio::test]
async fn bad_subject_tokens_and_targets_are_refused_and_nothing_is_issued() {
    let app = partner_app(&[ACCESS]).await;
    let (good, _) = nurse_token(&app, "patient/*.rs");
    let mut expired = user_claims(&app, "patient/*.rs", Some(PATIENT));
    expired.exp = app.now() - 10;
    let expired = mint_token(&app, &expired);
    let (revoked, revoked_claims) = nurse_token(&app, "patient/*.rs");
    app.state.stores.durable.revoke(&revoked_claims.jti, app.now() + 600).await.unwrap();
    let foreign = {
        let other = carebroker::token::jose::SigningKey::from_pkcs8(
            carebroker::token::jose::Algorithm::ES256,
            &carebroker::token::jose::SigningKey::generate_pkcs8(carebroker::token::jose::Algorithm::ES256).unwrap(),
        )
        .unwrap();
        other.sign("at+jwt", &user_claims(&app, "patient/*.rs", Some(PATIENT))).unwrap()
    };
    let none = {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt"})),
            b64(&serde_json::to_value(user_claims(&app, "patient/*.rs", None)).unwrap())
        )
    };
    for (fields, status, error) in [
        (vec![("subject_token", expired.as_str()), ("subject_token_type", ACCESS)], 400, "invalid_request"),
        (vec![("subject_token", revoked.as_str()), ("subject_token_type", ACCESS)], 400, "invalid_request"),
        (vec![("subject_token", foreign.as_str()), ("subject_token_type", ACCESS)], 400, "invalid_request"),
        (vec![("subject_token", none.as_str()), ("subject_token_type", ACCESS)], 400, "invalid_request"),
        (vec![("subject_token", good.as_str())], 400, "invalid_request"),
        (vec![("subject_token", good.as_str()), ("subject_token_type", ID)], 400, "unauthorized_client"),
        (vec![("subject_token", good.as_str()), ("subject_token_type", "urn:x:unknown")], 400, "invalid_request"),
        (
            vec![
                ("subject_token", good.as_str()),
                ("subject_token_type", ACCESS),
                ("resource", "https://other.example/fhir"),
            ],
            400,
            "invalid_target",
        ),
        (
            vec![("subject_token", good.as_str()), ("subject_token_type", ACCESS), ("audience", "somewhere-else")],
            400,
            "invalid_target",
        ),
        (
            vec![("subject_token", good.as_str()), ("subject_token_type", ACCESS), ("requested_token_type", ID)],
            400,
            "invalid_request",
        ),
        (
            vec![("subject_token", good.as_str()), ("subject_token_type", ACCESS), ("actor_token", good.as_str())],
            400,
            "invalid_request",
        ),
    ] {
        let reply = exchange(&app, &fields).await;
        reply.assert_error(status, error);
        assert!(reply.json().get("access_token").is_none(), "{fields:?}");
    }
    // a client not allowed the grant
    let mut other = secret_client("plain", "client_secret_post", SECRET);
    other.grant_types = vec!["authorization_code".into()];
    let app = TestApp::builder().with_client(other).build().await;
    let form = [
        ("grant_type", GRANT),
        ("client_id", "plain"),
        ("client_secret", SECRET),
        ("subject_token", &good),
        ("subject_token_type", ACCESS),
    ];
    app.post_form("/token", &form, &[]).await.assert_error(400, "unauthorized_client");
}

#[tokio::test]
async fn an_actor_is_recorded_in_act_and_may_act_admits_only_its_actor() {
    let app = partner_app(&[ACCESS]).await;
    let (subject, _) = nurse_token(&app, "patient/*.rs");
    let actor = actor_token(&app, "dev:doctor");
    let reply = exchange_with_actor(&app, &subject, &actor).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_parts(&token).1["act"], json!({"sub": "dev:doctor", "iss": app.state.issuer()}));

    // introspection shows who acts
    let form = [("client_id", PARTNER), ("client_secret", SECRET), ("token", token.as_str())];
    let introspected = app.post_form("/introspect", &form, &[]).await.json();
    assert_eq!(introspected["act"]["sub"], "dev:doctor", "{introspected}");

    // a chain: the delegated token delegated again nests the earlier actor
    let third = actor_token(&app, "dev:auditor");
    let chained = exchange_with_actor(&app, &token, &third).await;
    assert_eq!(chained.status, 200, "{}", chained.text());
    let act = &jwt_parts(chained.json()["access_token"].as_str().unwrap()).1["act"];
    assert_eq!(act["sub"], "dev:auditor");
    assert_eq!(act["act"]["sub"], "dev:doctor", "the earlier actor is nested: {act}");

    // may_act names someone else: refused
    let mut guarded = user_claims(&app, "patient/*.rs", Some(PATIENT));
    guarded.may_act = Some(json!({"sub": "dev:carer"}));
    let guarded = mint_token(&app, &guarded);
    exchange_with_actor(&app, &guarded, &actor).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn an_upstream_id_token_and_an_ehr_launch_give_a_patient_scoped_token() {
    let idp = FakeIdp::start("oidc").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = idp.config("trust-idp", dir.path());
    config.accept_presented_tokens = true;
    let not_accepted = TestApp::builder()
        .with_client(partner(&[ID]))
        .with_idp(config.clone())
        .with_dir(tempfile::tempdir().unwrap())
        .build()
        .await;
    config.accept_exchange = true;
    let mut ehr = trusted_ehr();
    ehr.ehr_launch.as_mut().unwrap().apps.push(PARTNER.into());
    let app = TestApp::builder()
        .with_client(partner(&[ID]))
        .with_client(public_app())
        .with_client(ehr)
        .with_idp(config)
        .with_dir(dir)
        .build()
        .await;
    let id_token = idp.held_id_token(T0, |_| {});

    // the provider file must allow exchange
    exchange(&not_accepted, &[("subject_token", &id_token), ("subject_token_type", ID)])
        .await
        .assert_error(400, "invalid_request");

    // the EHR registers a launch for this user (presenting the same ID token) and this partner app
    let mut body = launch_body();
    body.as_object_mut().unwrap().remove("user");
    body["client_id"] = PARTNER.into();
    body["id_token"] = id_token.clone().into();
    let launch = register_launch(&app, body).await;
    let reply = exchange(&app, &[("subject_token", &id_token), ("subject_token_type", ID), ("launch", &launch)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["patient"], PATIENT);
    assert_eq!(answer["encounter"], "enc-1");
    let (_, claims) = jwt_parts(answer["access_token"].as_str().unwrap());
    assert!(claims["sub"].as_str().unwrap().starts_with("trust-idp:"), "{claims}");
    assert!(claims["amr"].to_string().contains("token-exchange"), "{claims}");
    assert_eq!(claims["client_id"], PARTNER);

    // the launch is single use; a tampered ID token is refused
    exchange(&app, &[("subject_token", &id_token), ("subject_token_type", ID), ("launch", &launch)])
        .await
        .assert_error(400, "invalid_request");
    let tampered = idp.held_id_token(T0, |c| {
        c.insert("aud".into(), json!("someone-else"));
    });
    exchange(&app, &[("subject_token", &tampered), ("subject_token_type", ID)])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_dpop_bound_subject_token_is_exchanged_only_with_a_proof_of_its_key() {
    use carebroker::token::jose::{Algorithm, SigningKey, thumbprint};
    let app = partner_app(&[ACCESS]).await;
    let key = SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap();
    let mut claims = user_claims(&app, "patient/*.rs", Some(PATIENT));
    claims.cnf = Some(json!({"jkt": thumbprint(&key.public_jwk())}));
    let bound = mint_token(&app, &claims);
    let fields = [("subject_token", bound.as_str()), ("subject_token_type", ACCESS)];
    exchange(&app, &fields).await.assert_error(400, "invalid_request");
    let proof = |key: &SigningKey| {
        let header = json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": key.public_jwk()});
        let claims = json!({"jti": carebroker::token::random_token(8), "htm": "POST", "htu": crate::support::TOKEN_URL, "iat": app.now()});
        key.sign_with_header(&header, &claims).unwrap()
    };
    let other =
        SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap();
    let mut form = vec![("grant_type", GRANT), ("client_id", PARTNER), ("client_secret", SECRET)];
    form.extend_from_slice(&fields);
    app.post_form("/token", &form, &[("dpop", &proof(&other))]).await.assert_error(400, "invalid_request");
    let reply = app.post_form("/token", &form, &[("dpop", &proof(&key))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["token_type"], "DPoP");

    // nor is a bound token a bearer token at userinfo or introspection
    let userinfo = app
        .request(axum::http::Method::GET, "/userinfo", &[("authorization", &format!("Bearer {bound}"))], Vec::new())
        .await;
    userinfo.assert_error(401, "invalid_token");
    let introspect = app
        .post_form("/introspect", &[("token", bound.as_str())], &[("authorization", &format!("Bearer {bound}"))])
        .await;
    introspect.assert_error(401, "invalid_token");
}

const DELEGATION_RULES: &str = r#"
[[rule]]
id = "clinicians-read-in-context"
effect = "permit"
roles = ["clinician"]
resources = ["Patient"]
interactions = "rs"
when = ["patient_in_context"]

[[rule]]
id = "no-delegated-reads"
effect = "forbid"
roles = ["clinician"]
resources = ["Patient"]
interactions = "r"
when = ["delegated"]
"#;

#[tokio::test]
async fn the_policy_sees_whether_a_token_is_delegated() {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!("{}{DELEGATION_RULES}", crate::support::CLINICIAN_POLICY_HEAD);
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let folder = dir.path().to_path_buf();
    let app = TestApp::builder()
        .with_client(partner(&[ACCESS]))
        .with_dev_users()
        .with_config(move |c| c.policy.dir = Some(folder))
        .build()
        .await;
    let mut claims = user_claims(&app, "patient/Patient.rs", Some(PATIENT));
    claims.roles = vec!["clinician".into()];
    let direct = mint_token(&app, &claims);
    assert_eq!(get(&app, &direct, &format!("/fhir/Patient/{PATIENT}")).await.status, 200);
    claims.act = Some(json!({"sub": "dev:doctor", "iss": app.state.issuer()}));
    claims.jti = carebroker::token::random_token(12);
    let delegated = mint_token(&app, &claims);
    let refused = get(&app, &delegated, &format!("/fhir/Patient/{PATIENT}")).await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    // an exchange with an actor is narrowed by the same rule: the read is not granted
    let (subject, _) = {
        let mut c = user_claims(&app, "patient/Patient.rs", Some(PATIENT));
        c.roles = vec!["clinician".into()];
        (mint_token(&app, &c), c)
    };
    let actor = actor_token(&app, "dev:doctor");
    let reply = exchange_with_actor(&app, &subject, &actor).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["scope"], "patient/Patient.s", "{}", reply.text());
}

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const HOSPICE: &str = "https://hospice.example";

#[tokio::test]
async fn a_trusted_partners_own_jwt_is_exchanged_once_and_every_bad_one_is_refused() {
    use carebroker::token::jose::{Algorithm, SigningKey};
    let key = SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("hospice.jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.public_jwk()]}).to_string()).unwrap();
    let app = TestApp::builder()
        .with_client(partner(&[JWT]))
        .with_config(move |c| {
            c.exchange.issuers = vec![carebroker::config::TrustedIssuer {
                id: "hospice".into(),
                issuer: HOSPICE.into(),
                jwks_file: jwks,
                max_lifetime_secs: 300,
                assurance: 2,
            }];
        })
        .with_dir(dir)
        .build()
        .await;
    let now = app.now();
    let claims = |changes: Value| {
        let mut c = json!({
            "iss": HOSPICE, "sub": "u-9", "aud": crate::support::TOKEN_URL, "exp": now + 120, "iat": now,
            "jti": carebroker::token::random_token(8), "fhirUser": "Practitioner/hospice-9", "roles": ["R8001"], "org": "A9A5A"
        });
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let good = key.sign("JWT", &claims(json!({}))).unwrap();
    let reply = exchange(&app, &[("subject_token", &good), ("subject_token_type", JWT), ("scope", "user/*.rs")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, issued) = jwt_parts(reply.json()["access_token"].as_str().unwrap());
    assert_eq!(issued["sub"], "hospice:u-9");
    assert_eq!(issued["fhirUser"], "Practitioner/hospice-9");
    assert_eq!(issued["org"], "A9A5A");

    let other =
        SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap();
    let none = {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims(json!({}))))
    };
    for (token, why) in [
        (good.clone(), "a replayed jti"),
        (other.sign("JWT", &claims(json!({}))).unwrap(), "another key"),
        (none, "alg none"),
        (key.sign("JWT", &claims(json!({"iss": "https://stranger.example"}))).unwrap(), "an untrusted issuer"),
        (key.sign("JWT", &claims(json!({"aud": "https://elsewhere.example/token"}))).unwrap(), "another audience"),
        (key.sign("JWT", &claims(json!({"exp": now - 60}))).unwrap(), "expired"),
        (key.sign("JWT", &claims(json!({"exp": now + 3600}))).unwrap(), "too long-lived"),
        (key.sign("JWT", &claims(json!({"jti": null}))).unwrap(), "no jti"),
        (key.sign("JWT", &claims(json!({"sub": null}))).unwrap(), "no sub"),
    ] {
        let reply =
            exchange(&app, &[("subject_token", &token), ("subject_token_type", JWT), ("scope", "user/*.rs")]).await;
        reply.assert_error(400, "invalid_request");
        assert!(reply.json().get("access_token").is_none(), "{why}");
    }
}

#[tokio::test]
async fn a_token_can_be_exchanged_for_another_configured_resource_server_and_only_there() {
    const DASHBOARD: &str = "https://dashboard.example/api";
    let app = TestApp::builder()
        .with_client(partner(&[ACCESS]))
        .with_dev_users()
        .with_config(|c| {
            c.exchange.resource_servers = vec![carebroker::config::ResourceServer {
                audience: DASHBOARD.into(),
                scope: "patient/Patient.rs".into(),
            }];
        })
        .build()
        .await;
    let (subject, _) = nurse_token(&app, "patient/*.rs");
    let reply =
        exchange(&app, &[("subject_token", &subject), ("subject_token_type", ACCESS), ("resource", DASHBOARD)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["scope"], "patient/Patient.rs", "only what the dashboard accepts");
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_parts(&token).1["aud"], DASHBOARD);
    // not a token for our FHIR API
    assert_eq!(get(&app, &token, &format!("/fhir/Patient/{PATIENT}")).await.status, 401);
    // resource and audience naming different servers
    exchange(
        &app,
        &[
            ("subject_token", &subject),
            ("subject_token_type", ACCESS),
            ("resource", DASHBOARD),
            ("audience", FHIR_BASE),
        ],
    )
    .await
    .assert_error(400, "invalid_target");
    // targets may repeat (RFC 8693 §2.1): all naming the dashboard is one server; two servers,
    // or one unknown among them, is invalid_target, never a token for some of them
    let fields = |targets: &[(&'static str, &'static str)]| {
        let mut fields = vec![("subject_token", subject.clone()), ("subject_token_type", ACCESS.to_owned())];
        fields.extend(targets.iter().map(|(k, v)| (*k, (*v).to_owned())));
        fields
    };
    let send = |fields: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            exchange(app, &borrowed).await
        }
    };
    let again = send(fields(&[("resource", DASHBOARD), ("resource", DASHBOARD), ("audience", DASHBOARD)])).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(jwt_parts(again.json()["access_token"].as_str().unwrap()).1["aud"], DASHBOARD);
    send(fields(&[("resource", DASHBOARD), ("resource", FHIR_BASE)])).await.assert_error(400, "invalid_target");
    send(fields(&[("audience", DASHBOARD), ("audience", "https://unknown.example/api")]))
        .await
        .assert_error(400, "invalid_target");
    let many: Vec<_> = std::iter::repeat_n(("resource", DASHBOARD), 9).collect();
    send(fields(&many)).await.assert_error(400, "invalid_request");
    // other parameters still may not repeat
    send(fields(&[("scope", "patient/Patient.rs"), ("scope", "patient/Patient.rs")]))
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn what_was_exchanged_ends_with_the_subjects_grant_and_stays_a_users_token() {
    let app = partner_app(&[ACCESS]).await;
    // a user with no fhirUser: the exchanged token must still be a user's, never a system token
    let mut claims = user_claims(&app, "patient/*.rs user/*.rs", Some(PATIENT));
    claims.fhir_user = None;
    let subject = mint_token(&app, &claims);
    let reply = exchange(&app, &[("subject_token", &subject), ("subject_token_type", ACCESS)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let exchanged = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_parts(&exchanged).1["grant_id"], claims.grant_id.clone().unwrap(), "hangs on the subject's grant");
    // re-exchanged, it is still a user's token: no system scope for it
    let mut client = partner(&[ACCESS]);
    client.client_id = "wide-partner".into();
    client.scope = "system/*.rs patient/*.rs".into();
    let wide = TestApp::builder().with_client(client).build().await;
    let subject_again = mint_token(&wide, &jwt_claims(&exchanged));
    let form = [
        ("grant_type", GRANT),
        ("client_id", "wide-partner"),
        ("client_secret", SECRET),
        ("subject_token", subject_again.as_str()),
        ("subject_token_type", ACCESS),
        ("scope", "system/CarePlan.rs"),
    ];
    wide.post_form("/token", &form, &[]).await.assert_error(400, "invalid_scope");

    // revoking the subject's grant ends the exchanged token too
    assert_eq!(get(&app, &exchanged, &format!("/fhir/Patient/{PATIENT}")).await.status, 200);
    carebroker::oauth::grants::revoke_grant(&app.state, claims.grant_id.as_deref().unwrap(), app.now()).await.unwrap();
    assert_eq!(get(&app, &exchanged, &format!("/fhir/Patient/{PATIENT}")).await.status, 401);
}

/// The claims of a token minted here, to mint it again under another app's keys.
fn jwt_claims(token: &str) -> carebroker::token::access::AccessTokenClaims {
    serde_json::from_value(jwt_parts(token).1).unwrap()
}

#[tokio::test]
async fn a_launch_for_another_app_is_refused_without_being_spent() {
    let app = TestApp::builder()
        .with_client(partner(&[ACCESS]))
        .with_client(public_app())
        .with_client(trusted_ehr())
        .build()
        .await;
    let launch = register_launch(&app, launch_body()).await; // for the public app, not the partner
    let mut claims = user_claims(&app, "patient/*.rs", None);
    claims.sub = "ehr:ehr:u-555".into();
    let subject = mint_token(&app, &claims);
    exchange(&app, &[("subject_token", &subject), ("subject_token_type", ACCESS), ("launch", &launch)])
        .await
        .assert_error(400, "invalid_request");
    // the app it was for can still use it
    let (_, challenge) = crate::support::smart::pkce_pair();
    let reply = app
        .get(&crate::support::smart::authorize_path(
            &challenge,
            &[("launch", &launch), ("scope", "launch openid patient/*.rs")],
        ))
        .await;
    crate::support::smart::code_from(&reply, "st-123");
}

const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";

#[tokio::test]
async fn a_care_homes_saml_assertion_is_exchanged_once_and_every_bad_one_is_refused() {
    use crate::support::saml_idp::{self, Shape, response, sign, signed_assertion};
    use base64::Engine as _;
    let b64url = |xml: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(xml);
    let dir = tempfile::tempdir().unwrap();
    let mut config = saml_idp::config("lavender", dir.path());
    let not_accepted = TestApp::builder()
        .with_client(partner(&[SAML2]))
        .with_idp(config.clone())
        .with_dir(tempfile::tempdir().unwrap())
        .build()
        .await;
    config.accept_exchange = true;
    let app = TestApp::builder().with_client(partner(&[SAML2])).with_idp(config).with_dir(dir).build().await;
    // a bearer assertion for us (Audience our entity ID), confirmed to our token endpoint
    let shape = || {
        let mut s = Shape::new("_partners-own-request", app.now());
        s.recipient = crate::support::TOKEN_URL.into();
        s
    };
    let exchanged = |assertion: String| {
        let app = &app;
        async move {
            exchange(app, &[("subject_token", &assertion), ("subject_token_type", SAML2), ("scope", "user/*.rs")]).await
        }
    };

    let good = b64url(&signed_assertion(&shape(), "saml-idp"));
    let refused = exchange(&not_accepted, &[("subject_token", &good), ("subject_token_type", SAML2)]).await;
    refused.assert_error(400, "invalid_request");
    assert!(refused.text().contains("not accepted in token exchange"), "{}", refused.text());

    let reply = exchanged(good.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, claims) = jwt_parts(reply.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "lavender:cj-4471");
    assert_eq!(claims["fhirUser"], "Practitioner/cj-4471");
    assert!(claims["amr"].to_string().contains("token-exchange"), "{claims}");
    assert!(reply.json()["scope"].as_str().is_some_and(|s| s.starts_with("user/")), "{}", reply.text());

    // never twice (one replay cache with the ACS)
    let again = exchanged(good).await;
    again.assert_error(400, "invalid_request");
    assert!(again.text().contains("already used"), "{}", again.text());

    let spoiled: Vec<(&str, &str, String)> = vec![
        ("confirmed to the browser sign-in", "Recipient", {
            let mut s = shape();
            s.recipient = saml_idp::ACS.into();
            b64url(&signed_assertion(&s, "saml-idp"))
        }),
        ("for another service", "Audience", {
            let mut s = shape();
            s.audience = Some("https://another-sp.example/saml".into());
            b64url(&signed_assertion(&s, "saml-idp"))
        }),
        ("expired", "NotOnOrAfter", {
            let mut s = shape();
            (s.valid_for, s.issued_ago) = (-121, 400);
            b64url(&signed_assertion(&s, "saml-idp"))
        }),
        ("signed by a key not in the metadata", "failed verification", {
            b64url(&signed_assertion(&shape(), "saml-foreign"))
        }),
        ("unsigned", "failed verification", b64url(&saml_idp::assertion(&shape(), false))),
        ("tampered after signing", "failed verification", {
            b64url(&signed_assertion(&shape(), "saml-idp").replace("Casey Jones", "Someone Else"))
        }),
        ("from an issuer we do not know", "not a configured provider", {
            let mut s = shape();
            s.issuer = "https://rogue-idp.example/saml".into();
            b64url(&signed_assertion(&s, "saml-idp"))
        }),
        ("a Response rather than an assertion", "SAML 2.0 Assertion", {
            let s = shape();
            b64url(&sign(&response(&s, &signed_assertion(&s, "saml-idp"), true), "saml-idp"))
        }),
        ("standard base64 rather than base64url", "base64url", {
            base64::engine::general_purpose::STANDARD.encode(signed_assertion(&shape(), "saml-idp")).replace('=', "")
                + "+/"
        }),
        ("with a document type declaration", "base64url", {
            b64url(&format!("<!DOCTYPE a []>{}", signed_assertion(&shape(), "saml-idp")))
        }),
    ];
    for (case, says, token) in spoiled {
        let reply = exchanged(token).await;
        assert_eq!(reply.status, 400, "{case}: {}", reply.text());
        assert_eq!(reply.json()["error"], "invalid_request", "{case}");
        let description = reply.json()["error_description"].as_str().unwrap_or_default().to_owned();
        assert!(description.contains(says), "{case}: {description}");
    }
    // one exchange succeeded, with the token type and the provider audited; every refusal is audited too
    let records = app.state.stores.durable.audit_records(0, 1000).await.unwrap();
    let events: Vec<Value> = records.iter().filter_map(|r| serde_json::from_str(&r.data).ok()).collect();
    let outcomes = |o: &str| events.iter().filter(|e| e["kind"] == "token-exchange" && e["outcome"] == o).count();
    assert_eq!(outcomes("success"), 1, "only the good assertion was exchanged");
    assert!(events.iter().any(|e| e["kind"] == "token-exchange" && e.to_string().contains(SAML2)));
    assert_eq!(outcomes("success") + outcomes("failed"), 12, "every exchange attempt is audited");
}
