//! [`SqsConfig`]: where SQS is and who is calling it.
//!
//! By default everything comes from the standard AWS chain (environment variables,
//! shared config and credentials files, SSO, web identity, container and instance
//! metadata), exactly as the AWS CLI finds it. The endpoint, the region and static
//! credentials can be set for LocalStack and other emulators.

use std::fmt;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::config::{Credentials, Region};
use serde::Deserialize;
use wharf_core::{Error, ErrorKind, Result};

/// How to reach SQS. Every field is optional: unset ones come from the standard AWS
/// configuration chain.
///
/// ```
/// use wharf_sqs::SqsConfig;
///
/// let local = SqsConfig::new()
///     .endpoint("http://127.0.0.1:4566")
///     .region("us-east-1")
///     .static_credentials("test", "test");
/// assert!(!format!("{local:?}").contains("secret_access_key: \"test\""));
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// An endpoint replacing AWS's, such as LocalStack's `http://127.0.0.1:4566`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The AWS region, such as `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Fixed credentials instead of the credential chain; meant for emulators.
    #[serde(default)]
    pub credentials: Option<StaticCredentials>,
}

/// An access key pair, for emulators that accept any key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key; never logged.
    pub secret_access_key: String,
}

impl SqsConfig {
    /// A configuration taking everything from the standard AWS chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends requests to `endpoint` instead of AWS.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Uses `region`.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Signs requests with a fixed key pair instead of the credential chain.
    #[must_use]
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        });
        self
    }

    /// Reads a configuration from a URL:
    ///
    /// - `sqs://` or `sqs://aws?region=eu-west-1`: AWS itself, with the standard chain;
    /// - `sqs://HOST:PORT?region=us-east-1`: an emulator at `http://HOST:PORT`
    ///   (`&tls=true` for `https`); `sqs://KEY:SECRET@HOST:PORT` adds static credentials.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a malformed URL or an unknown query parameter;
    /// the message never repeats the secret.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| config_error(format!("the SQS URL is malformed: {e}")))?;
        if parsed.scheme() != "sqs" {
            return Err(config_error(format!(
                "an SQS URL starts with sqs://, not {}://",
                parsed.scheme()
            )));
        }

        let mut config = Self::new();
        let mut tls = false;
        for (key, value) in parsed.query_pairs() {
            match &*key {
                "region" => config.region = Some(value.into_owned()),
                "tls" => tls = value == "true",
                other => {
                    return Err(config_error(format!(
                        "unknown SQS URL parameter `{other}`; known: region, tls"
                    )));
                }
            }
        }
        config.apply_host(&parsed, tls);
        Ok(config)
    }

    fn apply_host(&mut self, parsed: &url::Url, tls: bool) {
        let host = parsed.host_str().unwrap_or_default();
        if host.is_empty() || host == "aws" {
            return;
        }

        let scheme = if tls { "https" } else { "http" };
        self.endpoint = Some(match parsed.port() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        });
        if !parsed.username().is_empty() {
            self.credentials = Some(StaticCredentials {
                access_key_id: decoded(parsed.username()),
                secret_access_key: decoded(parsed.password().unwrap_or_default()),
            });
        }
    }

    /// Loads the AWS configuration: this one's settings over the standard chain.
    pub async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(credentials) = &self.credentials {
            loader = loader.credentials_provider(Credentials::new(
                &credentials.access_key_id,
                &credentials.secret_access_key,
                None,
                None,
                "wharf-static",
            ));
        }
        loader.load().await
    }
}

fn decoded(text: &str) -> String {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| if v.is_empty() { k } else { v })
        .next()
        .map(|t| t.into_owned())
        .unwrap_or_default()
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// Hand-written so the secret key never reaches a log.
impl fmt::Debug for SqsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Hand-written so the secret key never reaches a log.
impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"****")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_url_sets_endpoint_region_and_credentials() {
        let config =
            SqsConfig::from_url("sqs://test:s3cret@127.0.0.1:4566?region=us-east-1").unwrap();

        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(config.region.as_deref(), Some("us-east-1"));
        let credentials = config.credentials.as_ref().unwrap();
        assert_eq!(credentials.secret_access_key, "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_bare_url_means_aws_and_the_standard_chain() {
        let config = SqsConfig::from_url("sqs://aws?region=eu-west-1").unwrap();

        assert_eq!(config.endpoint, None);
        assert!(config.credentials.is_none());
        assert_eq!(config.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn unknown_url_parameters_are_refused() {
        let error = SqsConfig::from_url("sqs://aws?regoin=eu-west-1").unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("regoin"), "{error}");
    }
}
