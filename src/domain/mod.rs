//! Plain data with no I/O: the scope grammar, clients, JWKs, NHS numbers and URL rules.

pub mod audit;
pub mod client;
pub mod identity;
pub mod jwk;
pub mod launch;
pub mod markup;
pub mod merkle;
pub mod nhs_number;
pub mod pkce;
pub mod scope;
pub mod secret;
pub mod url_rules;
pub mod xml_time;
