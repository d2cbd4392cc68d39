//! The S3 offload retry queue: shared with NQS, it lives in
//! [`nqs::offload`] (see there for the driving contract).

pub use nqs::offload::{RetryConfig, RetryQueue};
