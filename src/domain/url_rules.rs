//! Rules for URLs a client or operator registers: absolute, no fragment, and plain `http://` only
//! for loopback hosts (RFC 8252 §7.3, OAuth 2.0 Security BCP §4.1).

use std::net::IpAddr;

use url::{Host, Url};

/// True for `localhost`, 127.0.0.0/8 and `::1`.
pub fn is_loopback_host(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// An absolute `https://` URL, or `http://` on a loopback host; no fragment.
pub fn check_https_or_loopback(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not an absolute URL ({e})"))?;
    if url.fragment().is_some() {
        return Err(format!("`{text}` must not have a fragment"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback_host(url.host()) => Ok(url),
        "http" => Err(format!("`{text}` uses plain http on a host that is not loopback; use https")),
        _ => Err(format!("`{text}` must be an https URL")),
    }
}

/// A redirect URI: as [`check_https_or_loopback`], or a private-use scheme in reverse-domain form
/// for native apps (RFC 8252 §7.1, e.g. `uk.nhs.app:/callback`).
pub fn check_redirect_uri(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not an absolute URL ({e})"))?;
    if url.fragment().is_some() {
        return Err(format!("`{text}` must not have a fragment"));
    }
    match url.scheme() {
        "https" | "http" => check_https_or_loopback(text),
        scheme if scheme.contains('.') => Ok(url),
        _ => Err(format!("`{text}` must be https, http on loopback, or a reverse-domain app scheme")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_on_loopback() {
        assert!(check_https_or_loopback("http://127.0.0.1:8080/cb").is_ok());
        assert!(check_https_or_loopback("http://localhost/cb").is_ok());
        assert!(check_https_or_loopback("http://[::1]:9/cb").is_ok());
        assert!(check_https_or_loopback("http://10.0.0.1/cb").is_err());
        assert!(check_https_or_loopback("http://example.org/cb").is_err());
        assert!(check_https_or_loopback("https://example.org/cb#frag").is_err());
        assert!(check_https_or_loopback("/relative").is_err());
        assert!(check_https_or_loopback("ftp://example.org/").is_err());
    }

    #[test]
    fn native_app_schemes_need_a_dot() {
        assert!(check_redirect_uri("uk.nhs.example:/callback").is_ok());
        assert!(check_redirect_uri("myapp:/callback").is_err());
    }
}
