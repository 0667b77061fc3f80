//! Requests only `strongroom preflight` makes: the bucket's default retention, the server's
//! clock, and a delete without version id of the preflight's own probe object, which tells a
//! role that may delete (the delete leaves a delete marker) from one that may not
//! (AccessDenied). Object Lock would refuse a delete of a locked *version* whatever the role
//! may do, so only a delete without version id tells the two apart. Nothing else in the agent
//! deletes, and nothing here deletes data: a delete marker hides nothing but the probe.

use aws_sdk_s3::error::SdkError;
use time::OffsetDateTime;

use super::s3::{S3Store, map_error};
use super::{ObjectStore, StoreResult};

/// The bucket's default retention rule, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRetention {
    pub mode: String,
    pub days: Option<i32>,
    pub years: Option<i32>,
}

impl DefaultRetention {
    /// The period in days (a year counts 365).
    pub fn period_days(&self) -> i64 {
        i64::from(self.days.unwrap_or(0)) + 365 * i64::from(self.years.unwrap_or(0))
    }
}

impl S3Store {
    /// The default retention of the bucket's Object Lock configuration, `None` without one.
    pub async fn default_retention(&self) -> StoreResult<Option<DefaultRetention>> {
        let out = self
            .client()
            .get_object_lock_configuration()
            .bucket(self.bucket())
            .send()
            .await
            .map_err(|e| map_error("GetObjectLockConfiguration", self.target(""), e))?;
        Ok(out
            .object_lock_configuration()
            .and_then(|c| c.rule())
            .and_then(|r| r.default_retention())
            .map(|d| DefaultRetention {
                mode: d.mode().map(|m| m.as_str().to_owned()).unwrap_or_default(),
                days: d.days(),
                years: d.years(),
            }))
    }

    /// The server's `Date`, read from the answer to a HEAD of `absent_key` (a key that does
    /// not exist: the 404, or a 403, still carries the header).
    pub async fn server_date(&self, absent_key: &str) -> Result<OffsetDateTime, String> {
        let answer = self
            .client()
            .head_object()
            .bucket(self.bucket())
            .key(absent_key)
            .send()
            .await;
        let date = match &answer {
            Ok(_) => return Err(format!("{} unexpectedly exists", self.target(absent_key))),
            Err(SdkError::ServiceError(ctx)) => ctx.raw().headers().get("date").map(str::to_owned),
            Err(e) => return Err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()),
        };
        let date = date.ok_or("the server's answer has no Date header")?;
        let at = httpdate::parse_http_date(&date)
            .map_err(|e| format!("the server's Date header {date:?} is not an HTTP date: {e}"))?;
        Ok(OffsetDateTime::from(at))
    }

    /// DeleteObject without version id: on a versioned bucket, where permitted, this only adds
    /// a delete marker. For the preflight's probe object only.
    pub async fn probe_delete(&self, key: &str) -> StoreResult<()> {
        self.client()
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_error("DeleteObject", self.target(key), e))
    }
}
