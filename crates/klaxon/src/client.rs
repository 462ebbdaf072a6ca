//! A client for a running Klaxon's API, for the CLI's operator commands (`klaxon status`,
//! `channels`, `test`, `dead-letters`): the CLI does what the dashboard does, through the same
//! API, so there is one implementation of each action.

use std::time::Duration;

use klaxon_core::config::Config;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no Klaxon answering at {0} (is `klaxon serve` running with this configuration?)")]
    Unreachable(String),
    /// The API's own `{"error": {"message"}}`, or the status when it gave none.
    #[error("{0}")]
    Api(String),
}

pub struct Remote {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Remote {
    /// The server a configuration describes: its listen address (a wildcard is reached on
    /// loopback) and its API token.
    pub fn for_config(config: &Config) -> Self {
        let listen = config
            .server
            .listen
            .replace("0.0.0.0", "127.0.0.1")
            .replace("[::]", "[::1]");
        Remote {
            base: format!("http://{listen}"),
            token: config
                .server
                .api_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            path,
            Some(Value::Object(Default::default())),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        // A test send waits for the provider: allow its timeout and then some.
        let mut req = self
            .http
            .request(method, &url)
            .timeout(Duration::from_secs(60));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|_| ClientError::Unreachable(self.base.clone()))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            Err(ClientError::Api(
                v["error"]["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("HTTP {status}")),
            ))
        }
    }
}
