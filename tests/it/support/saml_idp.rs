//! A SAML identity provider for tests: its metadata (signing certificate `certs/test/saml-idp`),
//! and Responses built and signed here — correct ones, and every way the attack corpus spoils
//! them. Signing uses xmlsec through samael, as a real IdP's library would.

use std::io::Read as _;

use base64::Engine as _;
use carebroker::config::idps::{ClaimMapping, IdpConfig, SamlIdpSettings};
use samael::crypto::{Crypto, CryptoProvider};

pub const IDP_ENTITY: &str = "https://idp.test/saml/metadata";
pub const IDP_SSO: &str = "https://idp.test/saml/sso";
pub const SP_ENTITY: &str = "http://127.0.0.1:8080/saml/metadata";
pub const ACS: &str = "http://127.0.0.1:8080/saml/acs";

fn certs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/test")
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// The PKCS#8 PEM of `certs/test/{name}.key.pem`.
fn key_pem(name: &str) -> String {
    std::fs::read_to_string(certs().join(format!("{name}.key.pem"))).expect("test key")
}

/// The base64 certificate body of `certs/test/{name}.crt.pem`.
pub fn cert_b64(name: &str) -> String {
    pem_body(&std::fs::read_to_string(certs().join(format!("{name}.crt.pem"))).expect("cert"))
}

/// IdP metadata naming `cert` (a `certs/test` name) as its signing certificate.
pub fn metadata_xml(cert: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{IDP_ENTITY}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.test/saml/slo"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{IDP_SSO}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#,
        cert_b64(cert)
    )
}

/// The provider file for this IdP (its metadata written into `dir`).
pub fn config(id: &str, dir: &std::path::Path) -> IdpConfig {
    let file = dir.join(format!("{id}-metadata.xml"));
    std::fs::write(&file, metadata_xml("saml-idp")).expect("metadata");
    IdpConfig {
        id: id.into(),
        kind: carebroker::config::idps::IdpKind::Saml,
        name: "Lavender Care Homes (SAML)".into(),
        issuer: IDP_ENTITY.into(),
        claims: ClaimMapping {
            subject: "NameID".into(),
            name: "displayName".into(),
            org: "odsCode".into(),
            roles: "role".into(),
            fhir_user_template: Some("Practitioner/{sub}".into()),
            ..ClaimMapping::default()
        },
        saml: SamlIdpSettings { metadata_file: Some(file), ..SamlIdpSettings::default() },
        ..IdpConfig::default()
    }
}

/// The AuthnRequest inside an HTTP-Redirect URL: (its XML, RelayState).
pub fn authn_request(location: &str) -> (String, String) {
    let relay = super::browser::query_of(location).get("RelayState").cloned().unwrap_or_default();
    (redirect_message(location, "SAMLRequest"), relay)
}

/// The value of `name="…"` on the first element carrying it.
pub fn attribute_of(xml: &str, name: &str) -> String {
    let at = xml.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("no {name} in {xml}")) + name.len() + 3;
    xml[at..].split('"').next().unwrap().to_owned()
}

fn xml_time(secs: i64) -> String {
    carebroker::domain::xml_time::format_utc(secs)
}

/// Everything an assertion says, each spoilable.
#[derive(Debug, Clone)]
pub struct Shape {
    pub now: i64,
    pub request_id: String,
    pub response_id: String,
    pub assertion_id: String,
    pub issuer: String,
    pub audience: Option<String>,
    pub recipient: String,
    pub destination: Option<String>,
    pub name_id: String,
    pub attributes: Vec<(&'static str, Vec<String>)>,
    /// Seconds after `now` the assertion stops being valid.
    pub valid_for: i64,
    /// Seconds before `now` it was issued.
    pub issued_ago: i64,
    pub status: &'static str,
}

impl Shape {
    pub fn new(request_id: &str, now: i64) -> Self {
        Self {
            now,
            request_id: request_id.into(),
            response_id: format!("_r{}", carebroker::token::random_token(16)),
            assertion_id: format!("_a{}", carebroker::token::random_token(16)),
            issuer: IDP_ENTITY.into(),
            audience: Some(SP_ENTITY.into()),
            recipient: ACS.into(),
            destination: Some(ACS.into()),
            name_id: "cj-4471".into(),
            attributes: vec![
                ("displayName", vec!["Casey Jones".into()]),
                ("odsCode", vec!["VNC12".into()]),
                ("role", vec!["CH01".into()]),
            ],
            valid_for: 300,
            issued_ago: 2,
            status: "urn:oasis:names:tc:SAML:2.0:status:Success",
        }
    }
}

fn signature_template(reference: &str) -> String {
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{reference}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature>"##
    )
}

/// The assertion; with `template`, an empty signature over it to be filled by [`sign`].
pub fn assertion(s: &Shape, template: bool) -> String {
    let issued = xml_time(s.now - s.issued_ago);
    let until = xml_time(s.now + s.valid_for);
    let from = xml_time(s.now - s.issued_ago - 10);
    let audience = s
        .audience
        .as_ref()
        .map(|a| format!("<saml:AudienceRestriction><saml:Audience>{a}</saml:Audience></saml:AudienceRestriction>"))
        .unwrap_or_default();
    let attributes: String = s
        .attributes
        .iter()
        .map(|(name, values)| {
            let values: String = values.iter().map(|v| format!("<saml:AttributeValue>{v}</saml:AttributeValue>")).collect();
            format!(r#"<saml:Attribute Name="{name}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">{values}</saml:Attribute>"#)
        })
        .collect();
    format!(
        r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{issuer}</saml:Issuer>{sig}<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">{name_id}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="{until}" Recipient="{recipient}" InResponseTo="{request}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{from}" NotOnOrAfter="{until}">{audience}</saml:Conditions><saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="_session-1"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement>{attributes}</saml:AttributeStatement></saml:Assertion>"#,
        id = s.assertion_id,
        issuer = s.issuer,
        sig = if template { signature_template(&s.assertion_id) } else { String::new() },
        name_id = s.name_id,
        recipient = s.recipient,
        request = s.request_id,
    )
}

/// The Response around `inner` (already-signed assertion XML, or anything); with `template`, an
/// empty signature over the whole response.
pub fn response(s: &Shape, inner: &str, template: bool) -> String {
    let destination = s.destination.as_ref().map(|d| format!(r#" Destination="{d}""#)).unwrap_or_default();
    format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{issued}"{destination} InResponseTo="{request}"><saml:Issuer>{issuer}</saml:Issuer>{sig}<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>{inner}</samlp:Response>"#,
        id = s.response_id,
        issued = xml_time(s.now - s.issued_ago),
        request = s.request_id,
        issuer = s.issuer,
        sig = if template { signature_template(&s.response_id) } else { String::new() },
        status = s.status,
    )
}

/// Fills every signature template in `xml` with `key` (a `certs/test` name).
pub fn sign(xml: &str, key: &str) -> String {
    let signed = Crypto::sign_xml(xml, &carebroker::token::jose::pkcs8_from_pem(&key_pem(key)).expect("pem"))
        .expect("xmlsec signs");
    // libxml adds an XML declaration; keep the document as an IdP would send it
    signed.trim_start_matches(|c| c != '<').to_owned()
}

/// The assertion signed with `key`, ready to put in a response.
pub fn signed_assertion(s: &Shape, key: &str) -> String {
    strip_declaration(&sign(&assertion(s, true), key))
}

/// A correctly signed response (assertion signed, then the response).
pub fn good_response(s: &Shape) -> String {
    let signed_assertion = signed_assertion(s, "saml-idp");
    sign(&response(s, &signed_assertion, true), "saml-idp")
}

pub fn strip_declaration(xml: &str) -> String {
    match xml.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, body)| body.trim_start().to_owned()).unwrap_or_default(),
        None => xml.to_owned(),
    }
}

pub fn encode(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

pub const IDP_SLO: &str = "https://idp.test/saml/slo";

/// Inflates the `param` (`SAMLRequest`/`SAMLResponse`) of a redirect-binding URL.
pub fn redirect_message(location: &str, param: &str) -> String {
    let q = super::browser::query_of(location);
    let deflated = base64::engine::general_purpose::STANDARD.decode(&q[param]).expect("base64");
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..]).read_to_string(&mut xml).expect("deflate");
    xml
}

/// `/saml/slo?{param}=…&RelayState=…` signed (redirect binding) with `key`, or unsigned.
pub fn slo_path(param: &str, xml: &str, relay: Option<&str>, key: Option<&str>) -> String {
    use std::io::Write as _;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(xml.as_bytes()).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
    let mut url = url::Url::parse("http://127.0.0.1:8080/saml/slo").unwrap();
    url.query_pairs_mut().append_pair(param, &encoded);
    if let Some(relay) = relay {
        url.query_pairs_mut().append_pair("RelayState", relay);
    }
    if let Some(key) = key {
        let key = openssl::pkey::PKey::private_key_from_pem(key_pem(key).as_bytes()).unwrap();
        url = samael::crypto::sign_url(url, &key).unwrap();
    }
    format!("/saml/slo?{}", url.query().unwrap())
}

/// The IdP's LogoutRequest for `name_id` / `session_index`, issued `issued_ago` seconds before `now`.
pub fn logout_request(
    now: i64,
    issued_ago: i64,
    issuer: &str,
    destination: &str,
    name_id: &str,
    session_index: &str,
) -> String {
    format!(
        r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_lr{}" Version="2.0" IssueInstant="{}" Destination="{destination}"><saml:Issuer>{issuer}</saml:Issuer><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">{name_id}</saml:NameID><samlp:SessionIndex>{session_index}</samlp:SessionIndex></samlp:LogoutRequest>"#,
        carebroker::token::random_token(12),
        xml_time(now - issued_ago),
    )
}

/// The IdP's LogoutResponse to our request `in_response_to`.
pub fn logout_response(now: i64, in_response_to: &str, status: &str) -> String {
    format!(
        r#"<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_ls{}" Version="2.0" IssueInstant="{}" Destination="http://127.0.0.1:8080/saml/slo" InResponseTo="{in_response_to}"><saml:Issuer>{IDP_ENTITY}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:{status}"/></samlp:Status></samlp:LogoutResponse>"#,
        carebroker::token::random_token(12),
        xml_time(now),
    )
}
