//! `voxplane mis`: the recorder process (driver and files in `mis::server`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Arguments of `voxplane mis`.
#[derive(clap::Args, Debug)]
pub struct MisArgs {
    /// Journals, recordings and the index go here.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address the metadata (TCP) and media (UDP) listeners bind.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    listen: IpAddr,
    /// Metadata port (TCP).
    #[arg(long, default_value_t = 1040)]
    control_port: u16,
    /// Media port (UDP).
    #[arg(long, default_value_t = 5400)]
    media_port: u16,
    /// Search API address (HTTP). Requests need a token signed with
    /// DATA_DIR/secret (`voxplane token create --data-dir DIR …`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8088")]
    http: SocketAddr,
    /// Delete local recordings whose call ended more than this many days
    /// ago (with S3: only once uploaded; the index entry stays).
    #[arg(long, value_name = "DAYS")]
    retain_days: Option<u64>,
    /// Keep the local recordings under this many MiB, deleting the oldest
    /// (with S3: only uploaded ones).
    #[arg(long, value_name = "MIB")]
    retain_max_mib: Option<u64>,
    /// Serve the API without tokens (only for an API bound to loopback).
    #[arg(long)]
    no_auth: bool,
    /// Journal fsync period, ms.
    #[arg(long, default_value_t = 20)]
    fsync_ms: u64,
    /// A session without input for this long is finished from what arrived, s.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    /// S3-compatible endpoint to offload recordings to (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "URL", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// Bucket for the offload.
    #[arg(long, value_name = "B", requires = "s3_endpoint")]
    s3_bucket: Option<String>,
    /// Key prefix in the bucket.
    #[arg(long, default_value = "recordings/")]
    s3_prefix: String,
}

/// Runs the recorder until killed.
pub fn run(args: &MisArgs) -> anyhow::Result<()> {
    let config = mis::server::Config {
        data_dir: args.data_dir.clone(),
        control: SocketAddr::new(args.listen, args.control_port),
        media: SocketAddr::new(args.listen, args.media_port),
        http: args.http,
        fsync_interval: Duration::from_millis(args.fsync_ms.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        s3: match (&args.s3_endpoint, &args.s3_bucket) {
            (Some(endpoint), Some(bucket)) => Some(mis::server::S3Config {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                prefix: args.s3_prefix.clone(),
            }),
            _ => None,
        },
        retry: mis::offload::RetryConfig::default(),
        retention: mis::retention::Policy {
            max_age_ns: args
                .retain_days
                .map(|d| d.saturating_mul(86_400).saturating_mul(1_000_000_000)),
            max_bytes: args.retain_max_mib.map(|m| m.saturating_mul(1 << 20)),
        },
        retention_interval: Duration::from_secs(10),
        auth: if args.no_auth {
            None
        } else {
            Some(crate::nqs_cmd::keyring(&args.data_dir)?)
        },
    };
    mis::server::run_blocking(config, |b| {
        println!(
            "mis ready control={} media={} http={}",
            b.control, b.media, b.http
        );
    })
    .with_context(|| format!("recorder on {}", args.data_dir.display()))
}
