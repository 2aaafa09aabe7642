//! SAML single logout over the HTTP-Redirect binding, both ways:
//! - carebroker asks the IdP (after a user signs out here): a `LogoutRequest` naming the NameID
//!   and SessionIndex the IdP issued, signed when we have a key; the IdP's `LogoutResponse` must be
//!   signed by a metadata certificate and answer that request;
//! - the IdP asks carebroker (the user signed out elsewhere): a signed `LogoutRequest` is checked
//!   (signature, issuer, destination, time) and answered with a `LogoutResponse`.
//!
//! Redirect-binding signatures cover the query string, not the XML (SAML bindings §3.4.4.1).

use std::io::{Read as _, Write as _};
use std::time::Duration;

use base64::Engine as _;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use samael::crypto::{UrlVerifier, sign_url};
use samael::metadata::HTTP_REDIRECT_BINDING;

use super::SignInError;
use super::saml::SamlIdp;
use super::xml::{SAML2, SAML2_SUCCESS, SAML2P, child, child_text, children, has_dtd, is};
use crate::domain::identity::Identity;
use crate::domain::markup::escape;
use crate::domain::xml_time::{format_utc, parse_utc};
use crate::keyspaces::SAML_LOGOUT_REQUESTS;
use crate::store::EphemeralStore;
use crate::token::random_token;

/// Redirect-binding signature algorithms accepted (what samael's verifier implements; no SHA-1).
const SIG_ALGS: [&str; 2] =
    ["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"];
/// The largest inflated message accepted.
const MAX_MESSAGE: u64 = 64 * 1024;

/// A message received by HTTP-Redirect, inflated but not yet verified.
#[derive(Debug, Clone)]
pub struct RedirectMessage {
    pub is_request: bool,
    pub xml: String,
    pub relay_state: Option<String>,
    /// The `Issuer`, used only to find the provider that must then verify the signature.
    pub issuer: Option<String>,
}

/// What an IdP's logout request asks to end.
#[derive(Debug, Clone)]
pub struct LogoutAsk {
    pub request_id: String,
    pub name_id: String,
    pub session_indexes: Vec<String>,
}

fn bad(why: &str) -> SignInError {
    SignInError::IdToken(why.to_owned())
}

/// Reads `SAMLRequest` or `SAMLResponse` from a redirect-binding query string.
pub fn read_redirect(raw_query: &str) -> Result<RedirectMessage, SignInError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect();
    let one = |name: &str| -> Result<Option<String>, SignInError> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone());
        let first = values.next();
        if values.next().is_some() {
            return Err(bad(&format!("`{name}` is given twice")));
        }
        Ok(first)
    };
    let (is_request, encoded) = match (one("SAMLRequest")?, one("SAMLResponse")?) {
        (Some(m), None) => (true, m),
        (None, Some(m)) => (false, m),
        _ => return Err(bad("a logout message carries exactly one of SAMLRequest and SAMLResponse")),
    };
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad("the message is not base64"))?;
    let mut xml = String::new();
    DeflateDecoder::new(&deflated[..])
        .take(MAX_MESSAGE)
        .read_to_string(&mut xml)
        .map_err(|_| bad("the message is not DEFLATE-compressed XML"))?;
    if has_dtd(&xml) || xml.contains("<!--") {
        return Err(bad("the message carries a document type declaration or comments"));
    }
    let issuer = {
        let doc = roxmltree::Document::parse(&xml).map_err(|_| bad("the message is not well-formed XML"))?;
        child_text(doc.root_element(), SAML2, "Issuer")
    };
    Ok(RedirectMessage { is_request, xml, relay_state: one("RelayState")?, issuer })
}

fn deflate_b64(xml: &str) -> Result<String, SignInError> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(xml.as_bytes()).map_err(SignInError::upstream)?;
    let bytes = encoder.finish().map_err(SignInError::upstream)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl SamlIdp {
    /// The origin of the provider's logout service (for pages whose form answer redirects there).
    pub async fn slo_origin(&self) -> Option<String> {
        let location = self.slo_location().await.ok()??;
        url::Url::parse(&location).ok().map(|u| u.origin().ascii_serialization())
    }

    async fn slo_location(&self) -> Result<Option<String>, SignInError> {
        Ok(self.trusted().await?.sp.slo_binding_location(HTTP_REDIRECT_BINDING))
    }

    /// `location?{param}=…&RelayState=…`, signed with our key when we have one.
    fn redirect_url(
        &self,
        location: &str,
        param: &str,
        xml: &str,
        relay_state: Option<&str>,
    ) -> Result<String, SignInError> {
        let mut url = url::Url::parse(location).map_err(SignInError::upstream)?;
        url.query_pairs_mut().append_pair(param, &deflate_b64(xml)?);
        if let Some(relay) = relay_state {
            url.query_pairs_mut().append_pair("RelayState", relay);
        }
        match &self.sp.key {
            Some(key) => sign_url(url, key).map(|u| u.to_string()).map_err(SignInError::upstream),
            None => Ok(url.to_string()),
        }
    }

    /// Checks the redirect-binding signature against the provider's metadata certificates.
    async fn verify_redirect_signature(&self, raw_query: &str, is_request: bool) -> Result<(), SignInError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect();
        let sig_alg = pairs.iter().find(|(k, _)| k == "SigAlg").map(|(_, v)| v.as_str());
        if !pairs.iter().any(|(k, _)| k == "Signature") || !sig_alg.is_some_and(|a| SIG_ALGS.contains(&a)) {
            return Err(bad("logout messages must be signed with RSA-SHA256 or ECDSA-SHA256"));
        }
        let trusted = self.trusted().await?;
        let uri = format!("/saml/slo?{raw_query}");
        let verified = trusted.certs.iter().any(|cert| {
            UrlVerifier::from_x509(cert).is_ok_and(|verifier| {
                let result = if is_request {
                    verifier.verify_percent_encoded_request_uri_string(&uri)
                } else {
                    verifier.verify_percent_encoded_response_uri_string(&uri)
                };
                result.unwrap_or(false)
            })
        });
        if verified { Ok(()) } else { Err(bad("the logout message's signature does not verify")) }
    }

    /// Issuer, Destination and IssueInstant of a verified logout message.
    fn check_envelope(&self, root: roxmltree::Node<'_, '_>, now: i64) -> Result<(), SignInError> {
        if child_text(root, SAML2, "Issuer").as_deref() != Some(self.config.issuer.as_str()) {
            return Err(bad("the logout message is from another provider"));
        }
        if root.attribute("Destination").is_some_and(|d| d != self.sp.slo_url) {
            return Err(bad("the logout message is addressed to someone else"));
        }
        let skew = self.config.saml.max_skew_secs;
        match root.attribute("IssueInstant").and_then(parse_utc) {
            Some(t) if t <= now + skew && t >= now - self.config.saml.max_issue_delay_secs - skew => Ok(()),
            _ => Err(bad("the logout message was not issued just now")),
        }
    }

    /// The redirect asking the IdP to end the user's session there, if the IdP supports single
    /// logout and we know the NameID it issued: (URL, our request ID).
    pub async fn logout_request(
        &self,
        identity: &Identity,
        relay_state: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, SignInError> {
        let (Some(location), Some((name_id, format))) =
            (self.slo_location().await?, identity.upstream_name_id.as_ref())
        else {
            return Ok(None);
        };
        let id = format!("_{}", random_token(24));
        let format = format.as_deref().map(|f| format!(r#" Format="{}""#, escape(f))).unwrap_or_default();
        let session = identity
            .upstream_session
            .as_deref()
            .map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(s)))
            .unwrap_or_default();
        let xml = format!(
            r#"<samlp:LogoutRequest xmlns:samlp="{SAML2P}" xmlns:saml="{SAML2}" ID="{id}" Version="2.0" IssueInstant="{}" Destination="{}"><saml:Issuer>{}</saml:Issuer><saml:NameID{format}>{}</saml:NameID>{session}</samlp:LogoutRequest>"#,
            format_utc(now),
            escape(&location),
            escape(&self.sp.entity_id),
            escape(name_id),
        );
        Ok(Some((self.redirect_url(&location, "SAMLRequest", &xml, Some(relay_state))?, id)))
    }

    /// A logout message whose signature verifies, whose root is `{SAML2P}root_name`, and whose
    /// issuer, destination and time are right.
    async fn verified<'m>(
        &self,
        raw_query: &str,
        message: &'m RedirectMessage,
        root_name: &str,
        now: i64,
    ) -> Result<roxmltree::Document<'m>, SignInError> {
        self.verify_redirect_signature(raw_query, message.is_request).await?;
        let doc = roxmltree::Document::parse(&message.xml).map_err(|_| bad("the message is not well-formed XML"))?;
        if !is(doc.root_element(), SAML2P, root_name) {
            return Err(bad(&format!("the message is not a {root_name}")));
        }
        self.check_envelope(doc.root_element(), now)?;
        Ok(doc)
    }

    /// Verifies the IdP's logout request (signature required; each acted on once) and says what
    /// it ends.
    pub async fn accept_logout_request(
        &self,
        raw_query: &str,
        message: &RedirectMessage,
        replays: &dyn EphemeralStore,
        now: i64,
    ) -> Result<LogoutAsk, SignInError> {
        let doc = self.verified(raw_query, message, "LogoutRequest", now).await?;
        let root = doc.root_element();
        let skew = self.config.saml.max_skew_secs;
        if root.attribute("NotOnOrAfter").and_then(parse_utc).is_some_and(|t| t <= now - skew) {
            return Err(bad("the logout request has expired"));
        }
        let name_id = child_text(root, SAML2, "NameID")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the logout request names no user"))?;
        let session_indexes =
            children(root, SAML2P, "SessionIndex").filter_map(|n| n.text().map(|t| t.trim().to_owned())).collect();
        let request_id =
            root.attribute("ID").filter(|id| !id.is_empty()).ok_or_else(|| bad("the logout request has no ID"))?;
        // kept as long as the request could pass the time check above
        let ttl = Duration::from_secs(u64::try_from(self.config.saml.max_issue_delay_secs + 2 * skew).unwrap_or(900));
        let seen = format!("{}:{request_id}", self.config.id);
        if !SAML_LOGOUT_REQUESTS.first_use(replays, &seen, ttl).await.map_err(SignInError::upstream)? {
            return Err(bad("this logout request was already used"));
        }
        Ok(LogoutAsk { request_id: request_id.to_owned(), name_id, session_indexes })
    }

    /// Our answer to the IdP's logout request, as a redirect to its logout service.
    pub async fn logout_response(
        &self,
        in_response_to: &str,
        relay_state: Option<&str>,
        success: bool,
        now: i64,
    ) -> Result<Option<String>, SignInError> {
        let Some(location) = self.slo_location().await? else { return Ok(None) };
        let status = if success { SAML2_SUCCESS } else { "urn:oasis:names:tc:SAML:2.0:status:Responder" };
        let xml = format!(
            r#"<samlp:LogoutResponse xmlns:samlp="{SAML2P}" xmlns:saml="{SAML2}" ID="_{}" Version="2.0" IssueInstant="{}" Destination="{}" InResponseTo="{}"><saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status></samlp:LogoutResponse>"#,
            random_token(24),
            format_utc(now),
            escape(&location),
            escape(in_response_to),
            escape(&self.sp.entity_id),
        );
        self.redirect_url(&location, "SAMLResponse", &xml, relay_state).map(Some)
    }

    /// Verifies the IdP's answer to our logout request `request_id`; true when it signed the
    /// user out there too.
    pub async fn accept_logout_response(
        &self,
        raw_query: &str,
        message: &RedirectMessage,
        request_id: &str,
        now: i64,
    ) -> Result<bool, SignInError> {
        let doc = self.verified(raw_query, message, "LogoutResponse", now).await?;
        let root = doc.root_element();
        if root.attribute("InResponseTo") != Some(request_id) {
            return Err(bad("the logout response answers another request"));
        }
        let code = child(root, SAML2P, "Status")
            .and_then(|s| child(s, SAML2P, "StatusCode"))
            .and_then(|c| c.attribute("Value"));
        Ok(code == Some(SAML2_SUCCESS))
    }
}
