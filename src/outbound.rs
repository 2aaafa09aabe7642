//! Outbound HTTP: every call carebroker makes to another service (JWKS, identity providers, PDS,
//! the Spine Security Broker) follows no redirects, has a timeout and names itself.

use std::time::Duration;

/// A client builder with carebroker's outbound rules; add roots or options, then `build()`.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("carebroker/", env!("CARGO_PKG_VERSION")))
}
