//! Debian's SimpleSAMLphp as a real SAML IdP (tests/saml-idp: users carer/carer-pass and
//! manager/manager-pass), served by PHP's built-in server on a free loopback port for one test.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct SimpleSaml {
    /// `http://127.0.0.1:P`.
    pub url: String,
    child: Child,
    _state: tempfile::TempDir,
}

impl Drop for SimpleSaml {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl SimpleSaml {
    /// Its entity ID (and metadata URL).
    pub fn entity_id(&self) -> String {
        format!("{}/saml2/idp/metadata.php", self.url)
    }

    /// Starts the IdP for the service provider at `broker`; returns once its metadata is served.
    pub async fn start(broker: &str) -> Self {
        let port = super::free_port();
        let state = tempfile::tempdir().expect("state dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/saml-idp/serve.sh");
        let child = Command::new(script)
            .args([&port.to_string(), broker, state.path().to_str().expect("utf-8 path")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("SimpleSAMLphp starts (scripts/install-deps.sh test installs it)");
        let idp = Self { url: format!("http://127.0.0.1:{port}"), child, _state: state };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = http.get(idp.entity_id()).send().await {
                if r.status().is_success() && r.text().await.is_ok_and(|t| t.contains("EntityDescriptor")) {
                    return idp;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("SimpleSAMLphp did not serve its metadata at {}", idp.entity_id());
    }
}
