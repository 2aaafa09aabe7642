//! A real node-oidc-provider (tests/idp/oidc-idp.mjs) as the upstream provider: plain OIDC,
//! CIS2-shaped or NHS login-shaped. Started per test on a free loopback port, stopped on drop.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct NodeIdp {
    pub issuer: String,
    /// `http://127.0.0.1:P` (the test routes live at the server root).
    pub root: String,
    child: Child,
}

impl Drop for NodeIdp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl NodeIdp {
    /// Starts `profile` for client `client_id` with `redirect_uri`; `auth` is either
    /// `--client-secret S` or `--client-jwks FILE`.
    pub async fn start(
        profile: &str,
        client_id: &str,
        redirect_uri: &str,
        auth: (&str, &str),
        backchannel: Option<&str>,
    ) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/idp");
        assert!(
            std::path::Path::new(&format!("{dir}/node_modules/oidc-provider")).exists(),
            "tests/idp/node_modules is missing: run the suite with scripts/test.sh (it runs npm ci there)"
        );
        let mut command = Command::new("node");
        command
            .arg(format!("{dir}/oidc-idp.mjs"))
            .args([
                "--port",
                "0",
                "--profile",
                profile,
                "--client-id",
                client_id,
                "--redirect-uri",
                redirect_uri,
                auth.0,
                auth.1,
            ])
            .env("NODE_ENV", "production")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(uri) = backchannel {
            command.args(["--backchannel-logout-uri", uri]);
        }
        let mut child = command.spawn().expect("node runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the IdP started in time")
            .expect("read")
            .expect("a listening line");
        let issuer = line.strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
        let url = url::Url::parse(&issuer).expect("issuer URL");
        let root = format!("http://{}:{}", url.host_str().unwrap_or_default(), url.port().unwrap_or(80));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { issuer, root, child }
    }

    /// Cookies of a signed-in session (with a grant) at the provider.
    pub async fn session_cookie(&self) -> String {
        let response =
            reqwest::Client::new().post(format!("{}/test/session", self.root)).send().await.expect("session");
        assert_eq!(response.status().as_u16(), 204);
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.split(';').next())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Ends the account's session at the provider, which sends a back-channel logout.
    pub async fn logout(&self) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}/test/logout", self.root))
            .send()
            .await
            .expect("logout")
            .json()
            .await
            .expect("json")
    }
}
