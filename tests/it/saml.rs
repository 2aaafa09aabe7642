//! SAML 2.0 sign-in: a care home's IdP signs its staff in (HTTP-Redirect AuthnRequest, HTTP-POST
//! Response), and the attack corpus — signature wrapping, an unsigned assertion beside a signed one,
//! comment injection in NameID, a certificate not from metadata, expiry, audience, recipient,
//! destination, issuer, replay, answers to requests never sent, XXE and entity expansion, SHA-1,
//! tampering, login CSRF. Every attack ends on a clear page with no session and an audited failure.

use serde_json::json;

use crate::support::browser::{Browser, assert_no_session, consent_and_exchange, query_of};
use crate::support::saml_idp::{self, IDP_SSO, Shape, attribute_of, authn_request, encode, good_response, sign};
use crate::support::smart::*;
use crate::support::{ISSUER, Reply, TestApp};

const IDP: &str = "lavender";

async fn saml_app(tweak: impl FnOnce(&mut carebroker::config::idps::IdpConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = saml_idp::config(IDP, dir.path());
    tweak(&mut config);
    TestApp::builder().with_client(public_app()).with_dev_users().with_idp(config).with_dir(dir).build().await
}

/// Starts a sign-in at the IdP: (the AuthnRequest ID, RelayState, the PKCE verifier).
async fn begin(app: &TestApp, browser: &mut Browser) -> (String, String, String) {
    let (verifier, challenge) = pkce_pair();
    let reply = browser
        .get(app, &authorize_path(&challenge, &[("idp_hint", IDP), ("scope", "openid fhirUser user/*.rs")]))
        .await;
    let to_idp = browser.follow(app, &reply).await;
    assert_eq!(to_idp.status, 303, "{}", to_idp.text());
    let location = to_idp.header("location").unwrap();
    assert!(location.starts_with(IDP_SSO), "{location}");
    let (request, relay) = authn_request(location);
    assert_eq!(attribute_of(&request, "AssertionConsumerServiceURL"), format!("{ISSUER}/saml/acs"));
    assert_eq!(attribute_of(&request, "Destination"), IDP_SSO);
    (attribute_of(&request, "ID"), relay, verifier)
}

/// The IdP's form post, then (when accepted) the hop that binds it to this browser.
async fn answer(app: &TestApp, browser: &mut Browser, relay: &str, xml: &str) -> Reply {
    let posted = browser.post(app, "/saml/acs", &[("SAMLResponse", &encode(xml)), ("RelayState", relay)], &[]).await;
    if posted.status != 303 {
        return posted;
    }
    let location = posted.header("location").unwrap().trim_start_matches(ISSUER).to_owned();
    assert!(location.starts_with("/saml/continue?ref="), "{location}");
    browser.get(app, &location).await
}

async fn failures_audited(app: &TestApp) -> usize {
    let records = app.state.stores.durable.audit_records(0, 1000).await.unwrap();
    records.iter().filter(|r| r.data.contains("sign-in") && r.data.contains("failed")).count()
}

#[tokio::test]
async fn a_care_home_carer_signs_in_through_the_homes_saml_idp() {
    let app = saml_app(|_| {}).await;
    let tokens = signed_in(&app, &mut Browser::new()).await;
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], "lavender:cj-4471");
    assert_eq!(access["fhirUser"], "Practitioner/cj-4471");
    assert_eq!(access["org"], "VNC12");
    assert_eq!(access["roles"], json!(["CH01"]));
}

#[tokio::test]
async fn the_sp_publishes_its_metadata() {
    let app = saml_app(|_| {}).await;
    let reply = app.get("/saml/metadata").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/samlmetadata+xml"));
    let xml = reply.text();
    assert!(xml.contains(&format!("entityID=\"{ISSUER}/saml/metadata\"")), "{xml}");
    assert!(xml.contains(&format!("Location=\"{ISSUER}/saml/acs\"")), "{xml}");
    assert!(xml.contains("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"), "{xml}");
}

/// Signs a fresh request's response built by `spoil`, posts it, and requires a refusal with no
/// session and an audited failure (or, for answers we never asked for, the expired page).
async fn refused(why: &str, says: &str, spoil: impl FnOnce(&mut Shape) -> String) {
    let app = saml_app(|_| {}).await;
    let mut browser = Browser::new();
    let (request_id, relay, _) = begin(&app, &mut browser).await;
    let mut shape = Shape::new(&request_id, app.now());
    let xml = spoil(&mut shape);
    let before = failures_audited(&app).await;
    let reply = answer(&app, &mut browser, &relay, &xml).await;
    assert_no_session(&app, &mut browser, &reply, why).await;
    let page = reply.text();
    assert!(page.contains(says), "{why}: the page should say `{says}`: {page}");
    assert_eq!(failures_audited(&app).await, before + 1, "{why}: failure audited");
}

#[tokio::test]
async fn signature_wrapping_and_injected_assertions_are_refused() {
    // XSW: an evil unsigned assertion before the signed one, in a signed response
    refused("evil assertion first", "exactly one assertion", |s| {
        let signed = saml_idp::signed_assertion(s, "saml-idp");
        let mut evil = s.clone();
        evil.name_id = "admin@lavender.example".into();
        evil.assertion_id = "_evil".into();
        saml_idp::response(s, &format!("{}{signed}", saml_idp::assertion(&evil, false)), false)
    })
    .await;
    // XSW: the signed assertion tucked inside the evil one's subject confirmation data
    refused("signed assertion hidden in the evil one", "exactly one assertion", |s| {
        let signed = saml_idp::signed_assertion(s, "saml-idp");
        let mut evil = s.clone();
        evil.name_id = "admin@lavender.example".into();
        let evil_xml = saml_idp::assertion(&evil, false).replace(
            "/></saml:SubjectConfirmation>",
            &format!(">{signed}</saml:SubjectConfirmationData></saml:SubjectConfirmation>"),
        );
        saml_idp::response(s, &evil_xml, false)
    })
    .await;
    // XSW: the whole signed response wrapped inside an unsigned one with an evil assertion
    refused("signed response wrapped", "exactly one assertion", |s| {
        let original = saml_idp::strip_declaration(&good_response(s));
        let mut evil = s.clone();
        evil.name_id = "admin@lavender.example".into();
        evil.response_id = "_outer".into();
        saml_idp::response(&evil, &saml_idp::assertion(&evil, false), false)
            .replace("<samlp:Status>", &format!("<samlp:Extensions>{original}</samlp:Extensions><samlp:Status>"))
    })
    .await;
    // an unsigned assertion in an unsigned response
    refused("nothing signed", "failed verification", |s| saml_idp::response(s, &saml_idp::assertion(s, false), false))
        .await;
    // an unsigned assertion injected into a response whose own signature covered only itself
    refused("unsigned assertion in signed response", "exactly one assertion", |s| {
        let signed = saml_idp::strip_declaration(&good_response(s));
        let mut evil = s.clone();
        evil.name_id = "admin@lavender.example".into();
        signed.replace("</samlp:Response>", &format!("{}</samlp:Response>", saml_idp::assertion(&evil, false)))
    })
    .await;
    // content changed after signing
    refused("tampered NameID", "failed verification", |s| good_response(s).replace(">cj-4471<", ">admin-1<")).await;
}

#[tokio::test]
async fn comment_injection_in_name_id_is_refused() {
    // the IdP signed `victim@lavender.example.evil.test` for the attacker; the comment would make
    // a naive reader see `victim@lavender.example` while the signature still verifies
    refused("comment in NameID", "comments", |s| {
        s.name_id = "victim@lavender.example.evil.test".into();
        good_response(s).replace("victim@lavender.example.evil.test", "victim@lavender.example<!---->.evil.test")
    })
    .await;
}

#[tokio::test]
async fn responses_not_signed_by_the_metadata_certificate_or_with_an_algorithm_not_allowed_are_refused() {
    refused("foreign certificate", "failed verification", |s| {
        let signed = saml_idp::signed_assertion(s, "saml-foreign");
        sign(&saml_idp::response(s, &signed, true), "saml-foreign")
    })
    .await;
    // RSA-SHA384 is a sound algorithm, but not on this provider's allow-list (SHA-1 never is:
    // this xmlsec cannot even produce it)
    refused("algorithm not allowed", "failed verification", |s| {
        let template = |xml: String| {
            xml.replace("xmldsig-more#rsa-sha256", "xmldsig-more#rsa-sha384")
                .replace("xmlenc#sha256", "xmldsig-more#sha384")
        };
        let signed = saml_idp::strip_declaration(&sign(&template(saml_idp::assertion(s, true)), "saml-idp"));
        sign(&template(saml_idp::response(s, &signed, true)), "saml-idp")
    })
    .await;
}

#[tokio::test]
async fn expired_misaddressed_and_foreign_assertions_are_refused() {
    refused("expired", "expired (NotOnOrAfter)", |s| {
        // just past NotOnOrAfter plus the 120 s skew, issued recently enough
        s.valid_for = -121;
        s.issued_ago = 400;
        good_response(s)
    })
    .await;
    refused("issued long ago but still claiming validity", "IssueInstant", |s| {
        s.issued_ago = 3600;
        good_response(s)
    })
    .await;
    refused("issued in the future", "IssueInstant", |s| {
        s.issued_ago = -900;
        good_response(s)
    })
    .await;
    refused("wrong audience", "Audience", |s| {
        s.audience = Some("https://another-sp.example/saml".into());
        good_response(s)
    })
    .await;
    refused("no audience", "Audience", |s| {
        s.audience = None;
        good_response(s)
    })
    .await;
    refused("wrong recipient", "failed verification", |s| {
        s.recipient = "https://another-sp.example/acs".into();
        good_response(s)
    })
    .await;
    refused("wrong destination", "not to us", |s| {
        s.destination = Some("https://another-sp.example/acs".into());
        good_response(s)
    })
    .await;
    refused("another issuer", "failed verification", |s| {
        s.issuer = "https://rogue-idp.example/saml".into();
        good_response(s)
    })
    .await;
    refused("answer to a request never sent", "failed verification", |s| {
        s.request_id = "_a-request-we-never-sent".into();
        good_response(s)
    })
    .await;
}

#[tokio::test]
async fn xxe_and_entity_expansion_are_refused_before_parsing() {
    refused("xxe", "document type declaration", |s| {
        format!(
            r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>{}"#,
            good_response(s).replace("Casey Jones", "&x;")
        )
    })
    .await;
    refused("billion laughs", "document type declaration", |s| {
        let mut dtd = String::from(r#"<!DOCTYPE r [<!ENTITY l0 "ha">"#);
        for i in 1..10 {
            dtd.push_str(&format!(
                r#"<!ENTITY l{i} "&l{p};&l{p};&l{p};&l{p};&l{p};&l{p};&l{p};&l{p};&l{p};&l{p};">"#,
                p = i - 1
            ));
        }
        dtd.push_str("]>");
        format!("{dtd}{}", good_response(s).replace("Casey Jones", "&l9;"))
    })
    .await;
}

#[tokio::test]
async fn a_response_is_used_once_and_an_assertion_id_never_twice() {
    let app = saml_app(|_| {}).await;
    let mut browser = Browser::new();
    let (request_id, relay, _) = begin(&app, &mut browser).await;
    let shape = Shape::new(&request_id, app.now());
    let xml = good_response(&shape);
    let first = answer(&app, &mut browser, &relay, &xml).await;
    assert!(first.header("location").is_some_and(|l| l.starts_with("/authorize/consent")), "{}", first.text());
    // the same post again: its RelayState (our request) is spent
    let mut other = Browser::new();
    let again = answer(&app, &mut other, &relay, &xml).await;
    assert_no_session(&app, &mut other, &again, "replayed post").await;
    // a correctly signed answer to a new request that reuses the assertion ID
    let (request_id, relay, _) = begin(&app, &mut other).await;
    let mut reused = Shape::new(&request_id, app.now());
    reused.assertion_id = shape.assertion_id.clone();
    let reply = answer(&app, &mut other, &relay, &good_response(&reused)).await;
    assert_no_session(&app, &mut other, &reply, "assertion ID replay").await;
    assert!(reply.text().contains("already used"), "{}", reply.text());
}

#[tokio::test]
async fn a_response_carried_into_another_browser_signs_no_one_in() {
    let app = saml_app(|_| {}).await;
    let mut attacker = Browser::new();
    let (request_id, relay, _) = begin(&app, &mut attacker).await;
    let xml = good_response(&Shape::new(&request_id, app.now()));
    // the attacker makes the victim's browser post the attacker's own response (login CSRF)
    let mut victim = Browser::new();
    let reply = answer(&app, &mut victim, &relay, &xml).await;
    assert_no_session(&app, &mut victim, &reply, "login CSRF").await;
}

#[tokio::test]
async fn an_idp_failure_status_and_garbage_end_on_a_clear_page() {
    let app = saml_app(|_| {}).await;
    let mut browser = Browser::new();
    let (request_id, relay, _) = begin(&app, &mut browser).await;
    let mut shape = Shape::new(&request_id, app.now());
    shape.status = "urn:oasis:names:tc:SAML:2.0:status:Responder";
    let reply = answer(&app, &mut browser, &relay, &saml_idp::response(&shape, "", false)).await;
    assert_no_session(&app, &mut browser, &reply, "failure status").await;
    assert!(reply.text().contains("Responder"), "{}", reply.text());
    for body in [vec![("SAMLResponse", "%%%not-base64"), ("RelayState", "x")], vec![("RelayState", "x")]] {
        let reply = browser.post(&app, "/saml/acs", &body, &[]).await;
        assert_no_session(&app, &mut browser, &reply, "garbage").await;
    }
    let (_, relay, _) = begin(&app, &mut browser).await;
    let reply = answer(&app, &mut browser, &relay, "<not-saml/>").await;
    assert_no_session(&app, &mut browser, &reply, "not SAML").await;
}

/// Signs a carer in through the IdP and returns their tokens.
async fn signed_in(app: &TestApp, browser: &mut Browser) -> serde_json::Value {
    let (request_id, relay, verifier) = begin(app, browser).await;
    let back = answer(app, browser, &relay, &good_response(&Shape::new(&request_id, app.now()))).await;
    assert!(back.header("location").is_some_and(|l| l.starts_with("/authorize/consent")), "{}", back.text());
    let code = consent_and_exchange(app, browser, &back).await;
    exchange(app, &code, &verifier).await.json()
}

async fn still_signed_in(app: &TestApp, browser: &mut Browser) -> bool {
    let (_, challenge) = pkce_pair();
    let reply = browser.get(app, &authorize_path(&challenge, &[("idp_hint", IDP)])).await;
    !reply.header("location").is_some_and(|l| l.starts_with("/signin"))
}

#[tokio::test]
async fn the_idp_signs_the_user_out_here_with_a_signed_logout_request() {
    use saml_idp::{IDP_ENTITY, IDP_SLO, logout_request, redirect_message, slo_path};
    let app = saml_app(|_| {}).await;
    let mut browser = Browser::new();
    let tokens = signed_in(&app, &mut browser).await;
    assert!(still_signed_in(&app, &mut browser).await);
    let now = app.now();
    let slo = format!("{ISSUER}/saml/slo");
    // refused, changing nothing: unsigned, signed by a stranger, from another issuer, stale, misaddressed
    let refusals = [
        (
            "unsigned",
            slo_path("SAMLRequest", &logout_request(now, 1, IDP_ENTITY, &slo, "cj-4471", "_session-1"), None, None),
        ),
        (
            "foreign key",
            slo_path(
                "SAMLRequest",
                &logout_request(now, 1, IDP_ENTITY, &slo, "cj-4471", "_session-1"),
                None,
                Some("saml-foreign"),
            ),
        ),
        (
            "unknown issuer",
            slo_path(
                "SAMLRequest",
                &logout_request(now, 1, "https://rogue.example/idp", &slo, "cj-4471", "_session-1"),
                None,
                Some("saml-idp"),
            ),
        ),
        (
            "stale",
            slo_path(
                "SAMLRequest",
                &logout_request(now, 3600, IDP_ENTITY, &slo, "cj-4471", "_session-1"),
                None,
                Some("saml-idp"),
            ),
        ),
        (
            "misaddressed",
            slo_path(
                "SAMLRequest",
                &logout_request(now, 1, IDP_ENTITY, "https://other-sp.example/slo", "cj-4471", "_session-1"),
                None,
                Some("saml-idp"),
            ),
        ),
    ];
    for (why, path) in refusals {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.text());
        assert!(reply.header("location").is_none(), "{why}");
        assert!(still_signed_in(&app, &mut browser).await, "{why}: the session survives");
    }
    // the real thing, with the RelayState the IdP wants back
    let path = slo_path(
        "SAMLRequest",
        &logout_request(now, 1, IDP_ENTITY, &slo, "cj-4471", "_session-1"),
        Some("idp-relay"),
        Some("saml-idp"),
    );
    let reply = app.get(&path).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    let location = reply.header("location").unwrap();
    assert!(location.starts_with(IDP_SLO), "{location}");
    let answer = redirect_message(location, "SAMLResponse");
    assert!(answer.contains("urn:oasis:names:tc:SAML:2.0:status:Success"), "{answer}");
    assert!(answer.contains(&format!("<saml:Issuer>{ISSUER}/saml/metadata</saml:Issuer>")), "{answer}");
    assert!(location.contains("RelayState=idp-relay"), "{location}");
    assert!(!still_signed_in(&app, &mut browser).await, "the session ended");
    let replayed = app.get(&path).await;
    assert_eq!(replayed.status, 400, "a logout request is acted on once: {}", replayed.text());
    let refreshed = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap_or("none")),
                ("client_id", APP),
            ],
            &[],
        )
        .await;
    assert_ne!(refreshed.status, 200, "online grants of the session are revoked: {}", refreshed.text());
}

#[tokio::test]
async fn signing_out_here_asks_the_idp_to_sign_the_user_out_too() {
    use saml_idp::{IDP_SLO, logout_response, redirect_message, slo_path};
    let app = saml_app(|_| {}).await;
    let mut browser = Browser::new();
    let tokens = signed_in(&app, &mut browser).await;
    let hint = tokens["id_token"].as_str().unwrap();
    let reply = browser
        .get(
            &app,
            &format!(
                "/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fviewer.example%2Fbye&state=s1"
            ),
        )
        .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    let location = reply.header("location").unwrap().to_owned();
    assert!(location.starts_with(IDP_SLO), "{location}");
    let request = redirect_message(&location, "SAMLRequest");
    assert!(
        request.contains(">cj-4471</saml:NameID>")
            && request.contains("<samlp:SessionIndex>_session-1</samlp:SessionIndex>"),
        "{request}"
    );
    assert!(!still_signed_in(&app, &mut browser).await, "signed out here before asking the IdP");
    let request_id = attribute_of(&request, "ID");
    let relay = query_of(&location)["RelayState"].clone();
    let now = app.now();
    // refused, and the pending logout kept: an answer to another request, unsigned, a stranger's
    for (why, path) in [
        (
            "other request",
            slo_path("SAMLResponse", &logout_response(now, "_other", "Success"), Some(&relay), Some("saml-idp")),
        ),
        ("unsigned", slo_path("SAMLResponse", &logout_response(now, &request_id, "Success"), Some(&relay), None)),
        (
            "foreign key",
            slo_path("SAMLResponse", &logout_response(now, &request_id, "Success"), Some(&relay), Some("saml-foreign")),
        ),
        (
            "unknown relay",
            slo_path("SAMLResponse", &logout_response(now, &request_id, "Success"), Some("nope"), Some("saml-idp")),
        ),
    ] {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.text());
        assert!(reply.header("location").is_none(), "{why}");
    }
    let good = slo_path("SAMLResponse", &logout_response(now, &request_id, "Success"), Some(&relay), Some("saml-idp"));
    let done = app.get(&good).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.header("location"), Some("https://viewer.example/bye?state=s1"));
    let replayed = app.get(&good).await;
    assert_eq!(replayed.status, 400, "an answer is used once");
}
