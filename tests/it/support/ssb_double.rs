//! A Spine Security Broker double: `GET /saml/RoleAssertion?token=…` answers, for a token it
//! knows, the SAML 1.1 role assertion in the documented shape (`reference/nhs-identity.md` §2,
//! the spine-core "SAML Example"): a flat attribute list with the header, the person block and one
//! block per role profile. For an unknown or expired token it answers a non-Success status.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use carebroker::domain::xml_time::format_utc;
use parking_lot::Mutex;

/// One role profile of a smartcard user.
#[derive(Debug, Clone)]
pub struct RoleProfile {
    pub profile_id: &'static str,
    pub ods: &'static str,
    pub job_role_code: &'static str,
    pub business_functions: Vec<&'static str>,
}

/// A smartcard session the double knows.
#[derive(Debug, Clone)]
pub struct Session {
    pub uid: &'static str,
    pub name: &'static str,
    pub session_role: &'static str,
    pub ssb_mode: &'static str,
    pub roles: Vec<RoleProfile>,
    /// Validity around the test clock: NotBefore = at - 180, NotOnOrAfter = at + 60.
    pub at: i64,
}

/// What the double answers for a token.
#[derive(Debug, Clone)]
pub enum Answer {
    Active(Session),
    /// A non-Success SAML status (unknown or expired token).
    Inactive,
    /// Exactly this body and status.
    Raw(u16, String),
}

#[derive(Clone)]
pub struct SsbDouble {
    pub url: String,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    pub calls: Arc<Mutex<Vec<String>>>,
}

/// The documented example user: two role profiles, the session on the second.
pub fn example_session(at: i64) -> Session {
    Session {
        uid: "232871648514",
        name: "Hatherly Adam",
        session_role: "780609380511",
        ssb_mode: "0",
        roles: vec![
            RoleProfile {
                profile_id: "780609380500",
                ods: "RQZ",
                job_role_code: "S8000:G8000:R8004",
                business_functions: vec!["B0360"],
            },
            RoleProfile {
                profile_id: "780609380511",
                ods: "A9A5A",
                job_role_code: "S8000:G8000:R8003",
                business_functions: vec!["B0360", "B1611", "B0257"],
            },
        ],
        at,
    }
}

impl SsbDouble {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let double = Self { url, answers: Arc::default(), calls: Arc::default() };
        let app = Router::new().route("/saml/RoleAssertion", get(role_assertion)).with_state(double.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        double
    }

    pub fn answer(&self, token: &str, answer: Answer) {
        self.answers.lock().insert(token.to_owned(), answer);
    }
}

fn attribute(name: &str, values: &[&str]) -> String {
    let values: String = values.iter().map(|v| format!("<saml:AttributeValue>{v}</saml:AttributeValue>")).collect();
    format!(
        r#"<saml:Attribute AttributeName="{name}" AttributeNamespace="http://www.syntegra.com">{values}</saml:Attribute>"#
    )
}

/// The role assertion for `session` and the token it was asked for.
pub fn assertion_xml(session: &Session, token: &str) -> String {
    let (issued, from, until) = (format_utc(session.at), format_utc(session.at - 180), format_utc(session.at + 60));
    let signed_in = format_utc(session.at - 400);
    let uid = session.uid;
    let mut attributes = vec![
        attribute("ssbAssertionVersion", &["1.1"]),
        attribute("cn", &[session.name]),
        attribute("uid", &[uid]),
        attribute("ssbSessionRoleUid", &[session.session_role]),
        attribute("ssbMode", &[session.ssb_mode]),
    ];
    for role in &session.roles {
        attributes.push(attribute("nhsIdCode", &[role.ods]));
        attributes.push(attribute("o", &["AN NHS TRUST"]));
        attributes.push(attribute("nhsBusinessFunctionsCodes", &role.business_functions));
        attributes
            .push(attribute("nhsJobRole", &["&quot;Clinical&quot;:&quot;Clinical Provision&quot;:&quot;A Role&quot;"]));
        attributes.push(attribute("uniqueIdentifier", &[role.profile_id]));
        attributes.push(attribute("nhsJobRoleCode", &[role.job_role_code]));
    }
    format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:1.0:protocol" ResponseID="null" InResponseTo="null" MajorVersion="1" MinorVersion="1" IssueInstant="{issued}" Recipient="127.0.0.1"><samlp:Status><samlp:StatusCode Value="samlp:Success"/></samlp:Status><saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:1.0:assertion" MajorVersion="1" MinorVersion="1" AssertionID="a{uid}" Issuer="http://ssb.test" IssueInstant="{issued}"><saml:Conditions NotBefore="{from}" NotOnOrAfter="{until}"/><saml:AttributeStatement><saml:Subject><saml:NameIdentifier NameQualifier="o=nhs">uid={uid},ou=People,o=nhs</saml:NameIdentifier><saml:SubjectConfirmation><saml:ConfirmationMethod>urn:com:sun:identity</saml:ConfirmationMethod><saml:SubjectConfirmationData><saml:Assertion MajorVersion="1" MinorVersion="1" AssertionID="b{uid}" Issuer="http://ssb.test" IssueInstant="{issued}"><saml:Conditions NotBefore="{from}" NotOnOrAfter="{until}"/><saml:AuthenticationStatement AuthenticationInstant="{signed_in}" AuthenticationMethod="urn:com:sun:identity:ExtendedLoginModule"><saml:Subject><saml:NameIdentifier NameQualifier="o=nhs">uid={uid},ou=People,o=nhs</saml:NameIdentifier><saml:SubjectConfirmation><saml:ConfirmationMethod>urn:com:sun:identity</saml:ConfirmationMethod><saml:SubjectConfirmationData>{token}</saml:SubjectConfirmationData></saml:SubjectConfirmation></saml:Subject><saml:SubjectLocality IPAddress="127.0.0.1"/></saml:AuthenticationStatement></saml:Assertion></saml:SubjectConfirmationData></saml:SubjectConfirmation></saml:Subject>{}</saml:AttributeStatement></saml:Assertion></samlp:Response>"#,
        attributes.join("")
    )
}

fn inactive() -> String {
    r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:1.0:protocol" ResponseID="null" MajorVersion="1" MinorVersion="1" IssueInstant="2026-11-22T00:00:00Z"><samlp:Status><samlp:StatusCode Value="samlp:Requester"/><samlp:StatusMessage>Invalid SSO token</samlp:StatusMessage></samlp:Status></samlp:Response>"#.to_owned()
}

async fn role_assertion(State(double): State<SsbDouble>, Query(q): Query<HashMap<String, String>>) -> Response {
    let token = q.get("token").cloned().unwrap_or_default();
    double.calls.lock().push(token.clone());
    let answer = double.answers.lock().get(&token).cloned().unwrap_or(Answer::Inactive);
    let (status, body) = match answer {
        Answer::Active(session) => (200, assertion_xml(&session, &token)),
        Answer::Inactive => (200, inactive()),
        Answer::Raw(status, body) => (status, body),
    };
    (axum::http::StatusCode::from_u16(status).expect("status"), [("content-type", "text/xml")], body).into_response()
}
