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
use wharf_core::Result;

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
    /// The profile of the shared AWS configuration files to read, instead of
    /// `AWS_PROFILE` or `default`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Whether FIFO queues that wharf creates derive deduplication ids from the message
    /// body (SQS's `ContentBasedDeduplication`). Off by default: wharf then makes a
    /// unique id for every message without one, so equal messages are all delivered.
    #[serde(default)]
    pub content_based_deduplication: bool,
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

    /// Reads the profile `profile` of the shared AWS configuration files.
    #[must_use]
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Makes the FIFO queues wharf creates derive deduplication ids from the body.
    #[must_use]
    pub fn content_based_deduplication(mut self, on: bool) -> Self {
        self.content_based_deduplication = on;
        self
    }

    /// Reads a configuration from an `sqs://` URL; the crate documentation's `# URL`
    /// section lists the options.
    ///
    /// ```
    /// use wharf_sqs::SqsConfig;
    ///
    /// let config = SqsConfig::from_url("sqs://test:s3cret@127.0.0.1:4566?region=us-east-1")?;
    /// assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// # Ok::<(), wharf_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Config`](wharf_core::ErrorKind::Config) for another scheme, a malformed URL, an unknown
    /// option (naming it and listing the accepted ones), a value an option does not
    /// accept (naming the option and what it takes), an endpoint given twice, or half
    /// a key pair. No error repeats the secret key.
    pub fn from_url(url: &str) -> Result<Self> {
        crate::url_config::parse(url)
    }

    /// Loads the AWS configuration: this one's settings over the standard chain.
    pub async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
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

/// Hand-written so the secret key never reaches a log.
impl fmt::Debug for SqsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .field("profile", &self.profile)
            .field(
                "content_based_deduplication",
                &self.content_based_deduplication,
            )
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
