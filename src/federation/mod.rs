//! Upstream identity. For now the built-in development identity provider; CIS2, NHS login, OIDC
//! and SAML providers join behind the same `Identity` result.

pub mod dev;
